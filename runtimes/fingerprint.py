"""Content fingerprints of model sources (a file or a folder), memoised by file stats.

A fingerprint is the sha256 over every file's relative path and content (hidden files left
out), so a cached export or conversion is redone exactly when the source changes. Hashing a
model is costly (hundreds of MB); within a process the result is reused while every file keeps
its size and modification time, so reloading an evicted model does not hash it again.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_Stats = tuple[tuple[str, int, int], ...]
_memo: dict[Path, tuple[_Stats, str]] = {}
_lock = threading.Lock()


def _files(source: Path) -> list[tuple[str, Path]]:
    if source.is_file():
        return [(source.name, source)]
    found = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source).as_posix()
        if not any(part.startswith(".") for part in relative.split("/")):
            found.append((relative, path))
    return found


def fingerprint(source: Path) -> str:
    files = _files(source)
    stats = tuple((name, p.stat().st_size, p.stat().st_mtime_ns) for name, p in files)
    key = source.resolve()
    with _lock:
        known = _memo.get(key)
    if known is not None and known[0] == stats:
        return known[1]
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _memo[key] = (stats, value)
    return value
