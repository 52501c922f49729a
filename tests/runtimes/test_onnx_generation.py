"""The ONNX causal-LM runtime on the real SmolLM2-135M: export cache, running batch, identity.

The GGUF file is converted by the torch runtime's cache (``.cache/test-generation/smollm2.../
hf-from-gguf``) and exported once beside it (``onnx-text-generation-with-past``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtimes.base import ThreadSettings
from runtimes.catalog import factory_for
from runtimes.causal_lm import GenerationStep, NewSequence
from runtimes.gguf_convert import CONVERTED, GGUFConversionError
from runtimes.onnx_export import FINGERPRINT, export_cached
from runtimes.onnx_generation import TASK, OnnxCausalLM
from runtimes.torch_generation import TorchCausalLM
from tests.generation_models import (
    EOS_ID,
    PROMPTS,
    SMOLLM_SETTINGS,
    SMOLLM_WORK,
    joined_tokens,
    smollm_gguf,
    smollm_runtime,
    solo_tokens,
)

THREADS = ThreadSettings(intra_op_threads=1, inter_op_threads=1, model_workers=1)


@pytest.fixture(scope="module")
def runtime() -> OnnxCausalLM:
    onnx = OnnxCausalLM(
        source=smollm_gguf(), work_dir=SMOLLM_WORK, options=dict(SMOLLM_SETTINGS), threads=THREADS
    )
    onnx.load()
    return onnx


def test_the_export_is_cached_beside_the_conversion(runtime: OnnxCausalLM) -> None:
    folder = SMOLLM_WORK / f"onnx-{TASK}"
    stamp = json.loads((folder / FINGERPRINT).read_text())
    assert stamp["task"] == TASK
    before = (folder / "model.onnx").stat().st_mtime_ns
    inode = folder.stat().st_ino  # an export renames a new folder into place
    assert export_cached(SMOLLM_WORK / CONVERTED, SMOLLM_WORK, TASK) == folder
    assert folder.stat().st_ino == inode  # hashing only, no export
    assert (folder / "model.onnx").stat().st_mtime_ns == before
    # Optimum's Llama graph: explicit positions and one key and value per layer (30 layers)
    names = [i.name for i in runtime._session.get_inputs()]
    assert names[:5] == [
        "input_ids",
        "attention_mask",
        "position_ids",
        "past_key_values.0.key",
        "past_key_values.0.value",
    ]
    assert len(runtime._past_names) == 60 and runtime._cache_shape == (3, 64)


def test_settings_are_checked_when_the_runtime_is_built(tmp_path: Path) -> None:
    assert factory_for("onnx-causal-lm") is OnnxCausalLM
    with pytest.raises(ValueError, match="max_batch_size"):
        OnnxCausalLM(source=smollm_gguf(), work_dir=tmp_path, options={"max_batch_size": 0}, threads=THREADS)
    with pytest.raises(GGUFConversionError, match="eos_token"):
        OnnxCausalLM(source=smollm_gguf(), work_dir=tmp_path, options={"eos_token": 2}, threads=THREADS)
    with pytest.raises(RuntimeError, match="not loaded"):
        OnnxCausalLM(source=smollm_gguf(), work_dir=tmp_path, options={}, threads=THREADS).run_batch(
            GenerationStep()
        )


def test_tokenizer_limits_and_size(runtime: OnnxCausalLM) -> None:
    assert runtime.eos_token_id == EOS_ID
    assert runtime.encode("hello world") == [28120, 905]  # no <|im_start|> prepended
    assert runtime.decode([28120, 905, EOS_ID]) == "hello world"
    assert runtime.token_texts([905, EOS_ID]) == ["Ġworld", "<|im_end|>"]
    assert runtime.limits.max_context == 8192
    assert runtime.vocab_size == 49152
    assert runtime.size_bytes() > 500_000_000  # 135M float32 weights in model.onnx


def test_greedy_matches_the_torch_runtime(runtime: OnnxCausalLM) -> None:
    torch_runtime: TorchCausalLM = smollm_runtime()
    try:
        for prompt in PROMPTS[:2]:
            assert runtime.encode(prompt) == torch_runtime.encode(prompt)
            assert solo_tokens(runtime, prompt) == solo_tokens(torch_runtime, prompt)
    finally:
        torch_runtime.unload()
    assert runtime.decode(solo_tokens(runtime, PROMPTS[0])).startswith(" Paris")


def test_sequences_joining_the_running_batch_produce_what_they_produce_alone(runtime: OnnxCausalLM) -> None:
    alone = [solo_tokens(runtime, prompt) for prompt in PROMPTS]
    assert joined_tokens(runtime, {0: 0, 1: 2, 2: 3, 3: 6}) == alone  # sequence -> the iteration it joins at


def test_released_rows_leave_and_padding_columns_are_cut(runtime: OnnxCausalLM) -> None:
    short, long = tuple(runtime.encode("Hi")), tuple(runtime.encode(PROMPTS[3]))
    out = runtime.run_batch(GenerationStep(prefill=(NewSequence(1, long), NewSequence(2, short))))
    assert runtime.running == (1, 2)
    assert runtime._batch is not None and runtime._batch.width == len(long)
    first = {s: int(out.logits[out.row(s)].argmax()) for s in out.seq_ids}
    out = runtime.run_batch(GenerationStep(release=(1,), decode=((2, first[2]),)))
    assert out.seq_ids == (2,)
    assert runtime._batch.width == len(short) + 1
    assert runtime._batch.cache[0].shape == (1, 3, len(short) + 1, 64)
    with pytest.raises(ValueError, match="every running sequence"):
        runtime.run_batch(GenerationStep(decode=((3, 5),)))
    runtime.run_batch(GenerationStep(release=(2,)))
    assert not runtime.running
    assert runtime.run_batch(GenerationStep()).logits.shape == (0, 49152)


def test_prompt_logprobs_when_asked(runtime: OnnxCausalLM) -> None:
    ids = tuple(runtime.encode("The capital of France is Paris"))
    out = runtime.run_batch(
        GenerationStep(prefill=(NewSequence(5, ids, prompt_logprobs=True), NewSequence(6, ids[:3])))
    )
    runtime.run_batch(GenerationStep(release=(5, 6)))
    logprobs = out.prompt_logprobs[5]
    assert len(logprobs) == len(ids) - 1 and 6 not in out.prompt_logprobs
    assert all(value < 0 for value in logprobs)
    assert logprobs[-1] > -2.0  # "Paris" after "The capital of France is" is likely


def test_unload_drops_the_session_and_the_batch_and_load_brings_it_back(runtime: OnnxCausalLM) -> None:
    estimate = OnnxCausalLM(source=smollm_gguf(), work_dir=SMOLLM_WORK, options={}, threads=THREADS)
    assert estimate.size_bytes() == smollm_gguf().stat().st_size * 4  # before load: the GGUF dequantized
    runtime.run_batch(GenerationStep(prefill=(NewSequence(1, (28120, 905)),)))
    runtime.unload()
    assert not runtime.running
    with pytest.raises(RuntimeError, match="not loaded"):
        runtime.run_batch(GenerationStep(release=(1,)))
    runtime.load()
    assert solo_tokens(runtime, PROMPTS[2], steps=3) == solo_tokens(runtime, PROMPTS[2], steps=3)
