"""Exports and conversions run in a worker process, never in the serving process.

Exporting to ONNX (torch tracing, Optimum) and dequantizing a GGUF file hold the GIL for long
stretches, use gigabytes for a while, and can crash; in the serving process they stalled the
event loop by 25-180 ms at a time (the loop-lag metric). So they run in one worker process:

    folder = run_in_worker(_export, source, staging, task)

- started on first use (``spawn``: a fresh interpreter, no copy of the server's threads), with
  a lower CPU priority and one thread per library, so serving keeps the cores it needs;
- kept while work comes (importing torch and Optimum costs seconds), stopped after
  ``IDLE_S`` without work, so its memory goes back;
- its output (tracer warnings, progress bars) goes to /dev/null unless this process logs at
  DEBUG; a failure comes back as the exception it raised; a crash (out of memory, a signal)
  becomes ``WorkerDied`` and the next call starts a new worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
IDLE_S = 60.0
NICENESS = 10


class WorkerDied(RuntimeError):
    """The worker process ended in the middle of a job (out of memory, killed)."""


_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_busy = 0
_idle_timer: threading.Timer | None = None


def run_in_worker(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` (a module-level function, picklable arguments) in the worker; blocks."""
    pool = _acquire()
    try:
        return pool.submit(fn, *args).result()
    except BrokenProcessPool:
        _discard(pool)
        raise WorkerDied(
            f"the export worker process died while running {fn.__name__} (out of memory?)"
        ) from None
    finally:
        _release()


def shutdown() -> None:
    """Stop the worker now (tests, shutdown); the next call starts another."""
    with _lock:
        pool = _pool
    if pool is not None:
        _discard(pool)


def _acquire() -> ProcessPoolExecutor:
    global _pool, _busy, _idle_timer
    with _lock:
        if _idle_timer is not None:
            _idle_timer.cancel()
            _idle_timer = None
        if _pool is None:
            debug = logging.getLogger("runtimes").isEnabledFor(logging.DEBUG)
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_prepare_worker,
                initargs=(debug,),
            )
        _busy += 1
        return _pool


def _release() -> None:
    global _busy, _idle_timer
    with _lock:
        _busy -= 1
        if _busy == 0 and _pool is not None:
            _idle_timer = threading.Timer(IDLE_S, _stop_if_idle, args=(_pool,))
            _idle_timer.daemon = True
            _idle_timer.start()


def _stop_if_idle(pool: ProcessPoolExecutor) -> None:
    with _lock:
        if _busy or _pool is not pool:
            return
    _discard(pool)


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def _prepare_worker(debug: bool) -> None:
    """In the worker, before any library loads: quiet, polite, single-threaded."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    if not debug:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
