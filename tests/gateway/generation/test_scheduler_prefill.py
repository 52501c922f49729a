"""Chunked prefill in the scheduler, on the real SmolLM2 and the scheduler's real thread: a burst
of prompts gets its first tokens within a bounded number of steps while the running sequences
decode at every step, long prompts come in chunks of ``prefill_chunk_tokens``, and the greedy
text is what each request generates alone. Steps are counted (``SequenceEvent.step``), never time.
"""

from __future__ import annotations

import asyncio
import math

from gateway.generation.params import GenerationParams
from gateway.generation.policies import fit_prompt
from gateway.generation.scheduler import GenerationRequest, GenerationScheduler, SequenceEvent, SequenceHandle
from runtimes.causal_lm import GenerationLimits
from runtimes.torch_generation import TorchCausalLM

QUESTIONS = (
    "Why is the sky blue?",
    "How do bees make honey?",
    "Explain how a refrigerator works.",
    "Write a poem about autumn leaves.",
    "Describe the water cycle to a child.",
    "What makes a good cup of coffee?",
)
PADDING = " Please answer in full sentences, with concrete examples and a friendly tone."
LONG = (
    "Once upon a time, in a small village at the edge of a dark forest, there lived an old "
    "clockmaker who repaired every clock in the valley. One winter night a traveller knocked on "
    "his door with a broken pocket watch that ticked backwards, and asked him to mend it before "
    "dawn, because"
)


def _chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _prompts() -> list[str]:
    """Six prompts of 12 to about 60 tokens (like bench/generation.py's)."""
    return [_chat(q + PADDING * (i % 4)) for i, q in enumerate(QUESTIONS)]


def _scheduler(smollm: TorchCausalLM, **limits: int) -> GenerationScheduler:
    settings = {"max_batch_size": 8, "max_tokens_per_step": 512, "max_queue": 16, "max_context": 2048}
    return GenerationScheduler(smollm, name="smollm", limits=GenerationLimits(**{**settings, **limits}))


def _submit(scheduler: GenerationScheduler, prompt: tuple[int, ...], tokens: int) -> SequenceHandle:
    params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens)
    return scheduler.submit(GenerationRequest("test", prompt, params))


async def _drain(handle: SequenceHandle) -> list[SequenceEvent]:
    events = [await asyncio.wait_for(handle.next_event(), 120)]
    while not events[-1].finished:
        events.append(await asyncio.wait_for(handle.next_event(), 120))
    return events


async def _run(
    scheduler: GenerationScheduler, prompts: list[tuple[int, ...]], tokens: int
) -> list[list[SequenceEvent]]:
    """Queue every prompt before the thread starts (a burst in a fixed order), then run them."""
    handles = [_submit(scheduler, prompt, tokens) for prompt in prompts]
    scheduler.start()
    try:
        return list(await asyncio.gather(*(_drain(handle) for handle in handles)))
    finally:
        scheduler.close()


async def _alone(smollm: TorchCausalLM, prompt: tuple[int, ...], tokens: int) -> str:
    """The greedy text of one request run by itself, its prompt prefilled whole."""
    (events,) = await _run(_scheduler(smollm, max_batch_size=1, max_tokens_per_step=4096), [prompt], tokens)
    return "".join(event.text for event in events)


def _encode(smollm: TorchCausalLM, text: str) -> tuple[int, ...]:
    return fit_prompt(smollm.encode(text), 0, smollm.limits.max_context)


async def test_a_burst_gets_every_first_token_within_the_budgets_steps(smollm: TorchCausalLM) -> None:
    prompts = [_encode(smollm, text) for text in _prompts()]
    total = sum(len(prompt) for prompt in prompts)
    budget, chunk, tokens = 48, 24, 6
    assert total > 3 * budget and max(len(p) for p in prompts) > chunk  # the burst needs several steps
    runs = await _run(
        _scheduler(smollm, max_tokens_per_step=budget, prefill_chunk_tokens=chunk), prompts, tokens
    )
    assert smollm.running == ()
    firsts = [events[0].step for events in runs]
    # every step prefills at least budget - (sequences decoding) prompt tokens until all are in
    bound = math.ceil(total / (budget - len(prompts)))
    assert max(firsts) <= bound, (firsts, bound)
    assert max(firsts) >= math.ceil(total / budget)  # ... and no step took more than its budget
    # prompts over the chunk size took several steps; the ones that fitted got their token at once
    for prompt, events in zip(prompts, runs, strict=True):
        admitted = events[0].queued_steps + 1
        assert events[0].step - admitted + 1 >= math.ceil(len(prompt) / chunk)
    # once decoding, a sequence got a token at every step: the prefill never stalled it
    for events in runs:
        steps = [event.step for event in events if event.token is not None]
        assert steps == list(range(steps[0], steps[0] + tokens))
    # the greedy text of each is what it generates alone, its prompt prefilled whole
    alone = [await _alone(smollm, prompt, tokens) for prompt in prompts]
    assert ["".join(event.text for event in events) for events in runs] == alone


async def test_a_long_prompt_is_prefilled_in_chunks_beside_a_decoding_sequence(smollm: TorchCausalLM) -> None:
    short, long = _encode(smollm, _chat("Say hi")), _encode(smollm, LONG)
    chunk, tokens = 16, 12
    assert len(long) > 3 * chunk
    chunks = math.ceil(len(long) / chunk)
    first, second = await _run(
        _scheduler(smollm, max_tokens_per_step=64, prefill_chunk_tokens=chunk), [short, long], tokens + chunks
    )
    # step 1 prefills the short prompt whole and the long one's first chunk; the long one
    # continues a chunk per step and gets its first token with the last chunk
    assert first[0].step == 1 and second[0].queued_steps == 0
    assert second[0].step == chunks
    # the short sequence decoded at every step meanwhile
    assert [event.step for event in first if event.token is not None] == list(range(1, tokens + chunks + 1))
    assert "".join(event.text for event in second) == await _alone(smollm, long, tokens + chunks)
    assert smollm.running == ()


async def test_cancelling_a_sequence_part_way_through_its_prompt_frees_it(smollm: TorchCausalLM) -> None:
    from gateway.generation.results import FinishReason

    scheduler = _scheduler(smollm, max_tokens_per_step=64, prefill_chunk_tokens=4)
    long = _encode(smollm, LONG * 3)  # ~45 chunks of 4
    running = _submit(scheduler, _encode(smollm, _chat("Say hi")), 30)
    handle = _submit(scheduler, long, 4)
    scheduler.start()
    try:
        events = [await asyncio.wait_for(running.next_event(), 60)]
        while events[-1].step < 2:  # the long prompt's first chunks ran
            events.append(await asyncio.wait_for(running.next_event(), 60))
        handle.cancel()
        cancelled = await _drain(handle)
        assert cancelled[-1].finish_reason is FinishReason.CANCELLED and cancelled[-1].generated == 0
        events += await _drain(running)
        assert events[-1].generated == 30  # the decoding sequence went on
        after = await _drain(_submit(scheduler, long, 4))  # the same prompt again, from its start
    finally:
        scheduler.close()
    assert "".join(event.text for event in after) == await _alone(smollm, long, 4)
    assert smollm.running == ()
