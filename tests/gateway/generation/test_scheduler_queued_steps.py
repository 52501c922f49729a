"""The first event of a request says how many scheduler steps it waited before its prefill
(``SequenceEvent.queued_steps``), on the real SmolLM2 and the scheduler's real thread."""

from __future__ import annotations

import asyncio

from gateway.generation.params import GenerationParams
from gateway.generation.policies import fit_prompt
from gateway.generation.scheduler import GenerationRequest, GenerationScheduler, SequenceEvent, SequenceHandle
from runtimes.causal_lm import GenerationLimits
from runtimes.torch_generation import TorchCausalLM

FIVE = GenerationParams(max_new_tokens=5, min_new_tokens=5)  # exactly 5 steps per request


def _scheduler(smollm: TorchCausalLM, batch: int) -> GenerationScheduler:
    limits = GenerationLimits(max_batch_size=batch, max_tokens_per_step=512, max_queue=8, max_context=2048)
    return GenerationScheduler(smollm, name="smollm", limits=limits)


def _submit(scheduler: GenerationScheduler, smollm: TorchCausalLM, text: str) -> SequenceHandle:
    prompt = fit_prompt(smollm.encode(text), 0, smollm.limits.max_context)
    return scheduler.submit(GenerationRequest("test", prompt, FIVE))


async def _drain(handle: SequenceHandle) -> list[SequenceEvent]:
    events = [await asyncio.wait_for(handle.next_event(), 60)]
    while not events[-1].finished:
        events.append(await asyncio.wait_for(handle.next_event(), 60))
    return events


async def test_a_request_behind_a_full_batch_reports_the_steps_it_waited(smollm: TorchCausalLM) -> None:
    scheduler = _scheduler(smollm, batch=1)
    # queued before the thread starts, so the order of admission is fixed: one at a time
    handles = [_submit(scheduler, smollm, text) for text in ("The sky is", "Water is", "Fire is")]
    scheduler.start()
    try:
        runs = [await _drain(handle) for handle in handles]
    finally:
        scheduler.close()
    assert [len(events) for events in runs] == [5, 5, 5]
    assert all(events[-1].generated == 5 for events in runs)
    # each waits for the 5 steps of every request ahead of it; later events carry no count
    assert [events[0].queued_steps for events in runs] == [0, 5, 10]
    assert all(event.queued_steps == 0 for events in runs for event in events[1:])
    assert smollm.running == ()


async def test_requests_admitted_together_waited_no_step(smollm: TorchCausalLM) -> None:
    scheduler = _scheduler(smollm, batch=4)
    handles = [_submit(scheduler, smollm, text) for text in ("The sky is", "Water is", "Fire is")]
    scheduler.start()
    try:
        runs = [await _drain(handle) for handle in handles]
        # a request queued while others run waits at most until a slot frees: here none is full
        late = await _drain(_submit(scheduler, smollm, "Earth is"))
    finally:
        scheduler.close()
    assert [events[0].queued_steps for events in runs] == [0, 0, 0]
    assert late[0].queued_steps == 0 and late[-1].generated == 5
