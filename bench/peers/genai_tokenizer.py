"""The ByteLevel decoder fix for ORT GenAI on a tokenizer.json converted from GGUF.

transformers' GGUF conversion gives SmolLM2's BPE tokenizer a composite decoder (ByteFallback,
Fuse, Replace of "\u2581", ByteLevel). ORT GenAI's tokenizer (onnxruntime-extensions) reads that
decoder as a SentencePiece-style tokenizer: it encodes every space-led word to -1 and decodes raw
"\u0120". The model is a plain byte-level BPE, so a plain ByteLevel decoder is the right one; the
pre-tokenizer, vocabulary and merges are left as they are. Standard library only: this module is
imported by the main venv (tests, bench/generation_peers.py) and by bench/peers/genai_worker.py in
bench/.venv-genai.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BYTE_LEVEL: dict[str, Any] = {
    "type": "ByteLevel",
    "add_prefix_space": True,
    "trim_offsets": True,
    "use_regex": True,
}


def needs_fix(tokenizer: dict[str, Any]) -> bool:
    """True when a byte-level BPE tokenizer has a decoder other than a plain ByteLevel one."""
    pre = tokenizer.get("pre_tokenizer") or {}
    byte_level = pre.get("type") == "ByteLevel" or any(
        p.get("type") == "ByteLevel" for p in pre.get("pretokenizers", []) if isinstance(p, dict)
    )
    decoder = tokenizer.get("decoder") or {}
    return byte_level and decoder.get("type") != "ByteLevel"


def fix_tokenizer_file(path: Path) -> bool:
    """Rewrite ``path`` (a tokenizer.json) with a plain ByteLevel decoder; False when none was needed."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not needs_fix(data):
        return False
    data["decoder"] = dict(BYTE_LEVEL)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return True
