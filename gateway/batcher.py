"""DynamicBatcher: one per loaded model; concurrent requests become model batches.

    batcher = DynamicBatcher("model-a", run, BatchSettings(), executor, metrics, max_running=2)
    outputs = await batcher.submit([(row, bucket_key), ...], deadline)

- Rows wait in per-bucket FIFO queues (e.g. token-length buckets), so short rows are not
  padded to long ones. A batch takes up to ``max_batch_size`` rows of one bucket: the bucket
  whose head row has the earliest deadline.
- Batches are dispatched as soon as a run slot is free (``max_running`` concurrent runs); while
  slots are busy, rows accumulate, so batch size grows with load. ``max_queue_delay_ms`` > 0
  additionally holds a partial batch that long for more rows.
- The queue is bounded in rows: a request that does not fit is refused at once with
  ``Overloaded`` (all of its rows or none are queued). Memory never grows with offered load.
- A row whose deadline cannot be met (now + recent batch time) is answered ``DeadlineExceeded``
  before it uses the model; a row whose caller went away (cancelled future) is dropped. No
  caller waits past its deadline: a row still queued or running then is answered
  ``DeadlineExceeded`` at once (its batch goes on for the other rows).
- One bad row fails that row: when a batch fails, its rows are run one by one so the good rows
  still succeed. The output count is checked against the row count. A batch failing
  ``Unavailable`` (the backend is down) fails all its rows at once: one by one would only repeat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.errors import DeadlineExceeded, InternalError, InvalidInput, Overloaded, Unavailable
from gateway.metrics import Metrics
from gateway.ops.request_log import RequestRecord, current_record

log = logging.getLogger(__name__)
RowT = TypeVar("RowT")
OutT = TypeVar("OutT")


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    max_queue_rows: int = 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 1024:
            raise InvalidInput(f"max_batch_size must be within 1..1024, got {self.max_batch_size}")
        if not 0 <= self.max_queue_delay_ms <= 1000:
            raise InvalidInput(f"max_queue_delay_ms must be within 0..1000, got {self.max_queue_delay_ms}")
        if self.max_queue_rows < self.max_batch_size:
            raise InvalidInput(
                f"max_queue_rows ({self.max_queue_rows}) must be at least "
                f"max_batch_size ({self.max_batch_size})"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> BatchSettings:
        """Settings from a manifest or a management request, type-checked here (a float or a
        string batch size is refused when it is written, not when a batch forms)."""
        unknown = set(values) - {"max_batch_size", "max_queue_delay_ms", "max_queue_rows"}
        if unknown:
            raise InvalidInput(f"unknown batching settings: {', '.join(sorted(map(str, unknown)))}")
        for name in ("max_batch_size", "max_queue_rows"):
            value = values.get(name, 1)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"batching setting {name} must be an integer, got {value!r}")
        delay = values.get("max_queue_delay_ms", 0.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay != delay:
            raise InvalidInput(f"batching setting max_queue_delay_ms must be a number, got {delay!r}")
        checked = dict(values)
        if "max_queue_delay_ms" in values:
            checked["max_queue_delay_ms"] = float(delay)
        return cls(**checked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "max_queue_rows": self.max_queue_rows,
        }


@dataclass
class _Pending(Generic[RowT, OutT]):
    row: RowT
    deadline: float
    future: asyncio.Future[OutT]
    arrived: float = field(default_factory=time.monotonic)
    ran: float = 0.0  # when its batch started (0: it never ran)
    done: float = 0.0  # when its batch ended


class DynamicBatcher(Generic[RowT, OutT]):
    def __init__(
        self,
        name: str,
        run: Callable[[list[RowT]], Sequence[OutT]],
        settings: BatchSettings,
        executor: Executor,
        metrics: Metrics,
        max_running: int = 1,
    ) -> None:
        self.name = name
        self.settings = settings
        self._run = run
        self._executor = executor
        self._metrics = metrics
        self._buckets: dict[Hashable, deque[_Pending[RowT, OutT]]] = {}
        self._queued = 0
        self._slots = asyncio.Semaphore(max_running)
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._batch_s = 0.0  # moving average of recent batch run time
        # this model's children of the per-model metrics, looked up once (labels() on every
        # request showed in the profile)
        self._queue_rows = metrics.queue_rows.labels(name)
        self._batch_size = metrics.batch_size.labels(name)
        self._batch_seconds = metrics.batch_seconds.labels(name)

    @property
    def queued_rows(self) -> int:
        return self._queued

    def update(self, settings: BatchSettings) -> None:
        self.settings = settings
        self._wakeup.set()

    async def submit(self, rows: Sequence[tuple[RowT, Hashable]], deadline: float) -> list[OutT]:
        """Queue all rows (or none) and wait for their outputs, in order."""
        if self._queued + len(rows) > self.settings.max_queue_rows:
            self._metrics.rows_dropped.labels(self.name, "shed").inc(len(rows))
            raise Overloaded(
                f"model {self.name!r} is overloaded: {self._queued} rows queued, "
                f"{len(rows)} more would pass the limit of {self.settings.max_queue_rows}; retry shortly",
                retry_after_s=max(1.0, self._batch_s * self._queued / self.settings.max_batch_size),
            )
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._dispatch_forever(), name=f"batcher-{self.name}")
        futures: list[asyncio.Future[OutT]] = []
        queued: list[_Pending[RowT, OutT]] = []
        for row, bucket in rows:
            pending: _Pending[RowT, OutT] = _Pending(row, deadline, loop.create_future())
            self._buckets.setdefault(bucket, deque()).append(pending)
            futures.append(pending.future)
            queued.append(pending)
        self._queued += len(rows)
        self._queue_rows.set(self._queued)
        self._wakeup.set()
        expiry = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire, futures)
        try:
            if len(futures) == 1:  # most requests: one row, awaited without gather's outer future
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        finally:
            expiry.cancel()
            for future in futures:  # on error or cancellation the remaining rows are dropped
                future.cancel()
            record = current_record()
            if record is not None and queued:
                _tell_timing(record, queued)

    async def close(self, reason: str = "") -> None:
        """Stop dispatching; queued rows fail UNAVAILABLE (with ``reason``); running batches end."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._fail_queued(
            Unavailable(reason or f"model {self.name!r} was unloaded; retry", retry_after_s=1.0)
        )
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _expire(self, futures: list[asyncio.Future[OutT]]) -> None:
        """At a request's deadline: its rows not answered yet (queued, or in a batch still running)
        are answered DeadlineExceeded now; a batch that is running goes on for its other rows."""
        for future in futures:
            if not future.done():
                self._metrics.rows_dropped.labels(self.name, "expired").inc()
                future.set_exception(
                    DeadlineExceeded("the request's deadline passed before the model answered")
                )

    def _fail_queued(self, error: Exception) -> None:
        for queue in self._buckets.values():
            for pending in queue:
                if not pending.future.done():
                    pending.future.set_exception(error)
        self._buckets.clear()
        self._queued = 0
        self._queue_rows.set(0)

    # -- dispatch ------------------------------------------------------------------------
    async def _dispatch_forever(self) -> None:
        """Dispatch until cancelled. If dispatching itself fails (a bug, never a bad row), the
        rows waiting now fail at once instead of hanging, and the next submit starts afresh."""
        try:
            while True:
                await self._slots.acquire()
                try:
                    batch = await self._next_batch()
                except BaseException:
                    self._slots.release()
                    raise
                task = asyncio.get_running_loop().create_task(self._execute(batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        except Exception:
            log.exception("batcher of model %s failed; failing its queued rows", self.name)
            self._fail_queued(InternalError(f"the batcher of model {self.name!r} failed; retry"))

    async def _next_batch(self) -> list[_Pending[RowT, OutT]]:
        while True:
            self._prune()
            bucket = self._most_urgent_bucket()
            if bucket is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            queue = self._buckets[bucket]
            size = self.settings.max_batch_size
            hold_until = queue[0].arrived + self.settings.max_queue_delay_ms / 1000
            if len(queue) < size and time.monotonic() < hold_until:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), hold_until - time.monotonic())
                continue
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            if not queue:
                del self._buckets[bucket]
            self._queued -= len(batch)
            self._queue_rows.set(self._queued)
            return batch

    def _most_urgent_bucket(self) -> Hashable | None:
        heads = [(queue[0].deadline, queue[0].arrived, key) for key, queue in self._buckets.items() if queue]
        return min(heads, key=lambda head: (head[0], head[1]))[2] if heads else None

    def _prune(self) -> None:
        """Drop rows whose caller left; refuse rows that can no longer make their deadline."""
        now = time.monotonic()
        for key in list(self._buckets):
            kept: deque[_Pending[RowT, OutT]] = deque()
            for pending in self._buckets[key]:
                if pending.future.done():  # the caller left, or its deadline answered it (_expire)
                    if pending.future.cancelled():
                        self._metrics.rows_dropped.labels(self.name, "cancelled").inc()
                elif now + self._batch_s >= pending.deadline:
                    self._metrics.rows_dropped.labels(self.name, "expired").inc()
                    pending.future.set_exception(
                        DeadlineExceeded("the request's deadline would pass before the model could run it")
                    )
                else:
                    kept.append(pending)
            self._queued -= len(self._buckets[key]) - len(kept)
            if kept:
                self._buckets[key] = kept
            else:
                del self._buckets[key]
        self._queue_rows.set(self._queued)

    async def _execute(self, batch: list[_Pending[RowT, OutT]]) -> None:
        try:
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            rows = [pending.row for pending in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._run_isolating, rows)
            except Exception as exc:  # the executor itself failed (e.g. shut down)
                results = [_Failure(exc)] * len(batch)
            ended = time.monotonic()
            elapsed = ended - started
            self._batch_s = elapsed if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * elapsed
            self._batch_size.observe(len(batch))
            self._batch_seconds.observe(elapsed)
            for pending, result in zip(batch, results, strict=True):
                pending.ran, pending.done = started, ended
                if pending.future.done():
                    continue
                if isinstance(result, _Failure):
                    self._metrics.rows_failed.labels(self.name).inc()
                    pending.future.set_exception(result.error)
                else:
                    pending.future.set_result(result)
        finally:
            self._slots.release()

    def _run_isolating(self, rows: list[RowT]) -> list[OutT | _Failure]:
        """Run the batch; if it fails, run each row alone so one bad row fails only itself."""
        try:
            return list(self._checked(rows))
        except Exception as exc:
            if len(rows) == 1 or isinstance(exc, Unavailable):
                return [_Failure(exc)] * len(rows)
        results: list[OutT | _Failure] = []
        for row in rows:
            try:
                results.extend(self._checked([row]))
            except Exception as exc:
                results.append(_Failure(exc))
        return results

    def _checked(self, rows: list[RowT]) -> Sequence[OutT]:
        outputs = self._run(rows)
        if len(outputs) != len(rows):
            raise RuntimeError(f"model returned {len(outputs)} outputs for {len(rows)} rows")
        return outputs


def _tell_timing(record: RequestRecord, rows: list[_Pending[Any, Any]]) -> None:
    """The request's queue wait (arrival to its first batch) and model time (first batch's start
    to last batch's end); rows that never ran count as queued until now."""
    if len(rows) == 1:  # most requests: no generator, no min / max
        row = rows[0]
        if row.ran:
            record.add_batch(row.ran - row.arrived, row.done - row.ran)
        else:
            record.add_batch(time.monotonic() - row.arrived, 0.0)
        return
    first = min((p.ran for p in rows if p.ran), default=0.0)
    if not first:
        record.add_batch(time.monotonic() - rows[0].arrived, 0.0)
        return
    record.add_batch(first - rows[0].arrived, max(p.done for p in rows) - first)


@dataclass(frozen=True)
class _Failure:
    error: Exception
