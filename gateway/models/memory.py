"""Process memory: resident set size, measured model sizes, and giving freed memory back.

The registry's budget is about what models really hold. File sizes understate it (an ONNX
Runtime session holds ~1.7x its weights file for small encoders, measured here), so a load that
runs alone on a quiet process is measured as the growth of the resident set (except a kind's
first load, which also pays for the runtime library's one-time set-up), and the ratio of
that to the model's file size is remembered per runtime kind (clamped to [1, MAX_RATIO]) for
loads that overlap other loads or requests, whose growth can't be told apart from theirs.
glibc keeps freed memory in its arenas; ``trim_heap`` hands it back after an unload and
``limit_arenas`` keeps the arenas few, so that what one thread freed another reuses. A load's
peak (the resident high-water mark, reset before it) is learned the same way.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024  # allocations this large get their own mapping, returned when freed
MAX_RATIO = 4.0  # a learned size or load peak is at most this many times the model's files


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    """The resident set's high-water mark (since start or the last ``reset_peak_rss``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_bytes()


def reset_peak_rss() -> None:
    """Start a new high-water mark at the current resident set (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return


def trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold; False if not glibc.

    Call before the worker threads start. A fixed threshold stops glibc from raising it after
    each large free (up to 32 MB), which would put a reloaded model's tensors on the heap, where
    what an unload frees is scattered and stays resident.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, count)) and bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


class SizeMeter:
    """Measures what a load adds to the process, learning per-kind ratios to the files' size.

    Two ratios: what a loaded model keeps (resident growth once the load's garbage is trimmed)
    and what its load needs at its peak (parsing a model holds its file and the tensors built
    from it at once), which the registry reserves while the load runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._ratio: dict[str, float] = {}
        self._peak: dict[str, float] = {}
        self._seen: set[str] = set()  # kinds loaded once: the first load also pays one-time costs

    def peak_ratio(self, kind: str) -> float:
        """How many times its files' size a load of this kind needs while it runs (learned)."""
        with self._lock:
            return max(self._peak.get(kind, 1.0), self._ratio.get(kind, 1.0))

    def measure(
        self,
        kind: str,
        file_bytes: Callable[[], int],
        load: Callable[[], T],
        activity: Callable[[], tuple[int, int]],
    ) -> tuple[T, int]:
        """Run ``load``; return its result and the model's size.

        ``file_bytes`` is read after the load, since a load may produce the files it serves
        (an ONNX export) that differ in size from the source it started from. ``activity`` gives
        (requests running, requests started so far); only a load that no other load and no
        request overlapped teaches the ratios.
        """
        activity_before = activity()
        with self._lock:
            self._active += 1
            alone = self._active == 1
        if alone:
            trim_heap()  # free memory already resident would hide what the load takes
            reset_peak_rss()
        before = rss_bytes()
        try:
            result = load()
        finally:
            with self._lock:
                self._active -= 1
                alone = alone and self._active == 0
        peak = peak_rss_bytes() - before
        trim_heap()  # what the load freed (the parsed file) goes back; what stays is the model
        grown = rss_bytes() - before
        files = file_bytes()
        with self._lock:
            quiet = activity_before[0] == 0 and activity() == activity_before
            first = kind not in self._seen
            self._seen.add(kind)
            if alone and quiet and not first and files > 0 and grown > 0:
                self._learn(self._ratio, kind, grown / files)
                self._learn(self._peak, kind, peak / files)
            ratio = self._ratio.get(kind, 1.0)
        return result, max(files, int(files * ratio))

    @staticmethod
    def _learn(ratios: dict[str, float], kind: str, sample: float) -> None:
        sample = min(MAX_RATIO, max(1.0, sample))
        old = ratios.get(kind)
        ratios[kind] = sample if old is None else 0.7 * old + 0.3 * sample
