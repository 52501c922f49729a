"""Tokenizers shared by every model whose tokenizer.json has the same content.

Building a ``tokenizers.Tokenizer`` from JSON costs ~40 ms (MiniLM's vocabulary); a process that
multiplexes many models of one family would pay it on every load. Tokenizers are read-only once
configured, so one instance per (content, truncation limit) serves all of them, from any thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from runtimes.fingerprint import fingerprint

MAX_ENTRIES = 64
_cache: OrderedDict[tuple[str, int | None], Any] = OrderedDict()
_lock = threading.Lock()


def shared_tokenizer(tokenizer_json: Path, truncate_at: int | None = None) -> Any:
    """A tokenizer without padding, truncating at ``truncate_at`` tokens (None: never)."""
    key = (fingerprint(tokenizer_json), truncate_at)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    from tokenizers import Tokenizer

    base = _base(tokenizer_json, key[0])
    tokenizer = base if truncate_at is None else Tokenizer.from_str(base.to_str())
    if truncate_at is not None:
        tokenizer.enable_truncation(max_length=truncate_at)
    with _lock:
        _cache[key] = tokenizer
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return tokenizer


def _base(tokenizer_json: Path, content: str) -> Any:
    with _lock:
        base = _cache.get((content, None))
    if base is not None:
        return base
    from tokenizers import Tokenizer

    base = Tokenizer.from_file(str(tokenizer_json))
    base.no_truncation()
    base.no_padding()
    with _lock:
        _cache[(content, None)] = base
    return base
