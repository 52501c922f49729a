"""Chunked prefill in both causal-LM engines (ONNX Runtime, the default, and PyTorch) on the real
SmolLM2-135M: a prompt prefilled in chunks over several steps, beside decoding rows and beside
another prompt's chunks, gives exactly the greedy tokens it gives prefilled whole and alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtimes.base import ThreadSettings
from runtimes.causal_lm import CausalLMRuntime, GenerationStep, NewSequence
from runtimes.onnx_generation import OnnxCausalLM
from runtimes.prefill_inputs import length_groups
from tests.generation_models import SMOLLM_SETTINGS, SMOLLM_WORK, smollm_gguf, smollm_runtime, solo_tokens

STEPS = 8
STORY = "Once upon a time, in a small village at the edge of a dark forest, there lived an old"
QUESTION = "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n"
THREADS = ThreadSettings(intra_op_threads=1, inter_op_threads=1, model_workers=1)


@pytest.fixture(scope="module", params=["onnx", "torch"])
def runtime(request: pytest.FixtureRequest) -> Iterator[CausalLMRuntime]:
    engine: CausalLMRuntime
    if request.param == "onnx":
        engine = OnnxCausalLM(
            source=smollm_gguf(), work_dir=SMOLLM_WORK, options=dict(SMOLLM_SETTINGS), threads=THREADS
        )
        engine.load()
    else:
        engine = smollm_runtime()
    yield engine
    engine.unload()


def _chunked(
    runtime: CausalLMRuntime, prompts: dict[int, tuple[int, ...]], chunk: dict[int, int]
) -> dict[int, list[int]]:
    """Every prompt prefilled ``chunk[seq]`` tokens per step, all from step 1, each decoding as
    soon as its prompt is in, until each has STEPS greedy tokens."""
    done = dict.fromkeys(prompts, 0)
    tokens: dict[int, list[int]] = {}
    while len(tokens) < len(prompts) or runtime.running:
        finished = tuple(s for s, got in tokens.items() if len(got) == STEPS and s in runtime.running)
        prefill = []
        for seq_id, prompt in prompts.items():
            if done[seq_id] < len(prompt):
                end = min(done[seq_id] + chunk[seq_id], len(prompt))
                prefill.append(NewSequence(seq_id, prompt, start=done[seq_id], end=end))
                done[seq_id] = end
        decode = tuple((s, got[-1]) for s, got in tokens.items() if s not in finished and len(got) < STEPS)
        out = runtime.run_batch(GenerationStep(release=finished, decode=decode, prefill=tuple(prefill)))
        completed = {seq.seq_id for seq in prefill if seq.completes}
        assert set(out.seq_ids) == {s for s, _ in decode} | completed  # no logits for a part-way prompt
        for seq_id in out.seq_ids:
            tokens.setdefault(seq_id, []).append(int(out.logits[out.row(seq_id)].argmax()))
    return tokens


def test_chunked_prompts_beside_decoding_rows_give_the_whole_prompts_tokens(runtime: CausalLMRuntime) -> None:
    story, question = tuple(runtime.encode(STORY)), tuple(runtime.encode(QUESTION))
    alone = {
        1: solo_tokens(runtime, story, STEPS),
        2: solo_tokens(runtime, question, STEPS),
        3: solo_tokens(runtime, story[:5], STEPS),
    }
    # the short prompt decodes from step 2 while the two long ones come in chunks of 5 and 7
    # (different chunk lengths in one forward pass: the shorter one is padded)
    got = _chunked(runtime, {1: story, 2: question, 3: story[:5]}, {1: 5, 2: 7, 3: 100})
    assert got == alone
    assert runtime.running == ()


def test_a_part_way_prompt_is_held_then_released(runtime: CausalLMRuntime) -> None:
    story = tuple(runtime.encode(STORY))
    out = runtime.run_batch(GenerationStep(prefill=(NewSequence(7, story, end=6),)))
    assert out.seq_ids == () and runtime.running == (7,)  # held, no logits
    with pytest.raises(ValueError, match="part-way"):
        runtime.run_batch(GenerationStep(prefill=(NewSequence(7, story),)))  # starting it again
    with pytest.raises(ValueError, match="never started"):
        runtime.run_batch(GenerationStep(prefill=(NewSequence(8, story, start=6),)))
    with pytest.raises(ValueError, match="whole prompt"):
        NewSequence(9, story, prompt_logprobs=True, end=6)
    runtime.run_batch(GenerationStep(release=(7,)))
    assert runtime.running == ()
    whole = solo_tokens(runtime, story, STEPS)
    assert _chunked(runtime, {7: story}, {7: 6})[7] == whole  # the same id, afresh


def test_length_groups_bound_the_padding() -> None:
    lengths = [23, 64, 22, 51, 66, 20, 36, 48]
    groups = length_groups(lengths)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        real = sum(lengths[i] for i in group)
        assert len(group) * max(lengths[i] for i in group) <= real * 1.2 + 16
    assert len(groups) < len(lengths)  # similar lengths still share a forward pass
    assert length_groups([10, 10, 11]) == [[0, 1, 2]]
    assert length_groups([]) == []
