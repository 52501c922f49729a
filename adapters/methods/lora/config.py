"""LoRA's hyper-parameters (PEFT ``LoraConfig`` names) on top of the causal-LM ones.

``target_modules`` defaults to the attention query and value projections of LLaMA-style models
(``q_proj``, ``v_proj``: PEFT's own default for LLaMA); ``"all-linear"`` targets every linear
layer but the output head.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.methods.causal_lm_config import CausalLMConfig
from adapters.methods.config import check_float, check_int, check_names

LLAMA_ATTENTION = ("q_proj", "v_proj")


@dataclass(frozen=True)
class LoraConfig(CausalLMConfig):
    learning_rate: float = 2e-4
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | str = LLAMA_ATTENTION

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("r", self.r, 1, 1024)
        check_int("lora_alpha", self.lora_alpha, 1, 65_536)
        check_float("lora_dropout", self.lora_dropout, 0.0, 1.0, high_open=True)
        if self.target_modules != "all-linear":
            object.__setattr__(self, "target_modules", check_names("target_modules", self.target_modules))
