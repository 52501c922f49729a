"""An encoder whose model runs on a remote KServe v2 server; tokenization stays here.

    {"id": "minilm-remote", "runtime": "kserve-v2", "source": ".",
     "tasks": ["embedding", "tokenization"],
     "settings": {"url": "grpc://minilm-predictor:8081", "model_name": "minilm",
                  "head": "embedding"}}

The model folder (``source``) keeps the tokenizer files (tokenizer.json, special_tokens_map.json,
optionally tokenizer_config.json / sentence_bert_config.json for the length limit), so the
gateway keeps tokenization, batching and multiplexing on its side and sends only INT64
``input_ids`` / ``attention_mask`` (and ``token_type_ids`` when the remote takes them). The
remote answers one float row per input row (``taskgate kserve`` serves exactly that).

Settings: ``url`` (http://host:port for REST, grpc://host:port for gRPC), ``model_name``,
``model_version``, ``output`` (the output tensor; default: the remote's only output, else
``embedding`` / ``probabilities`` by head), ``head`` (embedding | classification), ``labels``
(a classification head's, in the remote's order), ``activation`` (none | softmax | sigmoid:
applied here to a classification remote that answers logits), ``max_tokens``, ``timeout_s``
(bound of a call when the request has none), ``binary`` (REST: binary tensors, default true),
``io_threads`` (threads of its own, default 4).

Each call is bounded by the batch's deadline; every failure of the remote is
``RuntimeUnavailable`` with the remote's reason. ``load()`` checks the remote is ready and that
its tensors fit, and fails with what does not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.base import EncoderRuntime, RuntimeUnavailable, ThreadSettings, Token, TokenizedBatch, TokenRow
from runtimes.encoder_tokenizer import EncoderTokenizer, max_tokens_of, read_json
from runtimes.remote_v2_wire import RemoteModel, V2Client, client_for

log = logging.getLogger(__name__)

HEADS = ("embedding", "classification")
ACTIVATIONS = ("none", "softmax", "sigmoid")
REQUIRED_INPUTS = ("input_ids", "attention_mask")
OPTIONAL_INPUTS = ("token_type_ids",)


def check_option(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` suits the remote setting ``name`` (one of OPTIONS)."""
    if name in ("url", "model_name", "model_version", "output"):
        if not isinstance(value, str) or len(value) > 512 or (not value and name != "model_version"):
            raise ValueError(f"setting {name!r} must be a non-empty string of at most 512 characters")
        if name == "url" and not value.startswith(("http://", "https://", "grpc://")):
            raise ValueError(f"setting 'url' must start with http://, https:// or grpc://, got {value!r}")
    elif name in ("head", "activation"):
        allowed = HEADS if name == "head" else ACTIVATIONS
        if value not in allowed:
            raise ValueError(f"setting {name!r} must be one of {', '.join(allowed)}, got {value!r}")
    elif name == "labels":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError("setting 'labels' must be a non-empty list of label names")
    elif name == "timeout_s":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 3600:
            raise ValueError(
                f"setting 'timeout_s' must be a number of seconds within (0, 3600], got {value!r}"
            )
    elif name == "binary":
        if not isinstance(value, bool):
            raise ValueError(f"setting 'binary' must be true or false, got {value!r}")
    elif name == "io_threads":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
            raise ValueError(f"setting 'io_threads' must be an integer within 1..64, got {value!r}")
    else:
        raise ValueError(f"{name!r} is not a setting of the remote v2 runtime")


OPTIONS: tuple[str, ...] = ("url", "model_name", "model_version", "output", "head", "labels")
OPTIONS += ("activation", "timeout_s", "binary", "io_threads")


@dataclass(frozen=True)
class RemoteOptions:
    url: str
    model_name: str
    model_version: str = ""
    output: str = ""
    head: str = "embedding"
    labels: tuple[str, ...] = ()
    activation: str = "none"
    timeout_s: float = 30.0
    binary: bool = True
    io_threads: int = 4

    @classmethod
    def parse(cls, options: dict[str, Any]) -> RemoteOptions:
        """The remote's settings of a manifest (other settings, e.g. batching, are the gateway's)."""
        values = {name: options[name] for name in OPTIONS if name in options}
        for name, value in values.items():
            check_option(name, value)
        for name in ("url", "model_name"):
            if name not in values:
                raise ValueError(f"the kserve-v2 runtime needs the setting {name!r}")
        head = values.get("head", "embedding")
        if (head == "classification") != ("labels" in values):
            raise ValueError("a classification head needs 'labels'; an embedding head takes none")
        if "labels" in values:
            values["labels"] = tuple(values["labels"])
        return cls(**values)


