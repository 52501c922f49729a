"""LoRA on a causal LM: PEFT's ``LoraConfig`` (low-rank updates of the target projections)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.methods.base import check_target_modules
from adapters.methods.causal_lm_trainer import CausalLMTrainer
from adapters.methods.lora.config import LoraConfig


class LoraTrainer(CausalLMTrainer[LoraConfig]):
    def check_model(self, model: Any) -> None:
        check_target_modules(model, self.config.target_modules)

    def peft_config(self, folder: Path) -> Any:
        import peft

        config = self.config
        return peft.LoraConfig(
            task_type=peft.TaskType.CAUSAL_LM,
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules)
            if isinstance(config.target_modules, tuple)
            else config.target_modules,
        )
