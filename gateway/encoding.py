"""The encoders' batching: one dynamic batcher per loaded encoder (made on its first request),
the threads batches run on, and live batching changes from the management API.

Batches of local models share one pool of ``model_workers`` threads; a runtime that declares
``io_threads`` (a remote one) gets a pool of its own, so a slow or gone remote never holds the
threads local models run on. A live change made before a model's batcher exists is kept for that
loaded instance, and the batcher starts with it; everything of a model goes when it unloads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gateway.batcher import BatchSettings, DynamicBatcher
from gateway.errors import Unavailable
from gateway.metrics import Metrics
from gateway.models.registry import LoadedModel
from runtimes.base import EncoderRuntime, RuntimeUnavailable, ThreadSettings, TokenRow, pad_rows

LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024)  # token-length buckets for batching

# a row is a tokenized text and its request's deadline (the batch carries the latest of them)
EncoderBatcher = DynamicBatcher[tuple[TokenRow, float], np.ndarray]


class EncoderBatchers:
    def __init__(self, threads: ThreadSettings, metrics: Metrics) -> None:
        self._threads = threads
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(threads.model_workers, thread_name_prefix="model")
        self._batchers: dict[str, tuple[LoadedModel, EncoderBatcher]] = {}
        self._live: dict[str, tuple[LoadedModel, BatchSettings]] = {}
        self._own_pools: dict[str, ThreadPoolExecutor] = {}  # I/O-bound models' (Runtime.io_threads)

    def settings(self, model: LoadedModel) -> BatchSettings:
        """What the model's batcher runs with (or will start with)."""
        entry = self._batchers.get(model.model_id)
        if entry is not None and entry[0] is model:
            return entry[1].settings
        live = self._live.get(model.model_id)
        if live is not None and live[0] is model:
            return live[1]
        return batch_settings(model)

    def update(self, model: LoadedModel, settings: BatchSettings) -> None:
        entry = self._batchers.get(model.model_id)
        if entry is not None and entry[0] is model:
            entry[1].update(settings)
        else:  # no batcher yet: the one made for this loaded instance starts with it
            self._live[model.model_id] = (model, settings)

    def batcher(self, model: LoadedModel, encoder: EncoderRuntime) -> EncoderBatcher:
        entry = self._batchers.get(model.model_id)
        if entry is not None and entry[0] is model:
            return entry[1]

        def run(rows: list[tuple[TokenRow, float]]) -> list[np.ndarray]:
            batch = pad_rows([row for row, _ in rows], encoder.pad_id, max(d for _, d in rows))
            try:
                return list(encoder.run_batch(batch))
            except RuntimeUnavailable as exc:  # the whole batch: the batcher does not retry row by row
                raise Unavailable(
                    f"model {model.model_id!r} is unavailable: {exc}", retry_after_s=1.0
                ) from None

        executor, workers = self._executor, self._threads.model_workers
        if encoder.io_threads:  # a slow or gone remote must not hold the threads local models run on
            workers = encoder.io_threads
            executor = ThreadPoolExecutor(workers, thread_name_prefix=f"io-{model.model_id}"[:15])
            self._own_pools[model.model_id] = executor
        settings = self.settings(model)
        batcher: EncoderBatcher = DynamicBatcher(
            model.model_id, run, settings, executor, self._metrics, max_running=workers
        )
        self._batchers[model.model_id] = (model, batcher)
        self._live.pop(model.model_id, None)
        return batcher

    async def release(self, model: LoadedModel, reason: str) -> None:
        """The model unloads: its batcher closes (waiting rows end UNAVAILABLE), its threads go."""
        live = self._live.get(model.model_id)
        if live is not None and live[0] is model:
            del self._live[model.model_id]
        entry = self._batchers.get(model.model_id)
        if entry is not None and entry[0] is model:
            del self._batchers[model.model_id]
            await entry[1].close(reason)
            pool = self._own_pools.pop(model.model_id, None)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        for _, batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        for pool in (self._executor, *self._own_pools.values()):
            pool.shutdown(wait=False, cancel_futures=True)
        self._own_pools.clear()


def bucket(tokens: int) -> int:
    return next((edge for edge in LENGTH_BUCKETS if tokens <= edge), tokens)


def batch_settings(model: LoadedModel) -> BatchSettings:
    values = model.manifest.settings.get("batching", {})
    return BatchSettings.from_mapping(values if isinstance(values, dict) else {})


def truncation(truncate: int | None, max_tokens: int) -> int | None:
    """Caikit's truncate_input_tokens: 0/unset refuses over-long input, <0 or >max truncates
    to the model's limit, 1..max truncates there (at least 2: the special tokens)."""
    if not truncate:
        return None
    if truncate < 0 or truncate > max_tokens:
        return max_tokens
    return max(truncate, 2)
