"""Model management, protocol-neutral: deploy / undeploy files into the store (Caikit's
ModelManagement), load / unload / pin / status (our ModelControl), and registering a model
directory handed over by ModelMesh's puller (the mmesh.ModelRuntime SPI)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.defaults import GENERATION_RUNTIME
from gateway.errors import AlreadyExists, InvalidInput, ModelNotFound
from gateway.registry import ModelRegistry, ModelStatus
from gateway.store import MANIFEST, ModelManifest, resolve_source, validate_model_id
from gateway.tasks import Task

ENCODER_TASKS = frozenset({Task.EMBEDDING, Task.SENTENCE_SIMILARITY, Task.RERANK, Task.TOKENIZATION})
CLASSIFIER_TASKS = frozenset({Task.TEXT_CLASSIFICATION, Task.TOKENIZATION})
GENERATION_TASKS = frozenset({Task.TEXT_GENERATION})


@dataclass(frozen=True)
class ModelFile:
    filename: str
    data: bytes


class ModelManagement:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._external: set[str] = set()  # models registered through the ModelMesh SPI

    # -- Caikit ModelManagement --------------------------------------------------------------
    async def deploy(self, model_id: str, files: Sequence[ModelFile]) -> ModelStatus:
        """Write the files as a new model folder (atomically) and start loading it."""
        validate_model_id(model_id)
        if not files:
            raise InvalidInput("model_files must hold at least one file")
        paths = [_safe_relative(f.filename) for f in files]
        folder = self.registry.store.folder(model_id)
        if folder.exists():
            raise AlreadyExists(f"model {model_id!r} already exists; undeploy it first")
        await asyncio.to_thread(_write_model, folder, model_id, list(zip(paths, files, strict=True)))
        asyncio.get_running_loop().create_task(self._load_quietly(model_id))
        return self.registry.model_status(model_id)

    async def undeploy(self, model_id: str) -> None:
        folder = self.registry.store.folder(model_id)
        if not (folder / MANIFEST).is_file():
            raise ModelNotFound(f"model {model_id!r} is not in the model store")
        await self.registry.unload(model_id, force=True)
        await asyncio.to_thread(shutil.rmtree, folder)
        self._external.discard(model_id)

    # -- ModelControl ----------------------------------------------------------------------
    def list(self) -> list[ModelStatus]:
        return self.registry.status()

    def status(self, model_id: str) -> ModelStatus:
        return self.registry.model_status(model_id)

    async def load(self, model_id: str) -> ModelStatus:
        await self.registry.load(model_id)
        return self.registry.model_status(model_id)

    async def unload(self, model_id: str) -> ModelStatus:
        self.registry.model_status(model_id)  # NOT_FOUND first
        await self.registry.unload(model_id)
        return self.registry.model_status(model_id)

    def pin(self, model_id: str, pinned: bool) -> ModelStatus:
        self.registry.pin(model_id, pinned)
        return self.registry.model_status(model_id)

    # -- ModelMesh SPI ---------------------------------------------------------------------
    async def register_path(self, model_id: str, model_type: str, model_path: str) -> ModelStatus:
        """Serve the model folder ModelMesh pulled to ``model_path`` under ``model_id``."""
        validate_model_id(model_id)
        source = Path(model_path)
        if not source.is_absolute() or not source.exists():
            raise InvalidInput(f"modelPath {model_path!r} must be an existing absolute path")
        folder = self.registry.store.folder(model_id)
        if not (folder / MANIFEST).is_file():
            await asyncio.to_thread(_register, folder, model_id, model_type, source)
            self._external.add(model_id)
        return self.registry.model_status(model_id)

    async def unregister(self, model_id: str) -> None:
        await self.registry.unload(model_id, force=True)
        if model_id in self._external:
            await asyncio.to_thread(shutil.rmtree, self.registry.store.folder(model_id), True)
            self._external.discard(model_id)

    async def _load_quietly(self, model_id: str) -> None:
        try:
            await self.registry.load(model_id)
        except Exception:  # the failure is recorded in the registry and shown in status
            return


def _safe_relative(filename: str) -> PurePosixPath:
    path = PurePosixPath(filename)
    if not filename.strip() or path.is_absolute() or ".." in path.parts or "\\" in filename:
        raise InvalidInput(f"invalid model file name {filename!r}: use a relative path without '..'")
    return path


def _infer_manifest(model_id: str, folder: Path, source: Path, model_type: str = "") -> ModelManifest:
    """A manifest for a bare Hugging Face folder (or a .gguf file) by looking at its files."""
    ggufs = [source] if source.suffix == ".gguf" else sorted(source.glob("*.gguf"))
    if ggufs or model_type in ("torch-causal-lm", "onnx-causal-lm", "gguf"):
        target = ggufs[0] if ggufs else source
        runtime = model_type if model_type.endswith("causal-lm") else GENERATION_RUNTIME
        return ModelManifest(model_id, GENERATION_TASKS, runtime, target, folder)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise InvalidInput(f"{source} has neither a {MANIFEST}, a config.json nor a .gguf file")
    config = json.loads(config_path.read_text())
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForCausalLM") for a in architectures):
        return ModelManifest(model_id, GENERATION_TASKS, GENERATION_RUNTIME, source, folder)
    classifier = any(str(a).endswith("ForSequenceClassification") for a in architectures)
    tasks = CLASSIFIER_TASKS if classifier else ENCODER_TASKS
    return ModelManifest(model_id, tasks, "onnx-encoder", source, folder)


def _write_model(folder: Path, model_id: str, files: list[tuple[PurePosixPath, ModelFile]]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".deploy-{model_id}-", dir=folder.parent))
    try:
        for path, file in files:
            target = staging / "files" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.data)
        given = staging / "files" / MANIFEST
        if given.is_file():  # a deployed manifest: its source is relative to the model folder
            given.rename(staging / MANIFEST)
            data = json.loads((staging / MANIFEST).read_text())
            if data.get("id", model_id) != model_id:
                raise InvalidInput(f"the deployed manifest names id {data.get('id')!r}, not {model_id!r}")
            data["id"] = model_id
            (staging / MANIFEST).write_text(json.dumps(data, indent=2))
        else:  # a bare Hugging Face folder or .gguf file: infer the manifest, sourced in files/
            inferred = _infer_manifest(model_id, staging, staging / "files")
            final_source = folder / inferred.source.relative_to(staging)
            dataclasses.replace(inferred, source=final_source).write()
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _register(folder: Path, model_id: str, model_type: str, source: Path) -> None:
    if (source / MANIFEST).is_file():
        given = json.loads((source / MANIFEST).read_text())
        tasks = frozenset(Task.from_name(t) for t in given.get("tasks", []))
        target = resolve_source(str(given.get("source", ".")), source)
        ModelManifest(model_id, tasks, given["runtime"], target, folder, given.get("settings", {})).write()
    else:
        _infer_manifest(model_id, folder, source, model_type).write()


def path_size(model_path: str) -> int:
    """Bytes of the files under ``model_path`` (ModelMesh's size prediction before a load)."""
    path = Path(model_path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise InvalidInput(f"modelPath {model_path!r} does not exist")
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
