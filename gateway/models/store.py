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
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from gateway.errors import InvalidInput, ModelNotFound
from gateway.tasks import Task

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch: "$" accepts "x\n"


class ManifestError(ValueError):
    """A manifest that cannot be served; the message says what is wrong."""


def validate_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not model_id:
        raise InvalidInput("model id is required (gRPC metadata 'mm-model-id' or JSON 'model_id')")
    if not is_model_id(model_id):
        shown = model_id if len(model_id) <= 140 else model_id[:140] + "..."
        raise InvalidInput(
            f"invalid model id {shown!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return model_id


def is_model_id(name: str) -> bool:
    return _MODEL_ID.fullmatch(name) is not None and ".." not in name


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies under it, after resolving symlinks and '..'."""
    try:
        resolved, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte
        return False
    return resolved == base or base in resolved.parents


def read_manifest_data(folder: Path) -> dict[str, Any]:
    """The JSON object of a folder's manifest (ManifestError when it is unreadable or not one)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a JSON object")
    return data


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
        return cls.parse(read_manifest_data(folder), folder, folder.name)

    @classmethod
    def parse(cls, data: dict[str, Any], folder: Path, model_id: str) -> ModelManifest:
        """A manifest from its JSON object, every field type-checked (ManifestError says what)."""
        path = folder / MANIFEST
        given_id = data.get("id", model_id)
        if given_id != model_id:
            raise ManifestError(f"{path}: id {given_id!r} differs from the folder name {model_id!r}")
        names = data.get("tasks", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ManifestError(f"{path}: 'tasks' must be a list of task names")
        try:
            tasks = frozenset(Task.from_name(name) for name in names)
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
        source = data.get("source", "")
        if not isinstance(source, str):
            raise ManifestError(f"{path}: 'source' must be a string (a path or a file:// URI)")
        return cls(
            model_id=model_id,
            tasks=tasks,
            runtime=runtime,
            source=resolve_source(source, folder),
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
    if "\x00" in source:
        raise ManifestError(f"{folder / MANIFEST}: 'source' holds a NUL byte")
    parsed = urlparse(source)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ManifestError(f"file URI with a remote host is not supported: {source}")
        path = Path(unquote(parsed.path))
        if not path.is_absolute() or "\x00" in str(path):
            raise ManifestError(f"a file URI must name an absolute path: {source}")
        return path
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise ManifestError(f"unsupported source scheme {parsed.scheme!r} in {source}")
    path = Path(source)
    return path if path.is_absolute() else Path(os.path.normpath(folder.absolute() / path))


def prepare_store(store: ModelStore) -> None:
    """At start-up: create the store, clear what interrupted deploys and undeploys left, and say
    how to fill an empty store."""
    store.root.mkdir(parents=True, exist_ok=True)
    for leftover in store.root.iterdir():
        if leftover.name.startswith((".deploy-", ".undeploy-")) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    if not store.model_ids():
        log.warning(
            "the model store %s holds no models: run `taskgate init-store --model-store %s` for the "
            "default models, or deploy one (POST /management/models, or a folder with a %s)",
            store.root,
            store.root,
            MANIFEST,
        )


class ModelStore:
    """Reads manifests from the store directory; every lookup reads the disk afresh."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()  # a relative store (./model-store) still gives absolute sources

    def folder(self, model_id: str) -> Path:
        return self.root / validate_model_id(model_id)

    def manifest(self, model_id: str) -> ModelManifest:
        folder = self.folder(model_id)
        if not (folder / MANIFEST).is_file():
            raise ModelNotFound(f"model {model_id!r} is not in the model store")
        return ModelManifest.read(folder)

    def exists(self, model_id: str) -> bool:
        """Whether the store holds a model of this id (False for an invalid id)."""
        return is_model_id(model_id) and (self.root / model_id / MANIFEST).is_file()

    def model_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_model_id(p.name) and (p / MANIFEST).is_file())
