"""Hyper-parameters shared by the methods that tune a causal LM on ``{"input", "output"}`` records.

``verbalizer`` is Caikit's template: the prompt the model sees is the verbalizer with
``{{input}}`` replaced by the record's input (serving applies the same template to the request's
text). ``max_source_length`` / ``max_target_length`` bound the prompt and output tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.methods.config import TrainingConfig, check_int

PLACEHOLDER = "{{input}}"
_PLACEHOLDERS = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def check_verbalizer(verbalizer: object) -> None:
    if not isinstance(verbalizer, str):
        raise ValueError(f"verbalizer must be a string, got {verbalizer!r}")
    names = set(_PLACEHOLDERS.findall(verbalizer))
    if PLACEHOLDER not in verbalizer or names != {"input"}:
        raise ValueError(
            f"verbalizer must contain {PLACEHOLDER} and no other placeholder, got {verbalizer!r}"
        )


def render_verbalizer(verbalizer: str, text: str) -> str:
    return verbalizer.replace(PLACEHOLDER, text)


@dataclass(frozen=True)
class CausalLMConfig(TrainingConfig):
    verbalizer: str = PLACEHOLDER
    max_source_length: int = 256
    max_target_length: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        check_verbalizer(self.verbalizer)
        check_int("max_source_length", self.max_source_length, 1, 32_768)
        check_int("max_target_length", self.max_target_length, 1, 32_768)
