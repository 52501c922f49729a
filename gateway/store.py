"""The model store: a directory of model folders, each described by a ``manifest.json``.

    <store>/<model-id>/manifest.json
        {"id": "all-MiniLM-L6-v2",
         "tasks": ["embedding", "sentence-similarity", "rerank", "tokenization"],
         "runtime": "onnx-encoder",
         "source": "file:///abs/path/to/hf-folder"   (or a path, relative to the model folder)
         "settings": {...}}                          (optional, runtime-specific)

The catalog is data, not code. Model ids are validated before they touch the file system.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from gateway.errors import InvalidInput, ModelNotFound
from gateway.tasks import Task

MANIFEST = "manifest.json"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestError(ValueError):
    """A manifest that cannot be served; the message says what is wrong."""


def validate_model_id(model_id: str) -> str:
    if not model_id:
        raise InvalidInput("model id is required (gRPC metadata 'mm-model-id' or JSON 'model_id')")
    if not _MODEL_ID.match(model_id) or ".." in model_id:
        raise InvalidInput(
            f"invalid model id {model_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return model_id


@dataclass(frozen=True)
class ModelManifest:
    model_id: str
    tasks: frozenset[Task]
    runtime: str
    source: Path
    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> ModelManifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: manifest must be a JSON object")
        model_id = data.get("id", folder.name)
        if model_id != folder.name:
            raise ManifestError(f"{path}: id {model_id!r} differs from the folder name {folder.name!r}")
        try:
            tasks = frozenset(Task.from_name(name) for name in data.get("tasks", []))
        except ValueError as exc:
            raise ManifestError(f"{path}: {exc}") from exc
        if not tasks:
            raise ManifestError(f"{path}: 'tasks' must list at least one task")
        runtime = data.get("runtime")
        if not isinstance(runtime, str):
            raise ManifestError(f"{path}: 'runtime' must be a string")
        settings = data.get("settings", {})
        if not isinstance(settings, dict):
            raise ManifestError(f"{path}: 'settings' must be an object")
        return cls(
            model_id=model_id,
            tasks=tasks,
            runtime=runtime,
            source=resolve_source(str(data.get("source", "")), folder),
            folder=folder,
            settings=settings,
        )

    def write(self) -> None:
        data = {
            "id": self.model_id,
            "tasks": sorted(task.value for task in self.tasks),
            "runtime": self.runtime,
            "source": self.source.as_uri(),
            "settings": self.settings,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.folder / MANIFEST)


def resolve_source(source: str, folder: Path) -> Path:
    """A ``file://`` URI or a path (relative paths are relative to the model folder)."""
    if not source:
        raise ManifestError(f"{folder / MANIFEST}: 'source' is required")
    parsed = urlparse(source)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ManifestError(f"file URI with a remote host is not supported: {source}")
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise ManifestError(f"unsupported source scheme {parsed.scheme!r} in {source}")
    path = Path(source)
    return path if path.is_absolute() else (folder / path).resolve()


class ModelStore:
    """Reads manifests from the store directory; every lookup reads the disk afresh."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, model_id: str) -> Path:
        return self.root / validate_model_id(model_id)

    def manifest(self, model_id: str) -> ModelManifest:
        folder = self.folder(model_id)
        if not (folder / MANIFEST).is_file():
            raise ModelNotFound(f"model {model_id!r} is not in the model store")
        return ModelManifest.read(folder)

    def model_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if (p / MANIFEST).is_file() and _MODEL_ID.match(p.name)
        )
