"""The continuous-batching scheduler with the real SmolLM2 and its real thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.errors import DeadlineExceeded, InternalError, Overloaded
from gateway.generation.params import GenerationParams
from gateway.generation.policies import fit_prompt
from gateway.generation.results import FinishReason
from gateway.generation.scheduler import GenerationRequest, GenerationScheduler, SequenceEvent, SequenceHandle
from runtimes.causal_lm import GenerationLimits
from runtimes.torch_generation import TorchCausalLM

LONG = GenerationParams(max_new_tokens=200, min_new_tokens=200)  # never ends early on its own

SchedulerFactory = Callable[..., GenerationScheduler]


@pytest.fixture
def make_scheduler(smollm: TorchCausalLM) -> Iterator[SchedulerFactory]:
    started: list[GenerationScheduler] = []

    def make(**limits: int) -> GenerationScheduler:
        settings = {"max_batch_size": 8, "max_tokens_per_step": 512, "max_queue": 8, "max_context": 2048}
        scheduler = GenerationScheduler(
            smollm, name="smollm", limits=GenerationLimits(**{**settings, **limits})
        )
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield make
    for scheduler in started:
        scheduler.close()
    assert smollm.running == ()


def _request(
    smollm: TorchCausalLM, text: str, params: GenerationParams, **extra: object
) -> GenerationRequest:
    prompt = fit_prompt(smollm.encode(text), 0, smollm.limits.max_context)
    return GenerationRequest("test", prompt, params, **extra)  # type: ignore[arg-type]


async def _drain(handle: SequenceHandle) -> list[SequenceEvent]:
    events = [await asyncio.wait_for(handle.next_event(), 60)]
    while not events[-1].finished:
        events.append(await asyncio.wait_for(handle.next_event(), 60))
    return events


def _text(events: list[SequenceEvent]) -> str:
    return "".join(event.text for event in events)


async def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_greedy_and_seeded_sampling_are_the_same_alone_and_in_a_mixed_batch(
    smollm: TorchCausalLM, make_scheduler: SchedulerFactory
) -> None:
    scheduler = make_scheduler()
    story = "Write a one-line story about a cat:"
    sampled = GenerationParams(max_new_tokens=10, decoding_method="SAMPLING", seed=7)
    greedy = GenerationParams(max_new_tokens=10)
    alone_sampled = _text(await _drain(scheduler.submit(_request(smollm, story, sampled))))
    alone_greedy = _text(await _drain(scheduler.submit(_request(smollm, "The capital of France is", greedy))))

    first = scheduler.submit(_request(smollm, story, sampled))
    events = [await first.next_event()]  # running: the next two join the batch mid-way
    second = scheduler.submit(_request(smollm, "The capital of France is", greedy))
    third = scheduler.submit(
        _request(smollm, story, GenerationParams(max_new_tokens=10, decoding_method="SAMPLING", seed=8))
    )
    mixed_sampled = _text(events + await _drain(first))
    assert _text(await _drain(second)) == alone_greedy
    assert mixed_sampled == alone_sampled
    assert _text(await _drain(third)) != alone_sampled


async def test_cancelling_frees_the_slot_for_a_waiting_request(
    smollm: TorchCausalLM, make_scheduler: SchedulerFactory
) -> None:
    scheduler = make_scheduler(max_batch_size=1)
    running = scheduler.submit(_request(smollm, "Tell me a long story.", LONG))
    await running.next_event()
    waiting = scheduler.submit(_request(smollm, "Count to ten:", GenerationParams(max_new_tokens=3)))
    assert (scheduler.active_count, scheduler.queued_count) == (1, 1)
    running.cancel()
    events = await _drain(waiting)
    assert events[-1].finish_reason is FinishReason.MAX_TOKENS and events[-1].generated == 3
    last = await _drain(running)
    assert last[-1].finish_reason is FinishReason.CANCELLED and last[-1].generated < 50
    await _until(lambda: scheduler.active_count == 0)

    queued = scheduler.submit(_request(smollm, "Never admitted", LONG))
    queued.cancel()  # a waiting request leaves the queue at once
    assert scheduler.queued_count == 0


async def test_a_full_queue_is_shed_at_once(smollm: TorchCausalLM, make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(max_batch_size=1, max_queue=1)
    running = scheduler.submit(_request(smollm, "Tell me a long story.", LONG))
    await running.next_event()
    waiting = scheduler.submit(_request(smollm, "Second", LONG))
    with pytest.raises(Overloaded, match="limit 1") as caught:
        scheduler.submit(_request(smollm, "Third", LONG))
    # refused while the queue was still full (it did not wait for a slot) and never queued
    assert not running.done and not waiting.done
    assert (scheduler.active_count, scheduler.queued_count) == (1, 1)
    assert caught.value.retry_after_s and caught.value.retry_after_s > 0
    waiting.cancel()
    running.cancel()


async def test_deadlines_end_running_requests_with_partial_text_and_waiting_ones_with_an_error(
    smollm: TorchCausalLM, make_scheduler: SchedulerFactory
) -> None:
    scheduler = make_scheduler(max_batch_size=1)
    now = time.monotonic()
    running = scheduler.submit(_request(smollm, "Tell me a long story.", LONG, deadline=now + 1.0))
    waiting = scheduler.submit(_request(smollm, "Too late", LONG, deadline=now + 0.3))
    waited = await _drain(waiting)
    assert isinstance(waited[-1].error, DeadlineExceeded) and waited[-1].generated == 0
    events = await _drain(running)
    # the deadline, not the token count, ended it: partial text, and both slots are free again
    assert events[-1].finish_reason is FinishReason.TIME_LIMIT
    assert 0 < events[-1].generated < 200 and _text(events)
    assert (scheduler.active_count, scheduler.queued_count) == (0, 0)


async def test_a_failing_step_fails_its_requests_and_the_scheduler_goes_on(
    smollm: TorchCausalLM, make_scheduler: SchedulerFactory
) -> None:
    scheduler = make_scheduler()
    broken = scheduler.submit(GenerationRequest("req-42", (smollm.vocab_size + 5,), GenerationParams()))
    events = await _drain(broken)
    assert isinstance(events[-1].error, InternalError) and "req-42" in events[-1].error.message
    healthy = await _drain(
        scheduler.submit(_request(smollm, "The capital of France is", GenerationParams(max_new_tokens=2)))
    )
    assert healthy[-1].finish_reason is FinishReason.MAX_TOKENS


async def test_a_consumer_whose_event_loop_closed_frees_its_slot(
    smollm: TorchCausalLM, make_scheduler: SchedulerFactory
) -> None:
    """A step's events go to each consumer loop in one call; a loop that is gone ends its
    sequences (nobody listens) while the other loop's sequence goes on."""
    import threading

    scheduler = make_scheduler()
    other = asyncio.new_event_loop()
    gone: list[SequenceHandle] = []

    async def submit_and_leave() -> None:
        handle = scheduler.submit(_request(smollm, "Tell me a long story.", LONG))
        gone.append(handle)
        await handle.next_event()

    thread = threading.Thread(target=lambda: other.run_until_complete(submit_and_leave()))
    thread.start()
    thread.join(60)
    other.close()  # its sequence is still running, with nobody to read its tokens
    assert gone and not gone[0].done
    here = scheduler.submit(_request(smollm, "Count to ten:", GenerationParams(max_new_tokens=5)))
    events = await _drain(here)
    assert events[-1].finish_reason is FinishReason.MAX_TOKENS and events[-1].generated == 5
    await _until(lambda: scheduler.active_count == 0)
    assert gone[0].done
