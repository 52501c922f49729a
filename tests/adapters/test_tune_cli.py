"""``taskgate tune SPEC.json --output DIR`` as a user runs it: a real process."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.methods.loop import Progress
from adapters.tune_cli import ProgressPrinter
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL
from tests.adapters.tuning_data import topics

ROOT = Path(__file__).resolve().parents[2]
TRAIN, HELD_OUT = topics()


def tune(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "tune", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "TASKGATE_MODEL_STORE": ""},
        capture_output=True,
        text=True,
        timeout=240,
    )


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_tune_a_classifier_end_to_end(store: Path, tmp_path: Path) -> None:
    (tmp_path / "held-out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HELD_OUT))
    spec = write_spec(
        tmp_path,
        {
            "method": "classifier",
            "base_model": DEFAULT_EMBEDDING_MODEL,
            "train": TRAIN,
            "validation": "held-out.jsonl",  # relative to the spec
            "hyperparameters": {"max_steps": 3, "batch_size": 16, "learning_rate": 5e-3},
        },
    )
    done = tune(spec, "--output", tmp_path / "topics", "--model-store", store)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"tuning {DEFAULT_EMBEDDING_MODEL} with classifier into {tmp_path / 'topics'}"
    steps = [line for line in lines if line.startswith("step ")]  # not a terminal: a line per step
    assert [line.split()[1] for line in steps] == ["1/3", "2/3", "3/3"]
    assert all("loss" in line and "ETA" in line for line in steps)
    assert any(line.startswith("metrics: ") and "val_accuracy" in line for line in lines)
    files = sorted(p.name for p in (tmp_path / "topics").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "labels.json", "tuning.json"]
    about = json.loads((tmp_path / "topics" / "tuning.json").read_text())
    assert about["base_model"] == DEFAULT_EMBEDDING_MODEL and about["metrics"]["steps"] == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "classifier", "base_model": DEFAULT_EMBEDDING_MODEL, "train": []}, "train data is empty"),
        ({"method": "lora", "base_model": DEFAULT_EMBEDDING_MODEL, "train": TRAIN},
         "method 'lora' tunes a causal language model; base model 'all-MiniLM-L6-v2' is an encoder"),
        ({"method": "classifier", "base_model": DEFAULT_EMBEDDING_MODEL, "train": TRAIN,
          "hyperparameters": {"r": -1}}, "r must be within 1..1024, got -1"),
        ({"method": "classifier", "base_model": "missing-model", "train": TRAIN},
         "base model 'missing-model' is neither a model folder"),
        ({"method": "classifier", "base_model": DEFAULT_EMBEDDING_MODEL, "train": "nope.jsonl"},
         "train data file .*nope.jsonl does not exist"),
        ({"method": "classifier", "base_model": DEFAULT_EMBEDDING_MODEL, "train": TRAIN, "epochs": 3},
         "unknown spec field 'epochs'"),
    ],
)  # fmt: skip
def test_a_bad_spec_exits_2_with_the_reason(
    store: Path, tmp_path: Path, spec: dict[str, Any], message: str
) -> None:
    done = tune(write_spec(tmp_path, spec), "--output", tmp_path / "out", "--model-store", store)
    assert done.returncode == 2
    assert done.stderr.startswith("taskgate tune: error: ")
    assert "Traceback" not in done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_specs_and_missing_arguments(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    done = tune(tmp_path / "bad.json", "--output", tmp_path / "out")
    assert done.returncode == 2 and "cannot read the spec" in done.stderr
    (tmp_path / "list.json").write_text("[]")
    done = tune(tmp_path / "list.json", "--output", tmp_path / "out")
    assert done.returncode == 2 and "the spec must be a JSON object" in done.stderr
    done = tune(tmp_path / "list.json")
    assert done.returncode == 2 and "--output" in done.stderr  # argparse: required


def test_sigterm_stops_after_the_current_step_and_writes_nothing(store: Path, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        {
            "method": "classifier",
            "base_model": DEFAULT_EMBEDDING_MODEL,
            "train": TRAIN,
            "hyperparameters": {"num_epochs": 500, "batch_size": 16},
        },
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "tune", str(spec), "--output", str(tmp_path / "out"),
         "--model-store", str(store)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("step 1/"):
                process.send_signal(signal.SIGTERM)
                break
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "tuning cancelled after" in err and "nothing written" in err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_on_a_terminal() -> None:
    screen = Terminal()
    show = ProgressPrinter(screen)
    show(Progress(step=1, total_steps=4, epoch=0.25, loss=0.6931, learning_rate=1e-3, eta_s=3725))
    show(Progress(step=4, total_steps=4, epoch=1.0, loss=0.1234, learning_rate=2.5e-4, eta_s=0))
    first, last = screen.getvalue().split("\r")[1:]
    assert first == "[######..................] 1/4  25%  epoch 0.25  loss 0.6931  lr 1.00e-03  ETA 1:02:05"
    assert last == "[########################] 4/4 100%  epoch 1.00  loss 0.1234  lr 2.50e-04  ETA 0:00:00\n"
