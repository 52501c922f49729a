"""ONNX Runtime encoder: embeddings (sentence-transformers pooling) and sequence classification.

The model folder is a Hugging Face folder (optionally with sentence-transformers' modules.json,
1_Pooling/ and sentence_bert_config.json). It is exported once with Optimum and cached (and,
with ``"quantization": "int8"``, quantized once beside it, see runtimes.quantize); the
tokenizer is the folder's ``tokenizer.json`` run by the ``tokenizers`` library directly
(runtimes.encoder_tokenizer, shared with the remote v2 encoder).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from runtimes import quantize
from runtimes.base import EncoderRuntime, ThreadSettings, Token, TokenizedBatch, TokenRow
from runtimes.encoder_tokenizer import EncoderTokenizer, InputTooLong, max_tokens_of, read_json
from runtimes.ort_session import OPTIMIZED, create_session

log = logging.getLogger(__name__)
__all__ = ["InputTooLong", "OnnxEncoder"]  # InputTooLong: where callers have always imported it


class OnnxEncoder(EncoderRuntime):
    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        self._source = source
        self._work_dir = work_dir
        self._threads = threads
        config = read_json(source / "config.json")
        architectures = config.get("architectures") or []
        is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
        self.head = "classification" if is_classifier else "embedding"
        self.labels = _labels(config) if is_classifier else ()
        self._multi_label = config.get("problem_type") == "multi_label_classification"
        self.max_tokens = int(options.get("max_tokens") or max_tokens_of(source, config))
        self._pooling = _pooling_mode(source)
        self._normalize = _has_normalize(source)
        self._quantization = quantize.check_choice("onnx-encoder", options.get(quantize.SETTING))
        self._min_cosine = quantize.check_cosine(
            quantize.MIN_COSINE_SETTING, options.get(quantize.MIN_COSINE_SETTING), quantize.DEFAULT_MIN_COSINE
        )
        self._min_row_cosine = quantize.check_cosine(
            quantize.MIN_ROW_COSINE_SETTING,
            options.get(quantize.MIN_ROW_COSINE_SETTING),
            quantize.DEFAULT_MIN_ROW_COSINE,
        )
        self.quantization_report: dict[str, Any] = {}
        self._session: Any = None
        self._text = EncoderTokenizer(source, self.max_tokens)  # the export's copy once loaded
        self._size = 0

    # -- Runtime -------------------------------------------------------------------------
    def load(self) -> None:
        import onnxruntime as ort

        from runtimes.onnx_export import export_cached

        task = "text-classification" if self.head == "classification" else "feature-extraction"
        folder = export_cached(self._source, self._work_dir, task)
        if self._quantization == "int8":
            if self.head != "embedding":
                raise ValueError("quantization 'int8' is measured on embeddings: an embedding model only")
            folder, self.quantization_report = quantize.int8_variant(
                folder,
                pooling=self._pooling,
                max_tokens=self.max_tokens,
                min_cosine=self._min_cosine,
                min_row_cosine=self._min_row_cosine,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = shared_pool_threads(self._threads)
        options.inter_op_num_threads = self._threads.inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session, graph = create_session(folder / "model.onnx", options)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        text = EncoderTokenizer(folder, self.max_tokens)
        text.load()
        self._text = text
        self.pad_id = text.pad_id
        skipped = {"model.onnx", OPTIMIZED} - {graph.name}  # the graph not loaded holds nothing
        self._size = sum(
            p.stat().st_size
            for p in folder.iterdir()
            if p.is_file() and p.name not in skipped and not p.name.startswith(".")
        )

    def size_bytes(self) -> int:
        if self._size:
            return self._size
        return sum(p.stat().st_size for p in self._source.rglob("*") if p.is_file())

    def unload(self) -> None:
        self._session = None

    def run_batch(self, batch: TokenizedBatch) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("model is not loaded")
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        outputs = self._session.run(None, {name: feeds[name] for name in self.input_names})
        first = np.asarray(outputs[0], dtype=np.float32)
        if self.head == "classification":
            return _probabilities(first, self._multi_label)
        return self._pool(first, batch.attention_mask)

    # -- EncoderRuntime ------------------------------------------------------------------
    def tokenizer_ready(self, truncate_to: int | None) -> bool:
        return self._text.ready(truncate_to)

    def tokenize_rows(self, texts: list[str], truncate_to: int | None) -> list[TokenRow | ValueError]:
        return self._text.rows(texts, truncate_to)

    def tokens(self, text: str) -> list[Token]:
        return self._text.tokens(text)

    # -- helpers -------------------------------------------------------------------------
    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if self._normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32)


def shared_pool_threads(threads: ThreadSettings) -> int:
    """The session's intra-op pool: the threads of all the model workers (workers x intra-op
    threads, at most the CPUs this process may use), shared by the batches running at once. ORT
    splits a call's work over the pool and the calling thread, so threads follow the load: a
    batch running alone (one client) uses every thread, concurrent batches share them. One session
    either way: a second session with its own thread count would hold the weights twice (+105 MB
    RSS for MiniLM, measured)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(threads.intra_op_threads, min(threads.intra_op_threads * threads.model_workers, cpus))


def _probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _labels(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    return tuple(str(id2label[key]) for key in sorted(id2label, key=int))


def _pooling_mode(source: Path) -> str:
    pooling = read_json(source / "1_Pooling" / "config.json")
    return "cls" if pooling.get("pooling_mode_cls_token") else "mean"


def _has_normalize(source: Path) -> bool:
    modules = source / "modules.json"
    if not modules.is_file():
        return False
    entries = json.loads(modules.read_text())
    return any(str(m.get("type", "")).endswith("Normalize") for m in entries)
