"""Prompt tuning's hyper-parameters, with caikit-nlp's names (``tuning_config`` flattened in).

Defaults follow caikit-nlp's ``PeftPromptTuning.train`` where it has one (``learning_rate``
0.3, ``num_epochs`` 20, ``verbalizer`` "{{input}}", source / target lengths 256 / 128), except
``accumulate_steps`` (1, not 32: small data sets would get a step or two).
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.methods.causal_lm_config import CausalLMConfig
from adapters.methods.config import check_choice, check_int, check_names

INIT_METHODS = ("RANDOM", "TEXT")


@dataclass(frozen=True)
class PromptTuningConfig(CausalLMConfig):
    num_epochs: int = 20
    learning_rate: float = 0.3
    num_virtual_tokens: int = 8
    prompt_tuning_init_method: str = "RANDOM"
    prompt_tuning_init_text: str | None = None  # required with TEXT: the prompt's starting words
    output_model_types: tuple[str, ...] = ("DECODER",)  # Caikit's; a causal LM has a decoder only

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_virtual_tokens", self.num_virtual_tokens, 1, 1024)
        check_choice("prompt_tuning_init_method", self.prompt_tuning_init_method, INIT_METHODS)
        text = self.prompt_tuning_init_text
        if text is not None and not isinstance(text, str):
            raise ValueError(f"prompt_tuning_init_text must be a string, got {text!r}")
        if self.prompt_tuning_init_method == "TEXT" and not (text and text.strip()):
            raise ValueError("prompt_tuning_init_text is required when prompt_tuning_init_method is TEXT")
        types = check_names("output_model_types", self.output_model_types)
        if types != ("DECODER",):
            raise ValueError(f"output_model_types must be ['DECODER'] for a causal LM, got {list(types)}")
        object.__setattr__(self, "output_model_types", types)
