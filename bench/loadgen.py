"""Closed-loop and open-loop (Poisson) load generation on asyncio, with CPU accounting.

A ``Call`` is an async function issuing one request; it raises on failure. Latencies are in
milliseconds. The generator's own CPU use is reported, since it shares the machine.
"""

from __future__ import annotations

import asyncio
import random
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Call = Callable[[], Awaitable[object]]


@dataclass
class Sample:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[int(q * 1000) - 1]

    @property
    def cpu_share(self) -> float:
        """Load generator CPU as a fraction of one core."""
        return self.cpu_s / self.elapsed_s if self.elapsed_s else 0.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _timed(call: Call, sample: Sample, record: bool) -> None:
    start = time.perf_counter()
    try:
        await call()
    except Exception:
        if record:
            sample.errors += 1
        return
    if record:
        sample.latencies_ms.append((time.perf_counter() - start) * 1000)


async def closed_loop(call: Call, clients: int, duration_s: float, warmup_s: float = 0.5) -> Sample:
    """``clients`` workers, each sending its next request when the previous one answers."""
    sample = Sample()
    recording = False
    stop_at = 0.0

    async def worker() -> None:
        while not recording or time.perf_counter() < stop_at:
            await _timed(call, sample, recording)

    tasks = [asyncio.ensure_future(worker()) for _ in range(clients)]
    await asyncio.sleep(warmup_s)
    recording, started, cpu = True, time.perf_counter(), _cpu()
    stop_at = started + duration_s
    await asyncio.gather(*tasks)
    sample.elapsed_s = time.perf_counter() - started
    sample.cpu_s = _cpu() - cpu
    return sample


async def open_loop(
    call: Call, rate: float, max_outstanding: int, duration_s: float, seed: int = 0
) -> Sample:
    """Poisson arrivals at ``rate`` per second; arrivals beyond ``max_outstanding`` count as errors."""
    sample = Sample()
    rng = random.Random(seed)
    outstanding: set[asyncio.Task[None]] = set()
    started, cpu = time.perf_counter(), _cpu()
    next_at = started
    while next_at < started + duration_s:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if len(outstanding) >= max_outstanding:
            sample.errors += 1
        else:
            task = asyncio.ensure_future(_timed(call, sample, True))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        next_at += rng.expovariate(rate)
    if outstanding:
        await asyncio.gather(*outstanding)
    sample.elapsed_s = time.perf_counter() - started
    sample.cpu_s = _cpu() - cpu
    return sample
