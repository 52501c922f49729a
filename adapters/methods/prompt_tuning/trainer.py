"""Prompt tuning: PEFT's ``PromptTuningConfig`` on a causal LM (only the virtual tokens train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.methods.causal_lm_trainer import CausalLMTrainer
from adapters.methods.prompt_tuning.config import PromptTuningConfig


class PromptTuningTrainer(CausalLMTrainer[PromptTuningConfig]):
    def peft_config(self, folder: Path) -> Any:
        import peft

        config = self.config
        text = config.prompt_tuning_init_method == "TEXT"
        return peft.PromptTuningConfig(
            task_type=peft.TaskType.CAUSAL_LM,
            num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init=peft.PromptTuningInit(config.prompt_tuning_init_method),
            prompt_tuning_init_text=config.prompt_tuning_init_text if text else None,
            tokenizer_name_or_path=str(folder) if text else None,
        )
