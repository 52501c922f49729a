"""The sequence classifier's hyper-parameters.

``head_only`` trains the fresh classification head alone (the encoder stays frozen); otherwise
LoRA adapts the encoder's attention (``target_modules``, BERT's ``query`` / ``value`` by default)
while the head trains in full. ``labels`` fixes the label set and its order (ids follow it);
by default it is the sorted set of the training labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.methods.config import TrainingConfig, check_float, check_int, check_names

BERT_ATTENTION = ("query", "value")


@dataclass(frozen=True)
class ClassifierConfig(TrainingConfig):
    learning_rate: float = 1e-3
    batch_size: int = 16
    head_only: bool = False
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = BERT_ATTENTION
    max_length: int = 128  # tokens of a text (longer texts are truncated)
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.head_only, bool):
            raise ValueError(f"head_only must be true or false, got {self.head_only!r}")
        check_int("r", self.r, 1, 1024)
        check_int("lora_alpha", self.lora_alpha, 1, 65_536)
        check_float("lora_dropout", self.lora_dropout, 0.0, 1.0, high_open=True)
        object.__setattr__(self, "target_modules", check_names("target_modules", self.target_modules))
        check_int("max_length", self.max_length, 2, 8192)
        if self.labels is not None:
            labels = check_names("labels", self.labels)
            if len(labels) < 2:
                raise ValueError(f"labels must name at least two classes, got {list(labels)}")
            object.__setattr__(self, "labels", labels)
