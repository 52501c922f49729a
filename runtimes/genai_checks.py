"""The probe of an ORT GenAI int4 graph against the builder's fp32 graph (``runtimes.genai_graph``).

The same questions and verdict as ``runtimes.quantize_checks``' int4 probe: each graph answers
``PROBE_QUESTIONS`` greedily, one prompt at a time, through the inputs
``runtimes.genai_generation`` drives (``input_ids``, a right-padded ``attention_mask``, the
past caches and ``logits_rows``), and int4 passes when it keeps every fact fp32 gets right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtimes.genai_graph import LOGITS_ROWS, cache_geometry
from runtimes.quantize_checks import PROBE_TOKENS, chat_prompts, judge_answers


def probe_report(folder: Path, fp32: Path, int4: Path, eos_token: str | None) -> dict[str, Any]:
    prompts, eos_id, tokenizer = chat_prompts(folder, eos_token)
    geometry = cache_geometry(folder)
    report = judge_answers(
        tokenizer,
        greedy_answers(fp32, geometry, prompts, eos_id),
        greedy_answers(int4, geometry, prompts, eos_id),
    )
    report["fp32_bytes"] = sum(p.stat().st_size for p in fp32.parent.glob("model.onnx*"))
    report["quantized_bytes"] = sum(p.stat().st_size for p in int4.parent.glob("model.onnx*"))
    return report


def greedy_answers(
    model: Path, geometry: tuple[int, int], prompts: list[list[int]], eos_id: int, tokens: int = PROBE_TOKENS
) -> list[list[int]]:
    """Greedy answers, one prompt at a time; ``geometry`` is (kv heads, head size)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    past = [name for name in inputs if name.startswith("past_key_values.")]
    outputs = ["logits", *(name.replace("past_key_values.", "present.", 1) for name in past)]
    heads, head_dim = geometry
    dtype = np.float16 if inputs[past[0]].type == "tensor(float16)" else np.float32
    answers = []
    for prompt in prompts:
        cache = [np.zeros((1, heads, 0, head_dim), dtype)] * len(past)
        ids = np.asarray([prompt], np.int64)
        answer: list[int] = []
        total = 0
        while len(answer) < tokens:
            total += ids.shape[1]
            feeds = {
                "input_ids": ids,
                "attention_mask": np.ones((1, total), np.int64),
                LOGITS_ROWS: np.asarray([ids.shape[1] - 1], np.int64),
                **dict(zip(past, cache, strict=True)),
            }
            result = session.run(outputs, feeds)
            token = int(result[0][0, -1].argmax())
            if token == eos_id:
                break
            answer.append(token)
            cache = result[1:]
            ids = np.asarray([[token]], np.int64)
        answers.append(answer)
    return answers
