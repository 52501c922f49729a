"""The torch causal-LM runtime on the real SmolLM2-135M: conversion cache, running batch, identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from runtimes.causal_lm import GenerationStep, NewSequence
from runtimes.gguf_convert import CONVERTED, GGUFConversionError, TokenizerFixes, convert_cached
from runtimes.onnx_export import FINGERPRINT
from runtimes.torch_generation import TorchCausalLM
from tests.generation_models import (
    EOS_ID,
    PROMPTS,
    SMOLLM_WORK,
    STEPS,
    joined_tokens,
    smollm_gguf,
    smollm_runtime,
    solo_tokens,
)


@pytest.fixture(scope="module")
def runtime() -> TorchCausalLM:
    return smollm_runtime()


def test_the_gguf_conversion_is_cached_with_its_fingerprint(runtime: TorchCausalLM) -> None:
    folder = SMOLLM_WORK / CONVERTED
    stamp = json.loads((folder / FINGERPRINT).read_text())
    assert stamp["eos_token"] == "<|im_end|>"
    assert stamp["source_name"] == smollm_gguf().name
    assert len(stamp["source_sha256"]) == 64
    before = (folder / "model.safetensors").stat().st_mtime_ns
    inode = folder.stat().st_ino  # a conversion renames a new folder into place
    assert convert_cached(smollm_gguf(), SMOLLM_WORK, TokenizerFixes(eos_token="<|im_end|>")) == folder
    assert folder.stat().st_ino == inode  # hashing only, no conversion
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_settings_are_checked_when_the_runtime_is_built(tmp_path: Path) -> None:
    from runtimes.base import ThreadSettings

    with pytest.raises(ValueError, match="max_batch_size"):
        TorchCausalLM(
            source=smollm_gguf(), work_dir=tmp_path, options={"max_batch_size": 0}, threads=ThreadSettings()
        )
    with pytest.raises(GGUFConversionError, match="eos_token"):
        TorchCausalLM(
            source=smollm_gguf(), work_dir=tmp_path, options={"eos_token": 2}, threads=ThreadSettings()
        )


def test_tokenizer_is_fixed_eos_im_end_and_no_bos(runtime: TorchCausalLM) -> None:
    assert runtime.eos_token_id == EOS_ID
    assert runtime.encode("hello world") == [28120, 905]  # no <|im_start|> prepended
    assert runtime.decode([28120, 905, EOS_ID]) == "hello world"
    assert runtime.token_texts([905, EOS_ID]) == ["Ġworld", "<|im_end|>"]
    assert runtime.limits.max_context == 8192
    assert runtime.size_bytes() > 500_000_000  # 135M float32 parameters


def test_greedy_matches_hugging_face_generate(runtime: TorchCausalLM) -> None:
    ids = runtime.encode(PROMPTS[0])
    reference = runtime._model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=STEPS,
    )[0, len(ids) :].tolist()
    assert solo_tokens(runtime, PROMPTS[0]) == reference
    assert runtime.decode(reference).startswith(" Paris")


def test_sequences_joining_the_running_batch_produce_what_they_produce_alone(runtime: TorchCausalLM) -> None:
    alone = [solo_tokens(runtime, prompt) for prompt in PROMPTS]
    assert joined_tokens(runtime, {0: 0, 1: 2, 2: 3, 3: 6}) == alone  # sequence -> the iteration it joins at


def test_released_rows_leave_and_padding_columns_are_cut(runtime: TorchCausalLM) -> None:
    short, long = tuple(runtime.encode("Hi")), tuple(runtime.encode(PROMPTS[3]))
    out = runtime.run_batch(GenerationStep(prefill=(NewSequence(1, long), NewSequence(2, short))))
    assert runtime.running == (1, 2)
    width = runtime._batch.width  # type: ignore[union-attr]
    assert width == len(long)
    first = {s: int(out.logits[out.row(s)].argmax()) for s in out.seq_ids}
    out = runtime.run_batch(GenerationStep(release=(1,), decode=((2, first[2]),)))
    assert out.seq_ids == (2,)
    assert runtime._batch.width == len(short) + 1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="every running sequence"):
        runtime.run_batch(GenerationStep(decode=((3, 5),)))
    runtime.run_batch(GenerationStep(release=(2,)))
    assert not runtime.running


def test_prompt_logprobs_when_asked(runtime: TorchCausalLM) -> None:
    ids = tuple(runtime.encode("The capital of France is Paris"))
    out = runtime.run_batch(
        GenerationStep(prefill=(NewSequence(5, ids, prompt_logprobs=True), NewSequence(6, ids[:3])))
    )
    runtime.run_batch(GenerationStep(release=(5, 6)))
    logprobs = out.prompt_logprobs[5]
    assert len(logprobs) == len(ids) - 1 and 6 not in out.prompt_logprobs
    assert all(value < 0 for value in logprobs)
    assert logprobs[-1] > -2.0  # "Paris" after "The capital of France is" is likely
