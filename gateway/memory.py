"""Process memory: resident set size, measured model sizes, and giving freed memory back.

The registry's budget is about what models really hold. File sizes understate it (an ONNX
Runtime session holds ~1.7x its weights file for small encoders, measured here), so a load that
runs alone is measured as the growth of the resident set, and the ratio of that to the model's
file size is remembered per runtime kind for loads that overlap (whose growth can't be told
apart). glibc keeps freed memory in its arenas; ``trim_heap`` hands it back after an unload.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


def trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return


class SizeMeter:
    """Measures how much a load adds to the process, learning a per-kind ratio to file size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._ratio: dict[str, float] = {}

    def measure(self, kind: str, file_bytes: Callable[[], int], load: Callable[[], T]) -> tuple[T, int]:
        """Run ``load``; return its result and the model's size.

        ``file_bytes`` is read after the load, since a load may produce the files it serves
        (an ONNX export) that differ in size from the source it started from.
        """
        with self._lock:
            self._active += 1
            alone = self._active == 1
        before = rss_bytes()
        try:
            result = load()
        finally:
            with self._lock:
                self._active -= 1
                alone = alone and self._active == 0
        grown = rss_bytes() - before
        files = file_bytes()
        with self._lock:
            if alone and files > 0 and grown > 0:
                ratio = max(1.0, grown / files)
                old = self._ratio.get(kind)
                self._ratio[kind] = ratio if old is None else 0.7 * old + 0.3 * ratio
            ratio = self._ratio.get(kind, 1.0)
        return result, max(files, int(files * ratio))
