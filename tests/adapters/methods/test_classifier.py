"""The MiniLM classifier: a fresh head + LoRA reaches >= 0.9 held-out accuracy on a synthetic
two-topic set, and the written adapter reloads to the same predictions; head-only leaves the
encoder as it was."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from adapters.methods.classifier.load import load_tuned_classifier
from adapters.tuning import Progress, TuningSpec, run_tuning
from tests.adapters.tuning_data import minilm_base, topics


def _accuracy(model: object, folder: Path, rows: list[dict[str, str]], labels: list[str]) -> float:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.inference_mode():
        predicted = model(**batch).logits.argmax(-1).tolist()  # type: ignore[operator]
    return sum(labels[p] == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)


def test_lora_classifier_reaches_090_held_out_accuracy(tmp_path: Path) -> None:
    base = minilm_base()
    train, held_out = topics()
    seen: list[Progress] = []
    output = tmp_path / "topics"
    result = run_tuning(
        TuningSpec(
            method="classifier",
            base_model_path=base.folder,
            base_model=base.model_id,
            train=train,
            validation=held_out,
            output_dir=output,
            hyperparameters={"num_epochs": 3, "batch_size": 16, "learning_rate": 5e-3},
        ),
        on_progress=seen.append,
    )
    assert len(seen) == 21 and seen[-1].epoch == 3  # 112 records / 16 = 7 steps an epoch
    assert sum(p.loss for p in seen[-7:]) < sum(p.loss for p in seen[:7])  # the last epoch beats the first
    assert result.metrics["val_accuracy"] >= 0.9, result.metrics
    assert sorted(p.name for p in output.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "labels.json",
        "tuning.json",
    ]
    labels = json.loads((output / "labels.json").read_text())
    assert labels == {
        "labels": ["cooking", "sports"],
        "id2label": {"0": "cooking", "1": "sports"},
        "label2id": {"cooking": 0, "sports": 1},
    }
    with safe_open(str(output / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert any("classifier" in name for name in names) and any("lora_A" in name for name in names)

    model, loaded_labels = load_tuned_classifier(base.folder, output)
    assert loaded_labels == ["cooking", "sports"]
    assert _accuracy(model, base.folder, held_out, loaded_labels) == result.metrics["val_accuracy"]


def test_head_only_trains_the_head_and_leaves_the_encoder(tmp_path: Path) -> None:
    base = minilm_base()
    train, held_out = topics()
    output = tmp_path / "head"
    result = run_tuning(
        TuningSpec(
            method="classifier",
            base_model_path=base.folder,
            train=train,
            validation=held_out,
            output_dir=output,
            hyperparameters={"head_only": True, "max_steps": 7, "batch_size": 16, "learning_rate": 1e-2},
        )
    )
    assert result.metrics["steps"] == 7 and 0 <= result.metrics["val_accuracy"] <= 1
    about = json.loads((output / "tuning.json").read_text())
    assert about["head_only"] is True and about["labels"] == ["cooking", "sports"]
    with safe_open(str(output / "adapter_model.safetensors"), "pt") as weights:
        lora_b = [weights.get_tensor(name) for name in weights.keys() if "lora_B" in name]  # noqa: SIM118
        head = [weights.get_tensor(name) for name in weights.keys() if "classifier" in name]  # noqa: SIM118
    assert lora_b and all(int(t.count_nonzero()) == 0 for t in lora_b)  # the encoder is unchanged
    assert head and any(int(t.count_nonzero()) > 0 for t in head)
    model, labels = load_tuned_classifier(base.folder, output)
    # a few steps leave rows near the boundary: padding per batch may tip one of them
    accuracy = _accuracy(model, base.folder, held_out, labels)
    assert abs(accuracy - result.metrics["val_accuracy"]) <= 1 / len(held_out)
