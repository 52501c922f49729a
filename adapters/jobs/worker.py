"""The tuning worker: one spawned process per job, so a crash or an out-of-memory kills the job and
never the gateway.

The process lowers its priority (``nice``), bounds torch's threads, runs ``adapters.tuning.
run_tuning`` and talks to the gateway over one pipe, one message a line of JSON-able dicts:

    {"type": "progress", ...Progress fields}     after every optimizer step
    {"type": "log", "message": ...}              a phase began (prepare, train, evaluate)
    {"type": "result", "metrics": {...}}         the adapter is written to the output folder
    {"type": "cancelled"} / {"type": "failed", "reason": ...}

Cancelling sets a shared event that the trainer checks after every optimizer step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import traceback
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any


def worker_main(
    spec: dict[str, Any], output_dir: str, conn: Connection, stop: Event, nice: int, threads: int
) -> None:
    """Entry point of the spawned process (must stay importable without side effects)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.suppress(OSError):
        os.nice(nice)

    def send(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ValueError):
            conn.send(message)

    try:
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        from adapters.tuning import SPEC_FIELDS, TuningCancelled, TuningSpec, run_tuning

        fields = {key: value for key, value in spec.items() if key in SPEC_FIELDS}
        tuning_spec = TuningSpec.from_dict({**fields, "threads": threads})

        def on_progress(progress: Any) -> None:
            send({"type": "progress", **dataclasses.asdict(progress)})

        try:
            result = run_tuning(
                tuning_spec, output_dir=Path(output_dir), on_progress=on_progress, should_stop=stop.is_set
            )
        except TuningCancelled:
            send({"type": "cancelled"})
            return
        send({"type": "result", "metrics": dict(result.metrics)})
    except Exception as exc:
        send({"type": "failed", "reason": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
    finally:
        with contextlib.suppress(OSError):
            conn.close()
