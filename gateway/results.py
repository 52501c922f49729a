"""Protocol-neutral task results; the frontends turn them into protobuf or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway import __version__


@dataclass(frozen=True)
class Producer:
    name: str
    version: str


# the producer named in generation results (Caikit's GeneratedTextResult.producer_id)
GENERATION_PRODUCER = Producer(name="taskgate causal-lm", version=__version__)


@dataclass(frozen=True)
class EmbeddingOutput:
    vectors: list[np.ndarray]  # one float32 vector per input, in input order
    input_token_count: int
    producer: Producer


@dataclass(frozen=True)
class SimilarityOutput:
    scores: list[list[float]]  # one list of scores per source sentence
    input_token_count: int
    producer: Producer


@dataclass(frozen=True)
class RerankScore:
    index: int
    score: float
    text: str | None
    document: dict[str, Any] | None


@dataclass(frozen=True)
class RerankOutput:
    queries: list[str | None]  # None where return_query is false
    scores: list[list[RerankScore]]  # per query, best first
    input_token_count: int
    producer: Producer


@dataclass(frozen=True)
class TokenOutput:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class TokenizationOutput:
    tokens: list[TokenOutput]
    token_count: int


@dataclass(frozen=True)
class ClassificationOutput:
    labels: list[tuple[str, float]]  # (label, score), best first
    producer: Producer
