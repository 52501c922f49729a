"""The v2 tensor signature of a hosted encoder, and requests' tensors turned into a batch.

The signature works at the runtime (tensor) level, so a gateway can keep tokenization on its
side: INT64 ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when the model reads
them) of shape [-1, -1] in, one FP32 row per input row out, named ``embedding`` for an embedding
head and ``probabilities`` for a classification head (the runtime's output: softmax or sigmoid
already applied, labels in the model's order). A BYTES ``text`` input [-1] is accepted too and
tokenized here, so a plain KServe user can send text.

Nothing here imports kserve: inputs arrive as (name, datatype, numpy array) triples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtimes.base import EncoderRuntime, TokenizedBatch, TokenRow, pad_rows

TEXT = "text"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INTEGER_TYPES = ("INT64", "INT32")
MAX_ROWS = 1024  # rows of one request; more is refused (the model runs them as one batch)


class BadTensors(ValueError):
    """A request's tensors do not fit the signature; the message says what to change."""


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    output: Tensor

    @classmethod
    def of(cls, runtime: EncoderRuntime, width: int) -> Signature:
        """The signature of a loaded encoder whose output rows hold ``width`` values."""
        read = runtime.input_names
        tokens = tuple(Tensor(name, "INT64", (-1, -1)) for name in TOKEN_INPUTS if name in read)
        name = "probabilities" if runtime.head == "classification" else "embedding"
        return cls((*tokens, Tensor(TEXT, "BYTES", (-1,))), Tensor(name, "FP32", (-1, width)))

    @property
    def token_inputs(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs if t.name != TEXT)


def batch_from_tensors(
    inputs: list[tuple[str, str, np.ndarray]], runtime: EncoderRuntime, signature: Signature
) -> TokenizedBatch:
    """A padded batch from a request's inputs: either token tensors or one ``text`` tensor."""
    names = [name for name, _, _ in inputs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise BadTensors(f"input {duplicated[0]!r} is given more than once")
    known = {t.name for t in signature.inputs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BadTensors(f"unknown input {unknown[0]!r}; this model takes: {', '.join(sorted(known))}")
    by_name = {name: (datatype, array) for name, datatype, array in inputs}
    if TEXT in by_name:
        if len(by_name) > 1:
            raise BadTensors("send either a 'text' input or token tensors (input_ids, ...), not both")
        return _from_text(*by_name[TEXT], runtime)
    if "input_ids" not in by_name:
        raise BadTensors("input 'input_ids' is required (or send a BYTES 'text' input)")
    ids = _token_matrix("input_ids", *by_name["input_ids"], runtime.max_tokens)
    mask = np.ones_like(ids)
    types = np.zeros_like(ids)
    if "attention_mask" in by_name:
        mask = _token_matrix("attention_mask", *by_name["attention_mask"], runtime.max_tokens)
        if not np.isin(mask, (0, 1)).all():
            raise BadTensors("attention_mask must hold only 0 and 1")
    if "token_type_ids" in by_name:
        types = _token_matrix("token_type_ids", *by_name["token_type_ids"], runtime.max_tokens)
    for name, matrix in (("attention_mask", mask), ("token_type_ids", types)):
        if matrix.shape != ids.shape:
            raise BadTensors(f"{name} has shape {list(matrix.shape)}; input_ids has {list(ids.shape)}")
    counts = mask.sum(axis=1)
    if (counts == 0).any():
        raise BadTensors(f"row {int(np.argmin(counts))} of attention_mask has no token (all zeros)")
    return TokenizedBatch(ids, mask, types, tuple(int(count) for count in counts))


def _token_matrix(name: str, datatype: str, array: np.ndarray, max_tokens: int) -> np.ndarray:
    if datatype not in INTEGER_TYPES:
        raise BadTensors(f"input {name!r} must be INT64 (or INT32), got {datatype}")
    if array.ndim != 2:
        raise BadTensors(f"input {name!r} must have shape [rows, tokens], got {list(array.shape)}")
    rows, width = array.shape
    if not 1 <= rows <= MAX_ROWS:
        raise BadTensors(f"input {name!r} has {rows} rows; send 1 to {MAX_ROWS}")
    if not 1 <= width <= max_tokens:
        raise BadTensors(f"input {name!r} has {width} tokens per row; this model takes 1 to {max_tokens}")
    if (array < 0).any():
        raise BadTensors(f"input {name!r} holds negative values")
    return np.ascontiguousarray(array, dtype=np.int64)


def _from_text(datatype: str, array: np.ndarray, runtime: EncoderRuntime) -> TokenizedBatch:
    if datatype != "BYTES":
        raise BadTensors(f"input 'text' must be BYTES, got {datatype}")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise BadTensors(f"input 'text' must have shape [rows], got {list(array.shape)}")
    if not 1 <= len(array) <= MAX_ROWS:
        raise BadTensors(f"input 'text' has {len(array)} rows; send 1 to {MAX_ROWS}")
    texts = []
    for index, value in enumerate(array.tolist()):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise BadTensors(f"text[{index}] is not valid UTF-8") from None
        if not text.strip():
            raise BadTensors(f"text[{index}] is empty")
        texts.append(text)
    rows = runtime.tokenize_rows(texts, None)
    for index, row in enumerate(rows):
        if isinstance(row, ValueError):  # over the limit: this door has no truncation parameter
            raise BadTensors(f"text[{index}] is longer than the model's limit of {runtime.max_tokens} tokens")
    return pad_rows([row for row in rows if isinstance(row, TokenRow)], runtime.pad_id)
