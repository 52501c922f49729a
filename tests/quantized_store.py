"""A model store with quantized variants of the default models, for tests/runtimes/test_quantize.py.

    minilm-fp32          all-MiniLM-L6-v2 as shipped (fp32)
    minilm-int8          the same source, "quantization": "int8"
    minilm-int8-strict   int8 with a cosine threshold no int8 model meets (0.99999)
    minilm-int3          an invalid quantization value
    smollm2-int4         SmolLM2-135M-Instruct, "quantization": "int4"

It lives in ``.cache/test-quantized-store/`` and keeps its exports and variants between runs, so
only the first run pays for quantizing (about a minute). A model folder without its fp32 export
is seeded with hard links to the session store's export of the same source (the export's
fingerprint is checked on load as always, so a stale seed is exported again, never trusted), and
the strict model with minilm-int8's variant: the refusal is judged from the variant's measured
figures, so the test needs no second quantization.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from gateway.models.defaults import GENERATION_RUNTIME, SMOLLM2_SETTINGS, default_manifests
from tests.models import CACHE

STORE = CACHE / "test-quantized-store"
SESSION_STORE = CACHE / "test-store"
FP32, INT8, STRICT, INVALID, INT4 = (
    "minilm-fp32",
    "minilm-int8",
    "minilm-int8-strict",
    "minilm-int3",
    "smollm2-int4",
)
ENCODER_EXPORT = "onnx-feature-extraction"
STRICT_COSINE = 0.99999


def _write(
    store: Path, model_id: str, base: Any, settings: dict[str, Any], runtime: str | None = None
) -> Path:
    folder = store / model_id
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": model_id,
        "tasks": sorted(task.value for task in base.tasks),
        "runtime": runtime or base.runtime,
        "source": base.source.as_uri(),
        "settings": settings,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def seed(folder: Path, cached: Path) -> None:
    """Hard-link ``cached`` (an export or conversion folder) into ``folder`` unless it is there."""
    target = folder / cached.name
    if target.exists() or not cached.is_dir():
        return
    staging = folder / f".seed-{cached.name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(cached, staging, copy_function=os.link)
    staging.rename(target)


def build_quantized_store(store: Path = STORE) -> Path:
    minilm, smollm = default_manifests(SESSION_STORE)
    minilm_export = SESSION_STORE / minilm.model_id / ENCODER_EXPORT
    for model_id, settings in (
        (FP32, {}),
        (INT8, {"quantization": "int8"}),
        (STRICT, {"quantization": "int8", "quantization_min_cosine": STRICT_COSINE}),
        (INVALID, {"quantization": "int3"}),
    ):
        seed(_write(store, model_id, minilm, settings), minilm_export)
    # our own int4 variant of Optimum's export (the default model runs ORT GenAI's graph instead)
    settings = {k: v for k, v in SMOLLM2_SETTINGS.items() if k != "precision"}
    folder = _write(store, INT4, smollm, {**settings, "quantization": "int4"}, GENERATION_RUNTIME)
    for cached in ("hf-from-gguf", "onnx-text-generation-with-past"):
        seed(folder, SESSION_STORE / smollm.model_id / cached)
    return store


def seed_strict_variant(store: Path = STORE) -> None:
    """minilm-int8's variant into minilm-int8-strict's folder (same source, same quantizer)."""
    seed(store / STRICT, store / INT8 / f"{ENCODER_EXPORT}-int8")
