"""run_tuning, the one entrypoint: cancel within one step, nothing written when a run does not finish,
specs checked before any model loads (naming what is wrong), specs from JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from adapters.methods import TuningMethod
from adapters.tuning import Progress, TuningCancelled, TuningSpec, check_spec, run_tuning
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL
from tests.adapters.tuning_data import FACTS, minilm_base, topics

TRAIN, HELD_OUT = topics()


def classifier_spec(output: Path, **hyperparameters: Any) -> TuningSpec:
    base = minilm_base()
    return TuningSpec(
        method="classifier",
        base_model_path=base.folder,
        base_model=base.model_id,
        train=TRAIN,
        output_dir=output,
        hyperparameters={"batch_size": 8, "num_epochs": 50, **hyperparameters},
    )


def test_should_stop_stops_within_one_optimizer_step(tmp_path: Path) -> None:
    seen: list[Progress] = []
    with pytest.raises(TuningCancelled) as cancelled:
        run_tuning(
            classifier_spec(tmp_path / "out"),
            on_progress=seen.append,
            should_stop=lambda: len(seen) >= 2,  # turns true during step 2
        )
    assert cancelled.value.step == 2 and [p.step for p in seen] == [1, 2]
    assert seen[0].total_steps == 50 * 14 and seen[1].eta_s > 0
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left


def test_a_stop_before_training_trains_nothing(tmp_path: Path) -> None:
    seen: list[Progress] = []
    with pytest.raises(TuningCancelled, match="cancelled after 0 optimizer steps"):
        run_tuning(classifier_spec(tmp_path / "out"), on_progress=seen.append, should_stop=lambda: True)
    assert seen == [] and list(tmp_path.iterdir()) == []


def test_a_failing_run_writes_nothing_and_keeps_torch_threads(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    spec = classifier_spec(tmp_path / "out", target_modules=["no_such_module"])
    with pytest.raises(
        ValueError, match=r"target_modules \['no_such_module'\] are not linear layers of this Bert.*query"
    ):
        run_tuning(spec)
    assert list(tmp_path.iterdir()) == [] and torch.get_num_threads() == threads


def test_output_dir_given_to_run_tuning_and_threads_restored(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    spec = TuningSpec(
        method=TuningMethod.CLASSIFIER,
        base_model_path=minilm_base().folder,
        train=TRAIN[:16],
        hyperparameters={"max_steps": 1, "batch_size": 16, "validation_fraction": 0.25},
        threads=2,
    )
    (tmp_path / "empty").mkdir()  # an empty folder may be the output
    result = run_tuning(spec, output_dir=tmp_path / "empty")
    assert result.output_dir == tmp_path / "empty" and "tuning.json" in result.files
    assert result.base_model == "model"  # the folder's name when no id is given
    assert set(result.metrics) == {
        "train_loss",
        "final_loss",
        "steps",
        "seconds",
        "s_per_step",
        "val_accuracy",
        "val_loss",
    }
    assert torch.get_num_threads() == threads


def test_check_spec_refuses_bad_specs_before_loading_anything(store: Path, tmp_path: Path) -> None:
    minilm = minilm_base().folder
    smollm = store / DEFAULT_GENERATION_MODEL / "hf-from-gguf"
    out = tmp_path / "out"

    def refused(message: str, **changes: Any) -> None:
        values: dict[str, Any] = {
            "method": "classifier",
            "base_model_path": minilm,
            "train": TRAIN,
            "output_dir": out,
        }
        with pytest.raises(ValueError, match=message):
            check_spec(TuningSpec(**{**values, **changes}))

    refused("method 'lora' tunes a causal language model; base model 'model' is an encoder", method="lora")
    refused(
        "method 'classifier' tunes an encoder; base model 'SmolLM2' is a causal language model",
        base_model_path=smollm,
        base_model="SmolLM2",
    )
    refused("unknown tuning method 'qlora'", method="qlora")
    refused("unknown hyper-parameter 'epochs'", hyperparameters={"epochs": 3})
    refused("train data is empty", train=[])
    refused(r"train\[0\]: field 'label' is missing", train=[{"text": "x"}])
    music = [{"text": "a", "label": "music"}]
    refused(r"validation\[0\]: field 'label' is 'music', not one of the labels", validation=music)
    fraction = {"validation_fraction": 0.1}
    refused(
        "give validation data or validation_fraction, not both", validation=HELD_OUT, hyperparameters=fraction
    )
    refused(r"threads must be within 1\.\.1024, got 0", threads=0)
    refused("output_dir is required", output_dir=None)
    out.mkdir()
    (out / "old.json").write_text("{}")
    refused("output directory .*out exists and is not empty")


def test_specs_from_json(store: Path, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FACTS))
    spec = TuningSpec.from_dict(
        {"method": "LORA", "base_model": DEFAULT_GENERATION_MODEL, "train": "train.jsonl",
         "validation": FACTS, "hyperparameters": {"r": 4}, "output_dir": "out", "threads": 2},
        relative_to=tmp_path,
        model_store=store,
    )  # fmt: skip
    assert spec.method is TuningMethod.LORA and spec.base_model == DEFAULT_GENERATION_MODEL
    assert spec.base_model_path == store / DEFAULT_GENERATION_MODEL / "hf-from-gguf"
    assert spec.train == tmp_path / "train.jsonl" and spec.validation == FACTS
    assert spec.output_dir == tmp_path / "out" and spec.threads == 2
    checked = check_spec(spec)
    assert len(checked.trainer.train_records) == 3  # type: ignore[attr-defined]

    by_path = TuningSpec.from_dict(
        {"method": "classifier", "base_model_path": str(minilm_base().folder), "base_model": "minilm",
         "train_path": str(tmp_path / "t.jsonl")}
    )  # fmt: skip
    assert by_path.base_model == "minilm" and by_path.train == tmp_path / "t.jsonl"
    in_store = TuningSpec.from_dict(
        {
            "method": "classifier",
            "base_model": DEFAULT_EMBEDDING_MODEL,
            "train": TRAIN,
            "model_store": str(store),
        }
    )
    assert in_store.base_model == DEFAULT_EMBEDDING_MODEL and in_store.output_dir is None

    base = {"method": "classifier", "base_model": DEFAULT_EMBEDDING_MODEL, "model_store": str(store)}
    for data, message in [
        ({**base, "train": TRAIN, "gate": {}}, "unknown spec field 'gate'; known: method"),
        ({**base}, "spec field 'train' is required"),
        (
            {**base, "train": TRAIN, "train_path": "x.jsonl"},
            "give spec field 'train' or 'train_path', not both",
        ),
        ({**base, "train": 3}, "spec field 'train' must be a list of records or a JSONL file path"),
        ({**base, "train": TRAIN, "hyperparameters": []}, "spec field 'hyperparameters' must be an object"),
        ({"base_model": DEFAULT_EMBEDDING_MODEL, "train": TRAIN}, "spec field 'method' is required"),
        ({"method": "lora", "train": TRAIN}, "spec field 'base_model' is required"),
        ({**base, "base_model": "nope", "train": TRAIN}, "base model 'nope' is neither a model folder"),
        ({**base, "train": TRAIN, "threads": "2"}, "threads must be an integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            TuningSpec.from_dict(data)
