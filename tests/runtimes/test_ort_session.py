"""ORT's optimized copy of a graph: made on the first load, used after, redone when stale."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtimes import ort_session
from runtimes.base import ThreadSettings
from runtimes.onnx_encoder import OnnxEncoder
from runtimes.ort_session import OPTIMIZED, STAMP
from tests.models import SOURCES, build_tiny_encoder

TEXTS = ["a short text", "and a somewhat longer one, with a comma"]


def load(source: Path, work: Path) -> OnnxEncoder:
    runtime = OnnxEncoder(source=source, work_dir=work, options={}, threads=ThreadSettings())
    runtime.load()
    return runtime


def embed(runtime: OnnxEncoder) -> np.ndarray:
    return np.asarray(runtime.run_batch(runtime.tokenize(TEXTS, None)))


def test_the_first_load_keeps_the_optimized_graph_and_later_loads_use_it(tmp_path: Path) -> None:
    source = build_tiny_encoder(SOURCES / "tiny-32-0", hidden=32, seed=0)
    first = load(source, tmp_path)
    folder = tmp_path / "onnx-feature-extraction"
    assert (folder / OPTIMIZED).is_file() and json.loads((folder / STAMP).read_text())["level"] == "extended"
    assert not list(folder.glob(".model.optimized*")), "no staging file may be left behind"
    made = (folder / OPTIMIZED).stat().st_mtime_ns
    second = load(source, tmp_path)
    assert first.size_bytes() == second.size_bytes()  # both count the optimized graph
    assert (folder / OPTIMIZED).stat().st_mtime_ns == made  # read, not rewritten
    assert np.array_equal(embed(first), embed(second))
    # the size counts the graph that was loaded, once
    assert second.size_bytes() < (folder / "model.onnx").stat().st_size + (folder / OPTIMIZED).stat().st_size


def test_a_changed_model_file_is_optimized_again(tmp_path: Path) -> None:
    source = build_tiny_encoder(SOURCES / "tiny-32-1", hidden=32, seed=1)
    reference = embed(load(source, tmp_path))
    folder = tmp_path / "onnx-feature-extraction"
    stamp = json.loads((folder / STAMP).read_text())
    model = folder / "model.onnx"
    os.utime(model, ns=(stamp["mtime_ns"] + 10**9, stamp["mtime_ns"] + 10**9))
    again = load(source, tmp_path)
    assert json.loads((folder / STAMP).read_text())["mtime_ns"] == model.stat().st_mtime_ns
    assert np.array_equal(reference, embed(again))


def test_a_copy_that_cannot_be_kept_still_serves(tmp_path: Path) -> None:
    source = build_tiny_encoder(SOURCES / "tiny-32-2", hidden=32, seed=2)
    reference = embed(load(source, tmp_path / "first"))
    shutil.copytree(tmp_path / "first", tmp_path / "blocked")
    folder = tmp_path / "blocked" / "onnx-feature-extraction"
    (folder / OPTIMIZED).unlink()
    (folder / STAMP).unlink()
    (folder / OPTIMIZED).mkdir()  # the rename into place fails (as on a read-only store, even for root)
    runtime = load(source, tmp_path / "blocked")
    assert np.array_equal(reference, embed(runtime))
    assert (folder / OPTIMIZED).is_dir() and not (folder / STAMP).exists()
    assert not list(folder.glob(".model.optimized*")), "the unkept copy must be removed"


def test_a_copy_that_ort_cannot_write_still_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_tiny_encoder(SOURCES / "tiny-32-3", hidden=32, seed=3)
    reference = embed(load(source, tmp_path / "first"))

    class Unwritable:  # the staging name points into a folder that does not exist
        hex = "missing-folder/copy"

    monkeypatch.setattr(ort_session.uuid, "uuid4", Unwritable)
    runtime = load(source, tmp_path / "second")
    assert np.array_equal(reference, embed(runtime))
    assert not (tmp_path / "second" / "onnx-feature-extraction" / OPTIMIZED).exists()
