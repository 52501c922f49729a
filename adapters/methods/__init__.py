"""Tuning methods, one folder each (PEFT's ``tuners/<method>/`` layout), registered against one enum.

Each method has a ``config.py`` (a dataclass validated in ``__post_init__``; no torch import) and
a ``trainer.py`` (a ``MethodTrainer``; torch and peft are imported only when it is used).
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.base_models import ModelKind

if TYPE_CHECKING:
    from adapters.methods.base import MethodTrainer
    from adapters.methods.config import TrainingConfig


class TuningMethod(enum.Enum):
    PROMPT_TUNING = "prompt_tuning"
    MULTITASK_PROMPT_TUNING = "multitask_prompt_tuning"
    LORA = "lora"
    CLASSIFIER = "classifier"

    @classmethod
    def parse(cls, name: object) -> TuningMethod:
        """A method from its name (Caikit's upper-case ``tuning_type`` spelling works too)."""
        if isinstance(name, TuningMethod):
            return name
        if isinstance(name, str):
            try:
                return cls(name.lower())
            except ValueError:
                pass
        known = ", ".join(method.value for method in cls)
        raise ValueError(f"unknown tuning method {name!r}; known: {known}")


@dataclass(frozen=True)
class MethodEntry:
    config: str  # "module:Class" of its TrainingConfig subclass
    trainer: str  # "module:Class" of its MethodTrainer
    kind: ModelKind  # the base model it tunes


METHODS: dict[TuningMethod, MethodEntry] = {
    TuningMethod.PROMPT_TUNING: MethodEntry(
        "adapters.methods.prompt_tuning.config:PromptTuningConfig",
        "adapters.methods.prompt_tuning.trainer:PromptTuningTrainer",
        ModelKind.CAUSAL_LM,
    ),
    TuningMethod.MULTITASK_PROMPT_TUNING: MethodEntry(
        "adapters.methods.multitask_prompt_tuning.config:MultitaskPromptTuningConfig",
        "adapters.methods.multitask_prompt_tuning.trainer:MultitaskPromptTuningTrainer",
        ModelKind.CAUSAL_LM,
    ),
    TuningMethod.LORA: MethodEntry(
        "adapters.methods.lora.config:LoraConfig",
        "adapters.methods.lora.trainer:LoraTrainer",
        ModelKind.CAUSAL_LM,
    ),
    TuningMethod.CLASSIFIER: MethodEntry(
        "adapters.methods.classifier.config:ClassifierConfig",
        "adapters.methods.classifier.trainer:ClassifierTrainer",
        ModelKind.ENCODER,
    ),
}


def _load(target: str) -> Any:
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def config_class(method: TuningMethod) -> type[TrainingConfig]:
    cls: type[TrainingConfig] = _load(METHODS[method].config)
    return cls


def trainer_class(method: TuningMethod) -> type[MethodTrainer[Any]]:
    cls: type[MethodTrainer[Any]] = _load(METHODS[method].trainer)
    return cls


def parse_config(method: TuningMethod, hyperparameters: Mapping[str, Any]) -> TrainingConfig:
    """The method's validated config (ValueError naming the field on a bad or unknown value)."""
    return config_class(method).from_dict(hyperparameters, method=method.value)
