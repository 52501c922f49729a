"""Hyper-parameters every tuning method shares, validated when the config is made.

Names follow caikit-nlp's ``PeftPromptTuning.train`` (``num_epochs``, ``learning_rate``,
``batch_size``, ``accumulate_steps``, ``seed``) so that a Caikit request maps onto a config
field by field. A config is built from a plain dict with ``from_dict``: an unknown key, a value
of the wrong type or out of range is a ``ValueError`` that names the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"within {low}..{high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def check_float(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or value != value:  # NaN compares false both ways
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be within {left}{low}, {high}{right}, got {value}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_names(name: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of non-empty strings (given as a list or a tuple), as a tuple."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{name} must be a non-empty list of strings, got {value!r}")
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{name} must hold non-empty strings only, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} holds duplicates: {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class TrainingConfig:
    """The optimizer loop's settings (each method's config adds its own and may change defaults)."""

    num_epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 8
    accumulate_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    seed: int = 42
    max_steps: int | None = None  # stop after this many optimizer steps (None: every epoch)
    warmup_steps: int = 0  # linear warm-up, then linear decay to zero
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    validation_fraction: float = 0.0  # held out of the training data when no validation data

    def __post_init__(self) -> None:
        check_int("num_epochs", self.num_epochs, 1, 10_000)
        check_float("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_int("accumulate_steps", self.accumulate_steps, 1, 4096)
        check_int("seed", self.seed, 0, 2**32 - 1)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1, 10_000_000)
        check_int("warmup_steps", self.warmup_steps, 0, 10_000_000)
        check_float("weight_decay", self.weight_decay, 0.0, 1.0)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, 1e6, low_open=True)
        check_float("validation_fraction", self.validation_fraction, 0.0, 0.5, high_open=True)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, method: str) -> Self:
        """The config of ``values``; unknown names and bad values are ValueErrors naming the field."""
        if not isinstance(values, Mapping):
            raise ValueError(f"hyper-parameters must be an object, got {type(values).__name__}")
        known = cls.field_names()
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter {', '.join(map(repr, unknown))} for method {method!r}; "
                f"known: {', '.join(known)}"
            )
        try:
            return cls(**values)
        except TypeError as exc:  # a dataclass argument problem the checks above did not catch
            raise ValueError(f"hyper-parameters for method {method!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in vars(self).items()}
