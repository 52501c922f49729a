"""``taskgate tune SPEC.json --output DIR``: one tuning run as a plain command (a Kubernetes Job,
or a person), through the same ``run_tuning`` the job workers call.

SPEC.json (``adapters.tuning.SPEC_FIELDS``)::

    {"method": "classifier",                      prompt_tuning | multitask_prompt_tuning | lora | classifier
     "base_model": "all-MiniLM-L6-v2",            a store id (with --model-store) or a model folder path
     "train": [{"text": ..., "label": ...}],      records inline, or a JSONL path (relative to SPEC.json)
     "validation": "val.jsonl",                   optional
     "hyperparameters": {"num_epochs": 3}}        the method's config (adapters/methods/<method>/config.py)

A terminal shows one progress bar (step, loss, ETA); otherwise a line per step. SIGINT / SIGTERM
stop the run after the current optimizer step and write nothing (exit 128 + the signal). A bad
spec exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TextIO

from adapters.methods.loop import Progress

EXIT_BAD_SPEC = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the tuning spec (JSON)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the adapter into")
    parser.add_argument(
        "--model-store",
        type=Path,
        help="resolve 'base_model' as a model id in this store (env TASKGATE_MODEL_STORE)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: the spec's, else 1)")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressPrinter:
    """A bar redrawn in place on a terminal; plain lines elsewhere (logs of a Kubernetes Job)."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, progress: Progress) -> None:
        done = progress.step / progress.total_steps
        numbers = (
            f"epoch {progress.epoch:.2f}  loss {progress.loss:.4f}  lr {progress.learning_rate:.2e}  "
            f"ETA {_duration(progress.eta_s)}"
        )
        if self.tty:
            filled = int(self.WIDTH * done)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            end = "\n" if progress.step == progress.total_steps else ""
            self.stream.write(f"\r[{bar}] {progress.step}/{progress.total_steps} {done:4.0%}  {numbers}{end}")
        else:
            self.stream.write(f"step {progress.step}/{progress.total_steps}  {numbers}\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from adapters.methods import TuningMethod
    from adapters.tuning import TuningCancelled, TuningSpec, run_tuning

    def fail(message: str) -> int:
        print(f"taskgate tune: error: {message}", file=sys.stderr)
        return EXIT_BAD_SPEC

    spec_path: Path = args.spec
    store = args.model_store or os.environ.get("TASKGATE_MODEL_STORE")
    model_store = Path(store) if store else None
    try:
        data = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        return fail(f"cannot read the spec {spec_path}: {exc}")
    if not isinstance(data, dict):
        return fail(f"{spec_path}: the spec must be a JSON object")
    if args.threads is not None:
        data["threads"] = args.threads
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)
        print("\nstopping after the current step ...", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        spec = TuningSpec.from_dict(data, relative_to=spec_path.parent, model_store=model_store)
        method = TuningMethod.parse(spec.method).value
        print(f"tuning {spec.base_model} with {method} into {args.output}", flush=True)
        result = run_tuning(
            spec,
            output_dir=args.output,
            on_progress=ProgressPrinter(sys.stdout),
            should_stop=lambda: bool(stop),
        )
    except ValueError as exc:
        return fail(str(exc))
    except TuningCancelled as exc:
        print(f"taskgate tune: {exc}; nothing written", file=sys.stderr)
        return 128 + (stop[0] if stop else signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in result.metrics.items())
    print(f"adapter written to {result.output_dir}: {', '.join(result.files)}")
    print(f"metrics: {metrics}", flush=True)
    return 0
