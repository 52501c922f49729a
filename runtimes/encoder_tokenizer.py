"""An encoder's tokenization, shared by every engine that keeps it local (ONNX, remote v2).

A model folder's ``tokenizer.json`` is run by the ``tokenizers`` library directly: rows for a
batch (each text, or an error for a text over the limit), and tokens with character offsets.
Truncating tokenizers are built once per limit and shared (runtimes.tokenizer_cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtimes.base import Token, TokenRow
from runtimes.tokenizer_cache import shared_tokenizer


class InputTooLong(ValueError):
    """A text has more tokens than allowed and truncation was not requested."""


class EncoderTokenizer:
    """Tokenizes for an encoder whose sequences hold at most ``max_tokens`` tokens.

    Construction reads nothing; ``load()`` builds the base tokenizer and reads the pad token.
    """

    def __init__(self, folder: Path, max_tokens: int) -> None:
        self.folder = folder
        self.max_tokens = max_tokens
        self.pad_id = 0
        self._json = folder / "tokenizer.json"
        self._by_limit: dict[int, Any] = {}  # truncation limit -> tokenizer
        self._base: Any = None

    def load(self) -> None:
        if not self._json.is_file():
            raise FileNotFoundError(f"{self._json} is missing: an encoder needs its tokenizer.json")
        self._by_limit = {}
        self._base = shared_tokenizer(self._json)
        pad_token = read_json(self.folder / "special_tokens_map.json").get("pad_token")
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content")
        pad_id = self._base.token_to_id(pad_token) if isinstance(pad_token, str) else None
        self.pad_id = pad_id if pad_id is not None else 0

    def size_bytes(self) -> int:
        return self._json.stat().st_size if self._json.is_file() else 0

    def ready(self, truncate_to: int | None) -> bool:
        """Whether tokenizing at this limit is cheap now (no tokenizer to build first)."""
        return self._limit(truncate_to) in self._by_limit

    def rows(self, texts: list[str], truncate_to: int | None) -> list[TokenRow | ValueError]:
        limit = self._limit(truncate_to)
        rows: list[TokenRow | ValueError] = []
        for index, encoding in enumerate(self._tokenizer(limit).encode_batch(texts)):
            if truncate_to is None and encoding.overflowing:
                where = f"input {index}" if len(texts) > 1 else "the input"
                rows.append(
                    InputTooLong(
                        f"{where} is longer than the model's limit of {self.max_tokens} tokens; "
                        "shorten it or set truncate_input_tokens to truncate it"
                    )
                )
            else:
                rows.append(TokenRow(tuple(encoding.ids), tuple(encoding.type_ids)))
        return rows

    def tokens(self, text: str) -> list[Token]:
        if self._base is None:
            raise RuntimeError("the tokenizer is not loaded")
        encoding = self._base.encode(text)
        return [
            Token(text=text[start:end], start=start, end=end)
            for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
            if not special
        ]

    def _limit(self, truncate_to: int | None) -> int:
        return self.max_tokens if truncate_to is None else max(2, min(truncate_to, self.max_tokens))

    def _tokenizer(self, limit: int) -> Any:
        """A tokenizer truncating at ``limit`` (shared with models of the same tokenizer).

        Remembered per limit here too: the shared cache is keyed by the file's fingerprint, a
        stat per call, which costs more than tokenizing a short text.
        """
        found = self._by_limit.get(limit)
        if found is None:
            if len(self._by_limit) >= 8:  # callers choose limits: keep a few, as the shared cache does
                self._by_limit.clear()
            found = self._by_limit[limit] = shared_tokenizer(self._json, limit)
        return found


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def max_tokens_of(source: Path, config: dict[str, Any]) -> int:
    """The longest sequence a model folder's files allow (sentence-transformers' setting, the
    tokenizer's, or the position table), special tokens included."""
    st_config = read_json(source / "sentence_bert_config.json")
    if st_config.get("max_seq_length"):
        return int(st_config["max_seq_length"])
    tokenizer_max = read_json(source / "tokenizer_config.json").get("model_max_length")
    positions = int(config.get("max_position_embeddings") or 512)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < positions:
        return tokenizer_max
    return positions
