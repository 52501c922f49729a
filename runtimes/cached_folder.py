"""Folders made once from a source and kept while their fingerprint holds (the GGUF conversion,
the ONNX export, its quantized variants).

A folder is current when its ``fingerprint.json`` equals the expected one and its main file is
there. A new folder is written into a staging folder beside the target and renamed into place
(the old one renamed aside first, then removed), so a crash never leaves a half-written folder
that looks valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FINGERPRINT = "fingerprint.json"


def is_current(target: Path, main_file: str, expected: dict[str, Any]) -> bool:
    stamp = target / FINGERPRINT
    if not (stamp.is_file() and (target / main_file).is_file()):
        return False
    try:
        return bool(json.loads(stamp.read_text()) == expected)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def staged(target: Path, expected: dict[str, Any]) -> Iterator[Path]:
    """A staging folder to fill; when the block ends without an error it gets ``expected`` as its
    fingerprint and replaces ``target``. On an error nothing changes."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the folder is as readable as the store
    try:
        yield staging
        (staging / FINGERPRINT).write_text(json.dumps(expected, indent=2))
        old = parent / f".old-{target.name}-{os.getpid()}"
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
