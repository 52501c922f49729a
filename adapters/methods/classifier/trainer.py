"""A sequence classifier on an encoder: ``AutoModelForSequenceClassification`` from the encoder's
folder with a fresh head for the data's labels, wrapped by PEFT LoRA (``TaskType.SEQ_CLS``, which
trains and saves the head as a ``modules_to_save`` module). Validation reports accuracy and loss.

``head_only`` trains the head alone: the LoRA matrices stay frozen at PEFT's initialisation, whose
B matrices are zero, so they change nothing; the output has the same form either way, and one
loader serves both. Written files: PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``
(LoRA weights and the head) and ``labels.json`` (``labels`` in class order, ``id2label``,
``label2id``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base_models import ModelKind
from adapters.methods.base import MethodTrainer, Prepared, check_target_modules
from adapters.methods.classifier.config import ClassifierConfig
from adapters.methods.data import ClassificationRecord, RawRecord, check_labels, classification_records

if TYPE_CHECKING:
    import torch

LABELS_FILE = "labels.json"


class ClassifierTrainer(MethodTrainer[ClassifierConfig]):
    kind = ModelKind.ENCODER

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        self.labels: tuple[str, ...] = ()
        self.train_records: list[ClassificationRecord] = []
        self.validation_records: list[ClassificationRecord] = []

    def check_data(self, train: list[RawRecord], validation: list[RawRecord]) -> None:
        self.train_records = classification_records(train, "train")
        seen = sorted({record.label for record in self.train_records})
        self.labels = self.config.labels or tuple(seen)
        if len(self.labels) < 2:
            raise ValueError(f"train data holds one label ({seen[0]!r}); a classifier needs at least two")
        check_labels(train, self.train_records, self.labels)
        if validation:
            self.validation_records = classification_records(validation, "validation")
            check_labels(validation, self.validation_records, self.labels)

    def prepare(self, folder: Path) -> Prepared:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]
        model: Any = AutoModelForSequenceClassification.from_pretrained(
            str(folder),
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={label: index for index, label in enumerate(self.labels)},
            use_safetensors=True,
        )
        import peft

        check_target_modules(model, self.config.target_modules)
        lora = peft.LoraConfig(
            task_type=peft.TaskType.SEQ_CLS,
            r=self.config.r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=list(self.config.target_modules),
        )
        model = peft.get_peft_model(model, lora)
        if self.config.head_only:
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.requires_grad = False  # B = 0: the encoder stays as it was
        generator = torch.Generator().manual_seed(self.config.seed)
        train = self._loader(tokenizer, self.train_records, generator)
        validation = (
            self._loader(tokenizer, self.validation_records, None) if self.validation_records else None
        )
        return Prepared(model, train, len(train), validation, tokenizer)

    def evaluate(self, prepared: Prepared) -> dict[str, float]:
        import torch

        if prepared.validation is None:
            raise ValueError("no validation data to evaluate on")
        prepared.model.eval()
        right, seen, loss = 0, 0, 0.0
        with torch.inference_mode():
            for batch in prepared.validation:
                output = prepared.model(**batch)
                rows = int(batch["labels"].shape[0])
                right += int((output.logits.argmax(-1) == batch["labels"]).sum())
                loss += float(output.loss) * rows
                seen += rows
        return {"val_accuracy": right / seen, "val_loss": loss / seen}

    def save(self, prepared: Prepared, folder: Path) -> dict[str, Any]:
        prepared.model.save_pretrained(str(folder), safe_serialization=True)
        labels = {
            "labels": list(self.labels),
            "id2label": {str(index): label for index, label in enumerate(self.labels)},
            "label2id": {label: index for index, label in enumerate(self.labels)},
        }
        (folder / LABELS_FILE).write_text(json.dumps(labels, indent=2))
        return {
            "labels": list(self.labels),
            "head_only": self.config.head_only,
            "max_length": self.config.max_length,
        }

    def _loader(
        self, tokenizer: Any, records: list[ClassificationRecord], generator: torch.Generator | None
    ) -> torch.utils.data.DataLoader[Any]:
        from torch.utils.data import DataLoader
        from transformers import DataCollatorWithPadding

        ids = {label: index for index, label in enumerate(self.labels)}
        features = []
        for record in records:
            encoded = tokenizer(record.text, truncation=True, max_length=self.config.max_length)
            features.append({**encoded, "labels": ids[record.label]})
        return DataLoader(
            features,  # type: ignore[arg-type]
            batch_size=self.config.batch_size,
            shuffle=generator is not None,
            generator=generator,
            collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"),
        )
