"""Progress lines for the slow one-time steps of a first load, with the libraries' noise kept quiet.

Converting a GGUF file, exporting to ONNX and letting ONNX Runtime optimize a graph take from a
second to minutes, once per model (the result is cached). ``progress_step`` logs one INFO line
when such a step starts and one when it ends, with its duration::

    exporting SmolLM2-135M-Instruct to ONNX for text-generation-with-past (first load, cached afterwards) ...
    exporting SmolLM2-135M-Instruct to ONNX for text-generation-with-past ... done in 31.2 s

Meanwhile what the libraries print goes to the step's logger at DEBUG: warnings (tracer,
deprecation and future warnings: what the warning filters let through), their loggers' records
below ERROR (transformers, optimum and torch are lowered to ERROR unless the step's logger is
enabled for DEBUG) and text written to ``sys.stderr`` (progress bars). So at the default log
level the terminal shows only the progress lines; errors still surface (exceptions propagate,
library errors are logged, warnings that the filters turn into errors are raised).

The hooks are process-wide while any step runs (``warnings.showwarning``, ``sys.stderr``, the
library loggers' levels), but only the step's own thread is redirected: warnings and text of the
other threads pass through unchanged. Steps may run in several threads at once.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

LIBRARY_LOGGERS = ("transformers", "optimum", "torch")


@contextmanager
def progress_step(
    log: logging.Logger, what: str, why: str = "first load", *, imports: tuple[str, ...] = ()
) -> Iterator[None]:
    """Log ``what`` starting and done (with its duration) at INFO; quiet the libraries meanwhile.

    ``imports``: modules the step uses, imported first (inside the quiet section), so that their
    logging set-up (transformers sets its level when imported) does not undo the quieting.
    """
    log.info("%s (%s, cached afterwards) ...", what, why)
    started = time.perf_counter()
    with _QUIET.routed(log, imports):
        yield
    log.info("%s ... done in %.1f s", what, time.perf_counter() - started)


class _Quiet:
    """The process-wide hooks, installed by the first step that starts, removed by the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[int, list[logging.Logger]] = {}  # thread -> loggers of its open steps
        self._lines: dict[int, str] = {}  # thread -> text written to stderr, not yet a whole line
        self._showwarning: Any = None
        self._stderr: TextIO | None = None
        self._proxy: _StderrProxy | None = None
        self._levels: dict[str, int] = {}  # library logger -> its level before it was lowered

    @contextmanager
    def routed(self, log: logging.Logger, imports: tuple[str, ...]) -> Iterator[None]:
        thread = threading.get_ident()
        with self._lock:
            if not self._steps:
                self._install()
            self._steps.setdefault(thread, []).append(log)
        try:
            for module in imports:
                importlib.import_module(module)
            if not log.isEnabledFor(logging.DEBUG):
                with self._lock:
                    self._lower_libraries()
            yield
        finally:
            self._flush(thread)
            with self._lock:
                self._steps[thread].pop()
                if not self._steps[thread]:
                    del self._steps[thread]
                if not self._steps:
                    self._uninstall()

    def logger(self) -> logging.Logger | None:
        """The logger of the calling thread's innermost step, None outside steps."""
        steps = self._steps.get(threading.get_ident())
        return steps[-1] if steps else None

    def write(self, text: str) -> None:
        """Text a step's thread wrote to stderr: whole lines to DEBUG (of a ``\\r`` line, the last)."""
        thread = threading.get_ident()
        *lines, rest = (self._lines.get(thread, "") + text).split("\n")
        self._lines[thread] = rest
        for line in lines:
            self._debug(line)

    # -- hooks ---------------------------------------------------------------------------
    def _install(self) -> None:
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning
        self._stderr = sys.stderr
        self._proxy = _StderrProxy(sys.stderr, self)
        sys.stderr = self._proxy

    def _uninstall(self) -> None:
        if warnings.showwarning == self._warning:  # unless someone replaced it since
            warnings.showwarning = self._showwarning
        if sys.stderr is self._proxy:
            sys.stderr = self._stderr
        for name, level in self._levels.items():
            library = logging.getLogger(name)
            if library.level == logging.ERROR:  # unless the library or the app set it since
                library.setLevel(level)
        self._levels.clear()

    def _lower_libraries(self) -> None:
        for name in LIBRARY_LOGGERS:
            library = logging.getLogger(name)
            if library.getEffectiveLevel() < logging.ERROR:
                self._levels[name] = library.level
                library.setLevel(logging.ERROR)

    def _warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        log = self.logger()
        if log is None:  # another thread's warning: shown as it would have been
            self._showwarning(message, category, filename, lineno, file, line)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    def _flush(self, thread: int) -> None:
        rest = self._lines.pop(thread, "")
        if rest:
            self._debug(rest)

    def _debug(self, line: str) -> None:
        text = line.rsplit("\r", 1)[-1].rstrip()
        log = self.logger()
        if text and log is not None:
            log.debug("%s", text)


class _StderrProxy:
    """``sys.stderr`` while steps run: a step's thread writes to DEBUG, any other to the stream."""

    def __init__(self, stream: TextIO, quiet: _Quiet) -> None:
        self._stream = stream
        self._quiet = quiet

    def write(self, text: str) -> int:
        if self._quiet.logger() is None:
            return self._stream.write(text)
        self._quiet.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_QUIET = _Quiet()
