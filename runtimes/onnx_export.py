"""Export a Hugging Face model folder to ONNX with Optimum, cached by source fingerprint.

The export lives in ``<work_dir>/onnx-<task>/``, beside a ``fingerprint.json`` naming the
source's content hash, the task and the exporter versions. When any of those changes the model
is exported again; the new export is written to a temporary folder and renamed into place, so
a crash never leaves a half-written export that looks valid. A causal LM's export
(``text-generation-with-past``) is then edited by ``runtimes.causal_graph`` (a ``logits_to_keep``
input), whose version the fingerprint holds too.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

from runtimes import causal_graph
from runtimes.cached_folder import FINGERPRINT, is_current, staged
from runtimes.export_worker import run_in_worker
from runtimes.fingerprint import fingerprint
from runtimes.progress import progress_step

log = logging.getLogger(__name__)


def source_fingerprint(source: Path) -> str:
    """sha256 over every file's relative path and content (hidden files excluded)."""
    return fingerprint(source)


def _expected(source: Path, task: str) -> dict[str, Any]:
    # versions from package metadata: importing optimum / transformers costs ~300 MB and seconds,
    # which a load from a cached export must not pay
    expected: dict[str, Any] = {
        "source_sha256": source_fingerprint(source),
        "task": task,
        "optimum": metadata.version("optimum"),
        "transformers": metadata.version("transformers"),
    }
    if task == causal_graph.TASK:  # the export is edited after Optimum writes it
        expected["graph_edits"] = causal_graph.EDITS
    return expected


def export_cached(source: Path, work_dir: Path, task: str) -> Path:
    """Return a folder holding ``model.onnx`` and the tokenizer files for ``source``."""
    target = work_dir / f"onnx-{task}"
    expected = _expected(source, task)
    if is_current(target, "model.onnx", expected):
        return target
    why = "source or exporter changed" if (target / FINGERPRINT).exists() else "first load"
    with staged(target, expected) as staging:
        step = f"exporting {work_dir.name} to ONNX for {task}"
        with progress_step(log, step, why):
            run_in_worker(_export, source, staging, task)  # never in the serving process
    return target


def _export(source: Path, output: Path, task: str) -> None:
    from optimum.exporters.onnx import main_export

    main_export(
        str(source),
        output=str(output),
        task=task,
        library_name="transformers",
        do_validation=False,
    )
    if task == causal_graph.TASK:
        causal_graph.edit_export(output)
