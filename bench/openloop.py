"""Load with outcomes: closed loop in this process, open loop (a fixed schedule) in worker processes.

Open loop: each of ``workers`` processes (spawned, so they share nothing with this one) sends
``rate / workers`` requests per second on a fixed schedule from a common wall-clock start,
regardless of answers; it never waits for an answer before the next send. When the process falls
behind (it shares the CPUs with the server), it catches up by sending what is due at once, so
the rate it managed to offer is ``sent / seconds``: reported beside the rate asked for. More than
``max_outstanding`` unanswered requests in one worker and a due request is counted ``not_sent``
instead (the generator's own bound; never hit while the server answers its excess at once).

Like real clients, a REST worker keeps a bounded keep-alive pool (``connections``, default 256)
rather than a connection per outstanding request, and every latency is timed from the moment
the schedule made the request due: time spent waiting for a free connection, or behind the
worker's own backlog, counts; it is not hidden.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import statistics
import time
from dataclasses import dataclass, field

from bench.traffic import DEFAULT_CONNECTIONS, Outcome, open_client

MAX_ERROR_KINDS = 16  # distinct error details kept (bounded: details are codes, not messages)


@dataclass
class Tally:
    """The outcomes of one phase."""

    ok_ms: list[float] = field(default_factory=list)
    shed_ms: list[float] = field(default_factory=list)
    shed_without_retry_after: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    not_sent: int = 0
    seconds: float = 0.0  # the window requests were sent in
    cpu_s: float = 0.0  # the generator's own CPU time in that window (all its processes)

    def add(self, outcome: Outcome) -> None:
        if outcome.kind == "ok":
            self.ok_ms.append(outcome.latency_ms)
        elif outcome.kind == "shed":
            self.shed_ms.append(outcome.latency_ms)
            self.shed_without_retry_after += not outcome.retry_after
        else:
            key = (
                outcome.detail
                if outcome.detail in self.errors or len(self.errors) < MAX_ERROR_KINDS
                else "other"
            )
            self.errors[key] = self.errors.get(key, 0) + 1

    def merge(self, other: Tally) -> None:
        self.ok_ms += other.ok_ms
        self.shed_ms += other.shed_ms
        self.shed_without_retry_after += other.shed_without_retry_after
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
        self.sent += other.sent
        self.not_sent += other.not_sent
        self.seconds = max(self.seconds, other.seconds)
        self.cpu_s += other.cpu_s

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, object]:
        seconds = self.seconds or float("nan")
        return {
            "sent": self.sent,
            "not_sent": self.not_sent,
            "seconds": self.seconds,
            "generator_cores": self.cpu_s / seconds,
            "sent_per_s": self.sent / seconds,
            "ok": len(self.ok_ms),
            "ok_per_s": len(self.ok_ms) / seconds,
            "ok_p50_ms": quantile(self.ok_ms, 0.5),
            "ok_p99_ms": quantile(self.ok_ms, 0.99),
            "shed": len(self.shed_ms),
            "shed_p50_ms": quantile(self.shed_ms, 0.5),
            "shed_p99_ms": quantile(self.shed_ms, 0.99),
            "shed_without_retry_after": self.shed_without_retry_after,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
        }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


async def closed(
    transport: str,
    address: str,
    task: str,
    clients: int,
    seconds: float,
    tokens: int,
    warmup_s: float = 1.0,
    min_rounds: int = 3,
) -> Tally:
    """``clients`` workers each sending the next request when the last is answered. The window
    opens once every client has had its first answer and ``warmup_s`` has passed, and lasts
    ``seconds`` or ``min_rounds`` times as long as those first answers took, whichever is longer
    (concurrent generation requests finish in waves: a window shorter than one would hold none);
    the answers that arrive in it are kept."""
    tally = Tally()
    window: list[float] = []  # [opens, closes] once known
    first_answers = 0
    async with open_client(transport, address, tokens) as client:
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal first_answers
            await client.request(task)  # warm-up: not kept
            first_answers += 1
            if first_answers == clients:
                now = time.perf_counter()
                opens = max(now, started + warmup_s)
                window.extend((opens, opens + max(seconds, min_rounds * (now - started))))
            while not window or time.perf_counter() < window[1]:
                outcome = await client.request(task)
                if window and window[0] <= time.perf_counter() <= window[1]:
                    tally.sent += 1
                    tally.add(outcome)

        await asyncio.gather(*(worker() for _ in range(clients)))
    tally.seconds = window[1] - window[0]
    return tally


async def _offer(
    transport: str, address: str, task: str, rate: float, seconds: float, start_at: float, job: OfferJob
) -> Tally:
    tally = Tally()
    outstanding: set[asyncio.Task[None]] = set()

    async def one(at: float) -> None:
        tally.add(await client.request(task, due=at))

    async with open_client(transport, address, job.tokens, job.connections) as client:
        await client.request(task)  # opens the connection before the clock starts
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started, cpu = time.perf_counter(), _cpu()
        due = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            target = int(elapsed * rate) + 1
            burst = 0
            while due < target:
                due += 1
                if len(outstanding) >= job.max_outstanding:
                    tally.not_sent += 1
                    continue
                task_ = asyncio.ensure_future(one(started + (due - 1) / rate))
                outstanding.add(task_)
                task_.add_done_callback(outstanding.discard)
                tally.sent += 1
                burst += 1
                if burst % 32 == 0:
                    await asyncio.sleep(0)  # let answers in while catching up
            await asyncio.sleep(max(0.0, due / rate - (time.perf_counter() - started)))
        tally.seconds = time.perf_counter() - started
        tally.cpu_s = _cpu() - cpu
        if outstanding:
            await asyncio.wait(outstanding, timeout=job.drain_s)
    return tally


@dataclass(frozen=True)
class OfferJob:
    transport: str
    address: str
    task: str
    rate: float  # requests per second, all workers together
    seconds: float
    workers: int = 2
    tokens: int = 16
    max_outstanding: int = 2000
    connections: int = DEFAULT_CONNECTIONS  # REST: the most connections one process keeps open
    drain_s: float = 90.0  # after the window, answers may take this long


def _worker(job: OfferJob, start_at: float) -> Tally:
    return asyncio.run(
        _offer(job.transport, job.address, job.task, job.rate / job.workers, job.seconds, start_at, job)
    )


def offer(job: OfferJob, lead_s: float = 3.0) -> tuple[Tally, float]:
    """Run ``job`` in ``job.workers`` spawned processes from a common start ``lead_s`` from now;
    returns the merged tally and the wall-clock start (time.time())."""
    start_at = time.time() + lead_s
    context = multiprocessing.get_context("spawn")
    with context.Pool(job.workers) as pool:
        parts = pool.starmap(_worker, [(job, start_at)] * job.workers)
    tally = Tally()
    for part in parts:
        tally.merge(part)
    return tally, start_at
