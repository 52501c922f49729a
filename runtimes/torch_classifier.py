"""A tuned sequence classifier served with PyTorch: an encoder's Hugging Face folder plus a PEFT
adapter (LoRA and/or a trained head), merged once at load.

Options: ``adapter`` (the adapter version's folder: ``adapter_config.json``,
``adapter_model.safetensors`` and ``labels.json`` listing the labels in class order). The base
folder's ``tokenizer.json`` tokenizes, as for the ONNX encoder; the output of a row is its class
probabilities (softmax over the logits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.base import EncoderRuntime, ThreadSettings, Token, TokenizedBatch, TokenRow
from runtimes.encoder_tokenizer import EncoderTokenizer, max_tokens_of, read_json

LABELS = "labels.json"


def read_labels(folder: Path) -> tuple[str, ...]:
    """The class labels of a classifier adapter, in class order."""
    try:
        data = json.loads((folder / LABELS).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: cannot read {LABELS}: {exc}") from None
    labels = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{folder}: {LABELS} must list at least two label names")
    return tuple(labels)


class TorchClassifier(EncoderRuntime):
    head = "classification"

    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        adapter = options.get("adapter")
        if not isinstance(adapter, str) or not adapter:
            raise ValueError("a torch-classifier needs the 'adapter' folder in its settings")
        self._source = source
        self._adapter = Path(adapter)
        self._threads = threads
        self.labels = read_labels(self._adapter)
        config = read_json(source / "config.json")
        self.max_tokens = int(options.get("max_tokens") or max_tokens_of(source, config))
        self._text = EncoderTokenizer(source, self.max_tokens)
        self._model: Any = None
        self._size = 0

    def load(self) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        torch.set_num_threads(self._threads.intra_op_threads)
        base: Any = AutoModelForSequenceClassification.from_pretrained(
            str(self._source),
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={label: index for index, label in enumerate(self.labels)},
        )
        model = PeftModel.from_pretrained(base, str(self._adapter)).merge_and_unload()
        model.eval()
        self._text.load()
        self.pad_id = self._text.pad_id
        self._model = model
        self._size = sum(p.numel() * p.element_size() for p in model.parameters())

    def size_bytes(self) -> int:
        if self._size:
            return self._size
        return sum(p.stat().st_size for p in self._source.rglob("*") if p.is_file())

    def unload(self) -> None:
        self._model = None

    def run_batch(self, batch: TokenizedBatch) -> np.ndarray:
        import torch

        model = self._model
        if model is None:
            raise RuntimeError("model is not loaded")
        torch.set_num_threads(self._threads.intra_op_threads)
        with torch.inference_mode():
            logits = model(
                input_ids=torch.from_numpy(batch.input_ids),
                attention_mask=torch.from_numpy(batch.attention_mask),
                token_type_ids=torch.from_numpy(batch.token_type_ids),
            ).logits
        return torch.softmax(logits.float(), dim=-1).numpy().astype(np.float32)

    def tokenizer_ready(self, truncate_to: int | None) -> bool:
        return self._text.ready(truncate_to)

    def tokenize_rows(self, texts: list[str], truncate_to: int | None) -> list[TokenRow | ValueError]:
        return self._text.rows(texts, truncate_to)

    def tokens(self, text: str) -> list[Token]:
        return self._text.tokens(text)
