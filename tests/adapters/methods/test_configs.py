"""Each method's config validates in __post_init__ and names the field at fault."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base_models import ModelKind
from adapters.methods import METHODS, TuningMethod, config_class, parse_config, trainer_class
from adapters.methods.classifier.config import ClassifierConfig
from adapters.methods.lora.config import LoraConfig
from adapters.methods.multitask_prompt_tuning.config import MultitaskPromptTuningConfig
from adapters.methods.prompt_tuning.config import PromptTuningConfig


def test_every_method_is_registered_with_its_config_trainer_and_base_kind() -> None:
    assert {m.value for m in TuningMethod} == {
        "prompt_tuning",
        "multitask_prompt_tuning",
        "lora",
        "classifier",
    }
    assert set(METHODS) == set(TuningMethod)
    expected = {
        TuningMethod.PROMPT_TUNING: PromptTuningConfig,
        TuningMethod.MULTITASK_PROMPT_TUNING: MultitaskPromptTuningConfig,
        TuningMethod.LORA: LoraConfig,
        TuningMethod.CLASSIFIER: ClassifierConfig,
    }
    for method, cls in expected.items():
        assert config_class(method) is cls
        assert trainer_class(method).kind is METHODS[method].kind
    assert METHODS[TuningMethod.CLASSIFIER].kind is ModelKind.ENCODER
    assert TuningMethod.parse("MULTITASK_PROMPT_TUNING") is TuningMethod.MULTITASK_PROMPT_TUNING  # Caikit
    with pytest.raises(ValueError, match="unknown tuning method 'p_tuning'; known: prompt_tuning"):
        TuningMethod.parse("p_tuning")


def test_caikit_names_and_defaults() -> None:
    config = parse_config(
        TuningMethod.PROMPT_TUNING,
        {
            "num_virtual_tokens": 20,
            "prompt_tuning_init_method": "TEXT",
            "prompt_tuning_init_text": "Classify the review:",
            "output_model_types": ["DECODER"],
            "num_epochs": 2,
            "learning_rate": 0.1,
            "batch_size": 4,
            "accumulate_steps": 2,
            "max_source_length": 64,
            "max_target_length": 16,
            "verbalizer": "Review: {{input}}\nSentiment:",
            "seed": 7,
        },
    )
    assert isinstance(config, PromptTuningConfig)
    assert config.output_model_types == ("DECODER",) and config.to_dict()["output_model_types"] == ["DECODER"]
    assert PromptTuningConfig().learning_rate == 0.3 and PromptTuningConfig().verbalizer == "{{input}}"
    assert LoraConfig().target_modules == ("q_proj", "v_proj")
    assert LoraConfig(target_modules="all-linear").target_modules == "all-linear"
    assert ClassifierConfig(labels=["b", "a"]).labels == ("b", "a")  # type: ignore[arg-type]


BAD: list[tuple[TuningMethod, dict[str, Any], str]] = [
    (TuningMethod.LORA, {"r": 0}, r"r must be within 1\.\.1024, got 0"),
    (TuningMethod.LORA, {"lora_dropout": 1.0}, r"lora_dropout must be within \[0\.0, 1\.0\)"),
    (TuningMethod.LORA, {"learning_rate": 0}, r"learning_rate must be within \(0\.0, 10\.0\]"),
    (TuningMethod.LORA, {"learning_rate": float("nan")}, "learning_rate must be within"),
    (TuningMethod.LORA, {"batch_size": "8"}, "batch_size must be an integer, got '8'"),
    (TuningMethod.LORA, {"num_epochs": True}, "num_epochs must be an integer, got True"),
    (TuningMethod.LORA, {"target_modules": []}, "target_modules must be a non-empty list"),
    (TuningMethod.LORA, {"target_modules": ["q_proj", "q_proj"]}, "target_modules holds duplicates"),
    (TuningMethod.LORA, {"max_steps": 0}, "max_steps must be within 1"),
    (TuningMethod.LORA, {"validation_fraction": 0.5}, r"validation_fraction must be within \[0\.0, 0\.5\)"),
    (TuningMethod.LORA, {"verbalizer": "no placeholder"}, "verbalizer must contain {{input}}"),
    (TuningMethod.LORA, {"verbalizer": "{{input}} {{output}}"}, "no other placeholder"),
    (TuningMethod.LORA, {"max_source_length": 0}, "max_source_length must be within 1"),
    (TuningMethod.LORA, {"lr": 0.1}, "unknown hyper-parameter 'lr' for method 'lora'; known: num_epochs"),
    (
        TuningMethod.PROMPT_TUNING,
        {"prompt_tuning_init_method": "TEXT"},
        "prompt_tuning_init_text is required",
    ),
    (
        TuningMethod.PROMPT_TUNING,
        {"prompt_tuning_init_method": "TEXT", "prompt_tuning_init_text": "  "},
        "prompt_tuning_init_text is required when prompt_tuning_init_method is TEXT",
    ),
    (TuningMethod.PROMPT_TUNING, {"prompt_tuning_init_method": "SOURCE"}, "must be one of RANDOM, TEXT"),
    (TuningMethod.PROMPT_TUNING, {"num_virtual_tokens": 0}, "num_virtual_tokens must be within 1..1024"),
    (
        TuningMethod.PROMPT_TUNING,
        {"output_model_types": ["ENCODER"]},
        r"must be \['DECODER'\] for a causal LM",
    ),
    (TuningMethod.PROMPT_TUNING, {"num_tasks": 2}, "unknown hyper-parameter 'num_tasks'"),
    (TuningMethod.MULTITASK_PROMPT_TUNING, {"num_tasks": 0}, "num_tasks must be within 1..4096"),
    (TuningMethod.MULTITASK_PROMPT_TUNING, {"num_ranks": 100}, "num_ranks must be within 1..64"),
    (TuningMethod.CLASSIFIER, {"head_only": "yes"}, "head_only must be true or false"),
    (TuningMethod.CLASSIFIER, {"labels": ["only"]}, "labels must name at least two classes"),
    (TuningMethod.CLASSIFIER, {"max_length": 1}, "max_length must be within 2..8192"),
    (TuningMethod.CLASSIFIER, {"verbalizer": "{{input}}"}, "unknown hyper-parameter 'verbalizer'"),
]


@pytest.mark.parametrize(("method", "values", "message"), BAD)
def test_bad_hyper_parameters_name_the_field(
    method: TuningMethod, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config(method, values)


def test_hyper_parameters_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="hyper-parameters must be an object, got list"):
        parse_config(TuningMethod.LORA, [1, 2])  # type: ignore[arg-type]
