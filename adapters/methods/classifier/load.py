"""Load a tuned classifier for inference: the base encoder's folder plus the tuning output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.methods.classifier.trainer import LABELS_FILE


def read_labels(adapter_folder: Path) -> list[str]:
    labels: list[str] = json.loads((adapter_folder / LABELS_FILE).read_text())["labels"]
    return labels


def load_tuned_classifier(base_folder: Path, adapter_folder: Path) -> tuple[Any, list[str]]:
    """(model in eval mode, labels by class id), through PEFT (LoRA and the trained head)."""
    from transformers import AutoModelForSequenceClassification

    labels = read_labels(adapter_folder)
    model: Any = AutoModelForSequenceClassification.from_pretrained(
        str(base_folder),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        use_safetensors=True,
    )
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter_folder))
    model.eval()
    return model, labels
