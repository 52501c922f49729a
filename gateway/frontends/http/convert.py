"""Task results (gateway.results) -> Caikit's JSON shapes. Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.generation.results import GeneratedToken, GenerationOutput, StreamChunk
from gateway.results import (
    ClassificationOutput,
    EmbeddingOutput,
    Producer,
    RerankOutput,
    SimilarityOutput,
    TokenizationOutput,
)

Json = dict[str, Any]


def producer(value: Producer) -> Json:
    return {"name": value.name, "version": value.version}


def _vector(values: np.ndarray) -> Json:
    return {"data": {"values": values.tolist()}}


def embedding(out: EmbeddingOutput) -> Json:
    return {
        "result": _vector(out.vectors[0]),
        "producer_id": producer(out.producer),
        "input_token_count": out.input_token_count,
    }


def embeddings(out: EmbeddingOutput) -> Json:
    return {
        "results": {"vectors": [_vector(v) for v in out.vectors]},
        "producer_id": producer(out.producer),
        "input_token_count": out.input_token_count,
    }


def similarity(out: SimilarityOutput) -> Json:
    return {
        "result": {"scores": out.scores[0]},
        "producer_id": producer(out.producer),
        "input_token_count": out.input_token_count,
    }


def similarities(out: SimilarityOutput) -> Json:
    return {
        "results": [{"scores": row} for row in out.scores],
        "producer_id": producer(out.producer),
        "input_token_count": out.input_token_count,
    }


def _rerank_scores(out: RerankOutput, row: int) -> Json:
    return {
        "query": out.queries[row],
        "scores": [
            {"document": s.document, "index": s.index, "score": s.score, "text": s.text}
            for s in out.scores[row]
        ],
    }


def rerank(out: RerankOutput) -> Json:
    return {
        "result": _rerank_scores(out, 0),
        "producer_id": producer(out.producer),
        "input_token_count": out.input_token_count,
    }


def reranks(out: RerankOutput) -> Json:
    return {
        "results": [_rerank_scores(out, row) for row in range(len(out.scores))],
        "producer_id": producer(out.producer),
        "input_token_count": out.input_token_count,
    }


def tokenization(out: TokenizationOutput) -> Json:
    return {
        "results": [{"start": t.start, "end": t.end, "text": t.text} for t in out.tokens],
        "token_count": out.token_count,
    }


def classification(out: ClassificationOutput) -> Json:
    return {"results": [{"label": label, "score": score} for label, score in out.labels]}


def _tokens(tokens: tuple[GeneratedToken, ...]) -> list[Json]:
    return [{"text": t.text, "logprob": t.logprob, "rank": t.rank} for t in tokens]


def generated_text(out: GenerationOutput, producer_id: Producer) -> Json:
    return {
        "generated_text": out.generated_text,
        "generated_tokens": out.generated_tokens,
        "finish_reason": out.finish_reason.name,
        "producer_id": producer(producer_id),
        "input_token_count": out.input_token_count,
        "seed": out.seed,
        "tokens": _tokens(out.tokens),
        "input_tokens": _tokens(out.input_tokens),
    }


def stream_chunk(chunk: StreamChunk, producer_id: Producer) -> Json:
    details = chunk.details
    return {
        "generated_text": chunk.generated_text,
        "tokens": _tokens(chunk.tokens),
        "details": {
            "finish_reason": details.finish_reason.name,
            "generated_tokens": details.generated_tokens,
            "seed": details.seed,
            "input_token_count": details.input_token_count,
        },
        "producer_id": producer(producer_id),
        "input_tokens": _tokens(chunk.input_tokens),
    }
