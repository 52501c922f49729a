"""The runtime interface: load, size in bytes, run a batch, unload.

A runtime owns one model's weights and its execution engine. It is synchronous and
thread-safe for ``run_batch``; the gateway calls it from worker threads, never on the event
loop. Engines implement the abstract methods; nothing here imports a heavy library.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

BatchT = TypeVar("BatchT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True)
class ThreadSettings:
    """Thread counts for model execution; workers x intra-op threads should not exceed the cores."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    model_workers: int = 2
    # intra-op threads of a generator's step (onnx-genai-causal-lm); 0: intra_op_threads x
    # model_workers, the cores the model pool may use at once. A generator steps one batch at a
    # time on one worker, so with 1 thread a generation-only load left a core idle.
    generation_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads", "model_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.generation_threads < 0:
            raise ValueError(f"generation_threads must be 0 or more, got {self.generation_threads}")

    def for_generation(self) -> int:
        """The intra-op threads of a generator's step (by default at most the CPUs)."""
        if self.generation_threads:
            return self.generation_threads
        return max(1, min(self.intra_op_threads * self.model_workers, os.cpu_count() or 1))


class RuntimeUnavailable(RuntimeError):
    """What a runtime raises when its backend cannot answer now (a remote server refused the
    connection, timed out, failed with a 5xx or sent a malformed answer). The message is the
    reason, written for clients (no secrets): the gateway answers UNAVAILABLE with it, for the
    whole batch (running its rows one by one would only repeat the failure)."""


class Runtime(abc.ABC, Generic[BatchT, OutputT]):
    # Threads of its own for a runtime that mostly waits on I/O (a remote server): the gateway
    # runs this model's batches on a pool of this many threads, not on the pool shared by local
    # models, so a slow or gone remote never holds their threads. 0: the shared pool.
    io_threads: int = 0

    @abc.abstractmethod
    def load(self) -> None:
        """Bring the model into memory (may build or fetch artefacts first)."""

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Memory the loaded model holds, in bytes (an estimate before ``load``)."""

    @abc.abstractmethod
    def run_batch(self, batch: BatchT) -> OutputT:
        """Run one batch; the output has one row per input row, in order."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Release the model; ``load`` may be called again afterwards."""

    def warmup(self) -> None:  # an optional hook; runtimes override it
        """Exercise the loaded model once so the first request does not pay for lazy set-up."""


@dataclass(frozen=True)
class TokenRow:
    """One tokenized text, unpadded (special tokens included)."""

    ids: tuple[int, ...]
    type_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)


def pad_rows(rows: list[TokenRow], pad_id: int = 0, deadline: float | None = None) -> TokenizedBatch:
    """Right-pad rows to the longest one, with the attention mask marking real tokens."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row.ids
        types[index, : len(row)] = row.type_ids
        mask[index, : len(row)] = 1
    return TokenizedBatch(ids, mask, types, tuple(len(row) for row in rows), deadline)


@dataclass(frozen=True)
class TokenizedBatch:
    """Encoder inputs for a batch of texts, padded to the longest row."""

    input_ids: np.ndarray  # int64 [rows, tokens]
    attention_mask: np.ndarray  # int64 [rows, tokens]
    token_type_ids: np.ndarray  # int64 [rows, tokens]
    token_counts: tuple[int, ...]  # real (unpadded) tokens of each row
    # time.monotonic() seconds by which the batch must be answered: the latest deadline of its
    # rows (a row whose own deadline passes first is answered DeadlineExceeded by the batcher).
    # A runtime that waits on I/O bounds its call by it; local engines ignore it. None: no bound.
    deadline: float | None = None

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


class EncoderRuntime(Runtime[TokenizedBatch, np.ndarray]):
    """An encoder: texts in, one vector per text out (pooled embedding or class logits)."""

    head: str  # "embedding" or "classification"
    labels: tuple[str, ...]  # class labels, empty for an embedding head
    max_tokens: int  # longest sequence the model accepts, special tokens included
    # the tensors run_batch reads: input_ids and attention_mask, and token_type_ids when the
    # model uses them (known once loaded)
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")

    @abc.abstractmethod
    def tokenize_rows(self, texts: list[str], truncate_to: int | None) -> list[TokenRow | ValueError]:
        """Tokenize each text; a text over the limit with ``truncate_to`` None gets a ValueError
        in its place (one bad row fails that row, not the others)."""

    def tokenizer_ready(self, truncate_to: int | None) -> bool:
        """Whether tokenizing at this limit is cheap now (no tokenizer to build first)."""
        return True

    def tokenize(self, texts: list[str], truncate_to: int | None) -> TokenizedBatch:
        """Tokenize and pad a batch; raises the first row's error, if any."""
        rows = self.tokenize_rows(texts, truncate_to)
        for row in rows:
            if isinstance(row, ValueError):
                raise row
        return pad_rows([row for row in rows if isinstance(row, TokenRow)], self.pad_id)

    pad_id: int = 0

    def warmup(self) -> None:
        self.run_batch(self.tokenize(["warm-up"], None))

    @abc.abstractmethod
    def tokens(self, text: str) -> list[Token]:
        """The tokens of one text with character offsets, special tokens left out."""
