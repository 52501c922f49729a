"""GenerationService end to end on the real SmolLM2: results, streaming, stopping, cancelling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.core import RequestContext
from gateway.errors import DeadlineExceeded, InvalidInput, TaskNotSupported
from gateway.generation.params import GenerationParams
from gateway.generation.results import FinishReason
from gateway.generation.service import GenerationService
from runtimes.base import Runtime, ThreadSettings
from runtimes.onnx_encoder import OnnxEncoder
from runtimes.torch_generation import TorchCausalLM
from tests.generation_models import CHAT_SAY_HI
from tests.models import minilm_source

CTX = RequestContext("test-request")


@pytest.fixture(scope="module")
def service() -> Iterator[GenerationService]:
    generation = GenerationService()
    yield generation
    generation.close()


@dataclass
class Served:
    model_id: str
    runtime: Runtime  # type: ignore[type-arg]


async def _until(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_eos_ends_generation_unless_min_new_tokens_holds_it_back(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    natural, held = await asyncio.gather(
        service.generate(CTX, smollm, CHAT_SAY_HI, GenerationParams(max_new_tokens=40)),
        service.generate(CTX, smollm, CHAT_SAY_HI, GenerationParams(max_new_tokens=30, min_new_tokens=30)),
    )
    assert natural.finish_reason is FinishReason.EOS_TOKEN
    assert 1 < natural.generated_tokens < 30  # the EOS token (id 2, <|im_end|>) counted
    assert natural.generated_text.strip() and "<|im_end|>" not in natural.generated_text
    assert natural.input_token_count == len(smollm.encode(CHAT_SAY_HI)) and natural.seed is None
    assert held.finish_reason is FinishReason.MAX_TOKENS and held.generated_tokens == 30
    assert held.generated_text.startswith(natural.generated_text)  # greedy: the same up to the EOS


async def test_stop_sequences_with_and_without_the_stop_text(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    prompt = "Count: 1, 2, 3,"
    with_stop, without_stop = await asyncio.gather(
        service.generate(CTX, smollm, prompt, GenerationParams(max_new_tokens=12, stop_sequences=("6,",))),
        service.generate(
            CTX,
            smollm,
            prompt,
            GenerationParams(max_new_tokens=12, stop_sequences=("6,",), include_stop_sequence=False),
        ),
    )
    assert with_stop.finish_reason is without_stop.finish_reason is FinishReason.STOP_SEQUENCE
    assert with_stop.generated_text == " 4, 5, 6,"
    assert without_stop.generated_text == " 4, 5, "


async def test_the_stream_adds_up_to_the_unary_result(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    prompt = "Count: 1, 2, 3,"
    params = GenerationParams(max_new_tokens=12, stop_sequences=("6,",), include_stop_sequence=False)
    unary = await service.generate(CTX, smollm, prompt, params)
    chunks = [chunk async for chunk in await service.stream(CTX, smollm, prompt, params)]
    assert "".join(chunk.generated_text for chunk in chunks) == unary.generated_text
    assert [c.details.finish_reason for c in chunks[:-1]] == [FinishReason.NOT_FINISHED] * (len(chunks) - 1)
    last = chunks[-1].details
    assert (last.finish_reason, last.generated_tokens) == (FinishReason.STOP_SEQUENCE, unary.generated_tokens)
    assert last.input_token_count == unary.input_token_count
    assert all(len(chunk.tokens) == 1 and chunk.tokens[0].logprob is not None for chunk in chunks)
    assert [c.details.generated_tokens for c in chunks] == list(range(1, len(chunks) + 1))


async def test_response_options_prompt_and_token_details(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    prompt = "The capital of France is"
    params = GenerationParams(
        max_new_tokens=3,
        preserve_input_text=True,
        generated_tokens=True,
        input_tokens=True,
        token_logprobs=True,
        token_ranks=True,
    )
    out = await service.generate(CTX, smollm, prompt, params)
    assert out.generated_text.startswith(prompt + " Paris")
    assert out.tokens[0].text == "ĠParis" and len(out.tokens) == 3
    assert all(t.logprob is not None and t.logprob <= 0 and t.rank == 1 for t in out.tokens)  # greedy
    assert [t.text for t in out.input_tokens] == smollm.token_texts(smollm.encode(prompt))
    assert out.input_tokens[0].logprob is None and all(t.logprob < 0 for t in out.input_tokens[1:])  # type: ignore[operator]
    plain = await service.generate(CTX, smollm, prompt, GenerationParams(max_new_tokens=3))
    assert plain.tokens == () and plain.input_tokens == () and not plain.generated_text.startswith(prompt)


async def test_same_seed_same_text_and_a_drawn_seed_is_reported(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    prompt = "My favourite animal is"
    seeded = GenerationParams(max_new_tokens=8, decoding_method="SAMPLING", seed=1234)
    first, second, drawn = await asyncio.gather(
        service.generate(CTX, smollm, prompt, seeded),
        service.generate(CTX, smollm, prompt, seeded),
        service.generate(CTX, smollm, prompt, GenerationParams(max_new_tokens=8, decoding_method="SAMPLING")),
    )
    assert first.generated_text == second.generated_text and first.seed == 1234
    assert drawn.seed is not None
    replay = await service.generate(
        CTX, smollm, prompt, GenerationParams(max_new_tokens=8, decoding_method="SAMPLING", seed=drawn.seed)
    )
    assert replay.generated_text == drawn.generated_text


async def test_max_time_ends_with_time_limit_and_the_partial_text(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    params = GenerationParams(max_new_tokens=200, min_new_tokens=200, max_time=0.6)
    out = await service.generate(CTX, smollm, "Tell me a story.", params)
    # the time limit, not the token count, ended it: partial text, and its slot is already free
    assert out.finish_reason is FinishReason.TIME_LIMIT
    assert 0 < out.generated_tokens < 200 and out.generated_text
    assert service.scheduler(smollm).active_count == 0


async def test_stopping_a_stream_or_cancelling_a_request_frees_its_slot(
    service: GenerationService, smollm: TorchCausalLM
) -> None:
    scheduler = service.scheduler(smollm)
    long = GenerationParams(max_new_tokens=200, min_new_tokens=200)
    stream = await service.stream(CTX, smollm, "Tell me a story.", long)
    async for chunk in stream:
        assert chunk.details.generated_tokens == 1
        break
    assert scheduler.active_count == 1
    await stream.aclose()
    await _until(lambda: scheduler.active_count == 0)

    task = asyncio.create_task(service.generate(CTX, smollm, "Tell me a story.", long))
    await _until(lambda: scheduler.active_count == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: scheduler.active_count == 0)


async def test_errors_are_raised_at_the_call(
    service: GenerationService, smollm: TorchCausalLM, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="non-empty"):
        await service.stream(CTX, smollm, "", GenerationParams())
    with pytest.raises(InvalidInput, match="together more than the model's context of 8192"):
        await service.generate(CTX, smollm, "word " * 4000, GenerationParams(max_new_tokens=5000))
    with pytest.raises(InvalidInput, match="together more than the model's context"):
        await service.stream(CTX, smollm, "hi", GenerationParams(max_new_tokens=100_000_000))
    with pytest.raises(InvalidInput, match="context holds 8192"):
        await service.generate(CTX, smollm, "word " * 9000, GenerationParams())
    truncated = await service.generate(
        CTX, smollm, "word " * 9000, GenerationParams(max_new_tokens=1, truncate_input_tokens=16)
    )
    assert truncated.input_token_count == 16
    with pytest.raises(DeadlineExceeded):
        await service.generate(
            RequestContext("late", deadline=time.monotonic() - 1), smollm, "hi", GenerationParams()
        )
    encoder = OnnxEncoder(source=minilm_source(), work_dir=tmp_path, options={}, threads=ThreadSettings())
    with pytest.raises(TaskNotSupported, match="'minilm' does not serve the text-generation task"):
        await service.generate(CTX, Served("minilm", encoder), "hi", GenerationParams())
