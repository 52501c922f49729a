"""Closed-loop streams on Taskgate's generation scheduler, in-process (no server, no network).

Each stream is a list of requests run one after another (the next is submitted when the last
finished); all streams run at once on one ``GenerationScheduler`` over one runtime, so the
scheduler's running batch holds a row per busy stream, whatever adapter each row names. Greedy,
``min_new_tokens = max_new_tokens`` so EOS never ends a request early.

Per request it records the text, the tokens generated, the scheduler steps it waited before its
prefill (``SequenceEvent.queued_steps``) and the time from submission to its first token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from gateway.generation.params import GenerationParams
from gateway.generation.scheduler import GenerationRequest, GenerationScheduler
from runtimes.causal_lm import CausalLMRuntime, GenerationLimits


@dataclass(frozen=True)
class Job:
    """One request: its prompt's token ids, the adapter it names (None: the base) and its length."""

    prompt: tuple[int, ...]
    adapter: str | None
    tokens: int


@dataclass(frozen=True)
class Done:
    text: str
    generated: int
    queued_steps: int
    ttft_ms: float


@dataclass(frozen=True)
class Run:
    wall_s: float
    done: dict[int, Done]  # job index -> what it got

    @property
    def tokens(self) -> int:
        return sum(d.generated for d in self.done.values())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def scheduler(runtime: CausalLMRuntime, batch: int, name: str = "bench") -> GenerationScheduler:
    """A started scheduler whose running batch holds ``batch`` rows; the step budget and the queue
    are wide enough that admission is bound by free slots only."""
    limits = GenerationLimits(
        max_batch_size=batch,
        max_tokens_per_step=8192,
        max_queue=4096,
        max_context=runtime.limits.max_context,
    )
    started = GenerationScheduler(runtime, name=name, limits=limits)
    started.start()
    return started


async def _request(scheduler: GenerationScheduler, index: int, job: Job) -> Done:
    params = GenerationParams(max_new_tokens=job.tokens, min_new_tokens=job.tokens)
    start = time.perf_counter()
    handle = scheduler.submit(GenerationRequest(f"bench-{index}", job.prompt, params, adapter=job.adapter))
    pieces: list[str] = []
    first = await handle.next_event()
    ttft_ms = (time.perf_counter() - start) * 1000
    event = first
    while True:
        if event.error is not None:
            raise event.error
        pieces.append(event.text)
        if event.finished:
            break
        event = await handle.next_event()
    return Done("".join(pieces), event.generated, first.queued_steps, ttft_ms)


async def _streams(scheduler: GenerationScheduler, streams: list[list[tuple[int, Job]]]) -> Run:
    done: dict[int, Done] = {}

    async def stream(jobs: list[tuple[int, Job]]) -> None:
        for index, job in jobs:
            done[index] = await _request(scheduler, index, job)

    start = time.perf_counter()
    await asyncio.gather(*(stream(jobs) for jobs in streams))
    return Run(time.perf_counter() - start, done)


def run_streams(scheduler: GenerationScheduler, jobs: list[Job], streams: int) -> Run:
    """Jobs dealt round-robin to ``streams`` closed-loop streams (job i to stream i % streams), so
    with equal lengths the batch runs the jobs in waves: jobs[0:streams], jobs[streams:2*streams]..."""
    dealt: list[list[tuple[int, Job]]] = [[] for _ in range(streams)]
    for index, job in enumerate(jobs):
        dealt[index % streams].append((index, job))
    return asyncio.run(_streams(scheduler, [s for s in dealt if s]))
