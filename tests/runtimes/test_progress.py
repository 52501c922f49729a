"""The one-time steps of a first load log their progress, and the libraries' noise stays at DEBUG."""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from pathlib import Path

import pytest

from runtimes.base import ThreadSettings
from runtimes.onnx_encoder import OnnxEncoder
from runtimes.progress import progress_step
from tests.models import SOURCES, build_tiny_encoder

log = logging.getLogger("runtimes.test_progress")


def _load(source: Path, work: Path) -> OnnxEncoder:
    runtime = OnnxEncoder(source=source, work_dir=work, options={}, threads=ThreadSettings())
    runtime.load()
    return runtime


def test_a_fresh_export_logs_its_steps_and_a_cached_one_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = build_tiny_encoder(SOURCES / "tiny-32-0", hidden=32, seed=0)
    caplog.set_level(logging.INFO)
    stderr = sys.stderr
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")  # every warning the export raises, even those pytest ignores
        _load(source, tmp_path / "tiny")
    assert escaped == []
    assert sys.stderr is stderr  # the hooks are gone
    lines = [record.getMessage() for record in caplog.records]  # INFO and above, from any logger
    assert lines[0] == "exporting tiny to ONNX for feature-extraction (first load, cached afterwards) ..."
    assert re.fullmatch(r"exporting tiny to ONNX for feature-extraction \.\.\. done in \d+\.\d s", lines[1])
    assert lines[2] == "optimizing the ONNX graph of tiny (first load, cached afterwards) ..."
    assert re.fullmatch(r"optimizing the ONNX graph of tiny \.\.\. done in \d+\.\d s", lines[3])
    assert len(lines) == 4

    caplog.clear()
    _load(source, tmp_path / "tiny")
    assert caplog.records == []  # the export and the optimized graph are cached


def _noisy() -> None:
    warnings.warn("a tracer warning", UserWarning, stacklevel=1)
    logging.getLogger("torch.onnx").warning("a library's warning")
    print("Converting...:  50%|#####", end="\r", file=sys.stderr)
    print("Converting...: 100%|##########", file=sys.stderr)


def test_library_noise_goes_to_debug_and_errors_still_surface(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    torch_level = logging.getLogger("torch").level
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        caplog.set_level(logging.INFO)
        with progress_step(log, "quiet step"):
            _noisy()
            logging.getLogger("torch.onnx").error("a library's error")
        lines = [record.getMessage() for record in caplog.records]
        assert lines[:2] == ["quiet step (first load, cached afterwards) ...", "a library's error"]
        assert re.fullmatch(r"quiet step \.\.\. done in \d+\.\d s", lines[2]) and len(lines) == 3
        assert logging.getLogger("torch").level == torch_level  # restored

        caplog.clear()
        caplog.set_level(logging.DEBUG)
        with progress_step(log, "debug step", "source changed"):
            _noisy()
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any("UserWarning: a tracer warning" in line for line in debug)
        assert "Converting...: 100%|##########" in debug  # the last state of the bar's line
        assert "a library's warning" in caplog.text  # not lowered at DEBUG

        caplog.clear()
        caplog.set_level(logging.INFO)
        with pytest.raises(RuntimeError, match="broken"), progress_step(log, "failing step"):
            raise RuntimeError("broken")
        assert [r.getMessage() for r in caplog.records] == [
            "failing step (first load, cached afterwards) ..."
        ]  # no done line; the error propagates
    assert escaped == []
    assert capsys.readouterr().err == ""


def test_other_threads_pass_through_while_a_step_runs(
    recwarn: pytest.WarningsRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    inside, done = threading.Event(), threading.Event()

    def step() -> None:
        with progress_step(log, "slow step"):
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=step)
    thread.start()
    try:
        assert inside.wait(10)
        print("another thread's text", file=sys.stderr)
        warnings.warn("another thread's warning", UserWarning, stacklevel=1)
    finally:
        done.set()
        thread.join()
    assert [str(w.message) for w in recwarn] == ["another thread's warning"]
    assert capsys.readouterr().err == "another thread's text\n"
