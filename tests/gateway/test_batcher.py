"""DynamicBatcher as a queue class: plain run functions stand in for a model here; the
real-model behaviour (batches forming, deadlines, cancellation) is in test_batching.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.batcher import BatchSettings, DynamicBatcher
from gateway.errors import DeadlineExceeded, InternalError, InvalidInput, Overloaded, Unavailable
from gateway.metrics import Metrics


class Recorder:
    """A run function that records its batches and can be held closed."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on = fail_on
        self.calls = 0

    def __call__(self, rows: list[str]) -> list[str]:
        self.calls += 1
        self.gate.wait(timeout=10)
        self.batches.append(list(rows))
        if self.fail_on in rows:
            raise ValueError(f"cannot process {self.fail_on}")
        return [row.upper() for row in rows]


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def far() -> float:
    return time.monotonic() + 30


async def _until(predicate: object, limit_s: float = 5.0) -> None:
    end = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


async def test_rows_come_back_in_order(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = DynamicBatcher("m", run, BatchSettings(max_batch_size=4), executor, Metrics())
    out = await batcher.submit([(f"r{i}", 0) for i in range(10)], far())
    assert out == [f"R{i}" for i in range(10)]
    assert all(len(batch) <= 4 for batch in run.batches)
    await batcher.close()


async def test_concurrent_requests_share_batches_within_a_bucket(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    run.gate.clear()
    batcher = DynamicBatcher("m", run, BatchSettings(max_batch_size=8), executor, Metrics())
    first = asyncio.ensure_future(batcher.submit([("warm", 0)], far()))
    await _until(lambda: run.calls == 1)  # "warm" is running, held at the gate
    calls = [asyncio.ensure_future(batcher.submit([(f"s{i}", "short")], far())) for i in range(6)]
    calls += [asyncio.ensure_future(batcher.submit([(f"l{i}", "long")], far())) for i in range(3)]
    await _until(lambda: batcher.queued_rows == 9)
    run.gate.set()
    await asyncio.gather(first, *calls)
    shapes = sorted(sorted(batch) for batch in run.batches[1:])
    assert shapes == [["l0", "l1", "l2"], [f"s{i}" for i in range(6)]]
    await batcher.close()


async def test_one_bad_row_fails_only_itself(executor: ThreadPoolExecutor) -> None:
    run = Recorder(fail_on="bad")
    run.gate.clear()
    batcher = DynamicBatcher("m", run, BatchSettings(), executor, Metrics(), max_running=1)
    blocker = asyncio.ensure_future(batcher.submit([("x", 0)], far()))
    await _until(lambda: run.calls == 1)
    good = asyncio.ensure_future(batcher.submit([("good", 0)], far()))
    bad = asyncio.ensure_future(batcher.submit([("bad", 0)], far()))
    await _until(lambda: batcher.queued_rows == 2)
    run.gate.set()
    assert await good == ["GOOD"]
    with pytest.raises(ValueError, match="cannot process bad"):
        await bad
    await blocker
    assert ["good", "bad"] in run.batches  # they did share a batch before being isolated
    await batcher.close()


async def test_output_count_is_checked(executor: ThreadPoolExecutor) -> None:
    batcher = DynamicBatcher("m", lambda rows: rows[:-1], BatchSettings(), executor, Metrics())
    with pytest.raises(RuntimeError, match="0 outputs for 1 rows"):
        await batcher.submit([("a", 0)], far())
    await batcher.close()


async def test_full_queue_sheds_at_once_and_whole(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    run.gate.clear()
    settings = BatchSettings(max_batch_size=2, max_queue_rows=4)
    batcher = DynamicBatcher("m", run, settings, executor, Metrics(), max_running=1)
    running = asyncio.ensure_future(batcher.submit([("a", 0)], far()))
    await _until(lambda: run.calls == 1)
    queued = asyncio.ensure_future(batcher.submit([("b", 0), ("c", 0), ("d", 0)], far()))
    await _until(lambda: batcher.queued_rows == 3)
    with pytest.raises(Overloaded) as shed:
        await batcher.submit([("e", 0), ("f", 0)], far())
    # refused while the queue was full: "a" still held at the gate, nothing else ran, and the
    # queued request still waiting (the refusal did not wait for room)
    assert run.calls == 1 and run.batches == [] and not running.done() and not queued.done()
    assert shed.value.retry_after_s
    assert batcher.queued_rows == 3  # none of the refused request's rows were queued
    run.gate.set()
    await asyncio.gather(running, queued)
    await batcher.close()


async def test_cancelled_rows_never_run_and_late_rows_expire(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    run.gate.clear()
    metrics = Metrics()
    batcher = DynamicBatcher("m", run, BatchSettings(), executor, metrics, max_running=1)
    running = asyncio.ensure_future(batcher.submit([("first", 0)], far()))
    await _until(lambda: run.calls == 1)
    gone = asyncio.ensure_future(batcher.submit([("gone", 0)], far()))
    late = asyncio.ensure_future(batcher.submit([("late", 0)], time.monotonic() + 0.05))
    kept = asyncio.ensure_future(batcher.submit([("kept", 0)], far()))
    await _until(lambda: batcher.queued_rows == 3)
    gone.cancel()
    await asyncio.sleep(0.1)  # "late" can no longer make its deadline
    run.gate.set()
    assert await kept == ["KEPT"]
    with pytest.raises(DeadlineExceeded):
        await late
    await running
    ran = [row for batch in run.batches for row in batch]
    assert "gone" not in ran and "late" not in ran
    assert metrics.rows_dropped.labels("m", "cancelled")._value.get() == 1
    assert metrics.rows_dropped.labels("m", "expired")._value.get() == 1
    await batcher.close()


async def test_queue_delay_holds_a_partial_batch(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = DynamicBatcher(
        "m", run, BatchSettings(max_batch_size=8, max_queue_delay_ms=50), executor, Metrics()
    )
    calls = [asyncio.ensure_future(batcher.submit([(f"r{i}", 0)], far())) for i in range(3)]
    await asyncio.gather(*calls)
    assert run.batches == [["r0", "r1", "r2"]]
    await batcher.close()


@pytest.mark.parametrize(
    "values",
    [{"max_batch_size": 0}, {"max_queue_delay_ms": -1}, {"max_queue_rows": 1}, {"batch": 3}],
)
def test_bad_settings_say_what_is_wrong(values: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        BatchSettings.from_mapping(values)


async def test_a_failing_dispatcher_fails_its_waiting_rows_at_once_and_recovers(
    executor: ThreadPoolExecutor,
) -> None:
    run = Recorder()
    batcher = DynamicBatcher("m", run, BatchSettings(max_batch_size=4), executor, Metrics())
    pick = batcher._most_urgent_bucket
    broken = True

    def failing_once() -> object:
        if broken:
            raise TypeError("'<' not supported between instances of 'str' and 'int'")
        return pick()

    batcher._most_urgent_bucket = failing_once  # type: ignore[method-assign]
    with pytest.raises(InternalError, match="batcher of model 'm' failed"):
        await asyncio.wait_for(batcher.submit([("a", 0), ("b", 0)], far()), 30)  # fails, never hangs
    assert batcher.queued_rows == 0 and run.calls == 0
    broken = False
    assert await batcher.submit([("c", 0)], far()) == ["C"]  # the next request starts it afresh
    await batcher.close()


async def test_closing_fails_queued_rows_unavailable(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    run.gate.clear()
    batcher = DynamicBatcher("m", run, BatchSettings(max_batch_size=1), executor, Metrics(), max_running=1)
    running = asyncio.ensure_future(batcher.submit([("first", 0)], far()))
    await _until(lambda: run.calls == 1)
    queued = asyncio.ensure_future(batcher.submit([("second", 0)], far()))
    await _until(lambda: batcher.queued_rows == 1)
    closing = asyncio.ensure_future(batcher.close("model 'm' was unloaded"))
    with pytest.raises(Unavailable, match="unloaded"):
        await queued
    run.gate.set()
    await closing
    assert await running == ["FIRST"]  # the running batch finished; it was not cut