class RemoteV2Encoder(EncoderRuntime):
    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        self.options = RemoteOptions.parse(options)
        self.head = self.options.head
        self.labels = self.options.labels
        self.io_threads = self.options.io_threads
        config = read_json(source / "config.json")
        self.max_tokens = int(options.get("max_tokens") or max_tokens_of(source, config))
        self._text = EncoderTokenizer(source, self.max_tokens)
        self._client: V2Client | None = None
        self._output = self.options.output
        self._width = 0  # values per output row, 0 while unknown

    # -- Runtime -------------------------------------------------------------------------
    def load(self) -> None:
        self._text.load()
        self.pad_id = self._text.pad_id
        options = self.options
        client = client_for(options.url, options.model_name, options.model_version, options.binary)
        try:
            client.check_ready(options.timeout_s)
            self._check(client.metadata(options.timeout_s), client.where)
        except BaseException:
            client.close()
            raise
        self._client = client
        sent = ", ".join(self.input_names)
        log.info(
            "remote model %s at %s: sending %s, reading %r",
            options.model_name,
            client.where,
            sent,
            self._output,
        )

    def size_bytes(self) -> int:
        return self._text.size_bytes()  # the weights live remotely

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run_batch(self, batch: TokenizedBatch) -> np.ndarray:
        client = self._client
        if client is None:
            raise RuntimeError("model is not loaded")
        timeout = self.options.timeout_s
        if batch.deadline is not None:
            timeout = min(timeout, batch.deadline - time.monotonic())
            if timeout <= 0:
                raise RuntimeUnavailable("the request's deadline passed before the remote was called")
        tensors = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        rows = client.infer({name: tensors[name] for name in self.input_names}, self._output, timeout)
        width = self._width or rows.shape[-1]
        if rows.shape != (batch.rows, width):
            shape = f"{list(rows.shape)}; expected [{batch.rows}, {width}]"
            raise client.unavailable(f"output {self._output!r} has shape {shape}")
        return _activate(rows, self.options.activation)

    # -- EncoderRuntime ------------------------------------------------------------------
    def tokenizer_ready(self, truncate_to: int | None) -> bool:
        return self._text.ready(truncate_to)

    def tokenize_rows(self, texts: list[str], truncate_to: int | None) -> list[TokenRow | ValueError]:
        return self._text.rows(texts, truncate_to)

    def tokens(self, text: str) -> list[Token]:
        return self._text.tokens(text)

    # -- helpers -------------------------------------------------------------------------
    def _check(self, remote: RemoteModel, where: str) -> None:
        """Fit our tensors to the remote's signature, or say what does not fit."""
        prefix = f"remote model {self.options.model_name!r} at {where}"
        inputs = {t.name: t for t in remote.inputs}
        for name in REQUIRED_INPUTS:
            if name not in inputs:
                raise ValueError(
                    f"{prefix} has no input {name!r} (its inputs: {', '.join(inputs) or 'none'})"
                )
        for name in (*REQUIRED_INPUTS, *OPTIONAL_INPUTS):
            if name in inputs and inputs[name].datatype != "INT64":
                raise ValueError(f"{prefix}: input {name!r} is {inputs[name].datatype}; Taskgate sends INT64")
        self.input_names = tuple(n for n in (*REQUIRED_INPUTS, *OPTIONAL_INPUTS) if n in inputs)
        outputs = {t.name: t for t in remote.outputs}
        if not self._output:
            default = "probabilities" if self.head == "classification" else "embedding"
            self._output = next(iter(outputs)) if len(outputs) == 1 else default
        spec = outputs.get(self._output)
        if spec is None:
            raise ValueError(f"{prefix} has no output {self._output!r} (its outputs: {', '.join(outputs)})")
        if spec.datatype not in ("FP16", "FP32", "FP64") or len(spec.shape) != 2:
            raise ValueError(
                f"{prefix}: output {spec.name!r} is {spec.datatype} {list(spec.shape)}; "
                "Taskgate reads one float row per input row ([-1, width])"
            )
        self._width = max(spec.shape[1], 0)
        if self.head == "classification" and self._width and self._width != len(self.labels):
            raise ValueError(
                f"{prefix}: output {spec.name!r} has {self._width} classes; {len(self.labels)} labels given"
            )


def _activate(rows: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softmax":
        shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-rows))).astype(np.float32)
    return rows
