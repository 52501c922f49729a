"""The causal-LM export's logits_to_keep edit, on the real SmolLM2-135M export.

The runtime asks for the last position's logits (1) in every step and for every position's (0)
only for prompt log-probabilities; both must be what Optimum's graph computed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from runtimes.base import ThreadSettings
from runtimes.causal_graph import EDITS, LOGITS_TO_KEEP, TASK
from runtimes.causal_lm import GenerationStep, NewSequence
from runtimes.onnx_export import FINGERPRINT
from runtimes.onnx_generation import OnnxCausalLM
from tests.generation_models import SMOLLM_SETTINGS, SMOLLM_WORK, smollm_gguf

THREADS = ThreadSettings(intra_op_threads=1, inter_op_threads=1, model_workers=1)
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def runtime() -> OnnxCausalLM:
    onnx = OnnxCausalLM(
        source=smollm_gguf(), work_dir=SMOLLM_WORK, options=dict(SMOLLM_SETTINGS), threads=THREADS
    )
    onnx.load()
    return onnx


def _run(runtime: OnnxCausalLM, ids: np.ndarray, keep: int) -> np.ndarray:
    rows, width = ids.shape
    heads, head_dim = runtime._cache_shape
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones((rows, width), np.int64),
        "position_ids": np.broadcast_to(np.arange(width, dtype=np.int64), (rows, width)).copy(),
        LOGITS_TO_KEEP: np.asarray([keep], np.int64),
    }
    feeds.update({name: np.zeros((rows, heads, 0, head_dim), np.float32) for name in runtime._past_names})
    logits: np.ndarray = runtime._session.run(["logits"], feeds)[0]
    return logits


def test_the_export_takes_logits_to_keep_and_its_fingerprint_names_the_edit(runtime: OnnxCausalLM) -> None:
    stamp = json.loads((SMOLLM_WORK / f"onnx-{TASK}" / FINGERPRINT).read_text())
    assert stamp["graph_edits"] == EDITS
    assert runtime._keeps_logits
    (keep,) = [i for i in runtime._session.get_inputs() if i.name == LOGITS_TO_KEEP]
    assert keep.type == "tensor(int64)" and keep.shape == [1]


def test_keeping_the_last_position_gives_the_last_row_of_every_positions_logits(
    runtime: OnnxCausalLM,
) -> None:
    ids = np.asarray([runtime.encode(PROMPT), runtime.encode(PROMPT)[::-1]], np.int64)
    every = _run(runtime, ids, 0)
    last = _run(runtime, ids, 1)
    assert every.shape == (2, ids.shape[1], runtime.vocab_size)
    assert last.shape == (2, 1, runtime.vocab_size)
    np.testing.assert_allclose(last[:, 0], every[:, -1], rtol=1e-4, atol=1e-4)
    assert (last[:, 0].argmax(-1) == every[:, -1].argmax(-1)).all()
    two = _run(runtime, ids, 2)
    np.testing.assert_allclose(two, every[:, -2:], rtol=1e-4, atol=1e-4)


def test_prompt_logprobs_still_see_every_position(runtime: OnnxCausalLM) -> None:
    ids = runtime.encode(PROMPT)
    out = runtime.run_batch(GenerationStep(prefill=(NewSequence(7, tuple(ids), prompt_logprobs=True),)))
    runtime.run_batch(GenerationStep(release=(7,)))
    every = torch.from_numpy(_run(runtime, np.asarray([ids], np.int64), 0)[0]).log_softmax(-1)
    expected = [float(every[i - 1, token]) for i, token in enumerate(ids) if i > 0]
    got = out.prompt_logprobs[7]
    assert len(got) == len(ids) - 1
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert runtime.decode([int(out.logits[0].argmax())]).strip()  # the first answer token
