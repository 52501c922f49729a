"""What a tuning method implements: check its data (cheap, before any model loads), prepare
(load the base, wrap it for tuning, tokenize), evaluate and save. The optimizer loop is shared
(``adapters.methods.loop``); ``adapters.tuning.run_tuning`` drives the steps in order."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from adapters.base_models import ModelKind
from adapters.methods.config import TrainingConfig
from adapters.methods.data import RawRecord

ConfigT = TypeVar("ConfigT", bound=TrainingConfig)

# The file beside the adapter's weights that says how to use them (method, base model, verbalizer,
# labels or task ids, hyper-parameters, metrics). Not "adapter.json": the adapter store's own.
TUNING_FILE = "tuning.json"


@dataclass
class Prepared:
    """A model ready to train and its batches (``train_batches`` an epoch)."""

    model: Any  # a torch.nn.Module (PEFT-wrapped): its methods are typed loosely
    train: Iterable[Mapping[str, Any]]
    train_batches: int
    validation: Iterable[Mapping[str, Any]] | None
    tokenizer: Any


def check_target_modules(model: Any, targets: tuple[str, ...] | str) -> None:
    """Every LoRA target names a linear layer of ``model`` (PEFT's own error names no module)."""
    import torch

    if isinstance(targets, str):  # "all-linear"
        return
    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    missing = [target for target in targets if target not in linear]
    if missing:
        raise ValueError(
            f"target_modules {missing} are not linear layers of this {type(model).__name__}; "
            f"it has {', '.join(sorted(linear))}"
        )


class MethodTrainer(abc.ABC, Generic[ConfigT]):
    """One tuning method: built with its validated config."""

    kind: ClassVar[ModelKind]  # the base model it tunes

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abc.abstractmethod
    def check_data(self, train: list[RawRecord], validation: list[RawRecord]) -> None:
        """Parse the records (a ValueError names the record and field); keep them for ``prepare``."""

    @abc.abstractmethod
    def prepare(self, folder: Path) -> Prepared:
        """Load the base model of this Hugging Face folder, make it tunable, tokenize the data."""

    @abc.abstractmethod
    def evaluate(self, prepared: Prepared) -> dict[str, float]:
        """Metrics on the validation batches (only called when there are some)."""

    @abc.abstractmethod
    def save(self, prepared: Prepared, folder: Path) -> dict[str, Any]:
        """Write the adapter (safetensors + JSON only) into ``folder``; return what ``tuning.json``
        should say about it beyond the method, base model, hyper-parameters and metrics."""
