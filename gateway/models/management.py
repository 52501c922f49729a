"""Model management, protocol-neutral: deploy / undeploy files into the store (Caikit's
ModelManagement), load / unload / pin / status (our ModelControl), and registering a model
directory handed over by ModelMesh's puller (the mmesh.ModelRuntime SPI)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.errors import AlreadyExists, InvalidInput, ModelNotFound
from gateway.models.defaults import GENERATION_RUNTIME
from gateway.models.model_settings import check_settings
from gateway.models.registry import ModelRegistry, ModelStatus
from gateway.models.store import MANIFEST, ManifestError, ModelManifest, is_within, validate_model_id
from gateway.tasks import Task
from runtimes.catalog import factory_for

ENCODER_TASKS = frozenset({Task.EMBEDDING, Task.SENTENCE_SIMILARITY, Task.RERANK, Task.TOKENIZATION})
CLASSIFIER_TASKS = frozenset({Task.TEXT_CLASSIFICATION, Task.TOKENIZATION})
GENERATION_TASKS = frozenset({Task.TEXT_GENERATION})


@dataclass(frozen=True)
class ModelFile:
    filename: str
    data: bytes


class ModelManagement:
    """Every path that comes from a request is confined before a file is read: deployed files
    and a deployed manifest's source stay inside the new model's folder; ModelMesh's modelPath
    stays under ``modelmesh_models_dir``. A refused deploy leaves nothing in the store."""

    def __init__(self, registry: ModelRegistry, modelmesh_models_dir: Path | None = None) -> None:
        self.registry = registry
        self._modelmesh_dir = modelmesh_models_dir
        self._external: set[str] = set()  # models registered through the ModelMesh SPI
        self._claimed: set[str] = set()  # ids with a deploy or undeploy in progress

    # -- Caikit ModelManagement --------------------------------------------------------------
    async def deploy(self, model_id: str, files: Sequence[ModelFile]) -> ModelStatus:
        """Write the files as a new model folder (atomically) and start loading it."""
        validate_model_id(model_id)
        plan = _deploy_plan(files)
        folder = self.registry.store.folder(model_id)
        with self._claim(model_id):
            if await asyncio.to_thread(folder.exists):
                raise AlreadyExists(f"model {model_id!r} already exists; undeploy it first")
            await asyncio.to_thread(_write_model, folder, model_id, plan)
        asyncio.get_running_loop().create_task(self._load_quietly(model_id))
        return await self.registry.model_status(model_id)

    async def undeploy(self, model_id: str) -> None:
        """Take the folder out of the store at once (new requests: NOT_FOUND), let the requests
        in flight finish (the registry drains), then delete the files."""
        folder = self.registry.store.folder(model_id)
        with self._claim(model_id):
            parked = await asyncio.to_thread(_park, folder, model_id)
            if parked is None:
                raise ModelNotFound(f"model {model_id!r} is not in the model store")
            try:
                await self.registry.unload(model_id, force=True)
            finally:
                self.registry.forget(model_id)
                self._external.discard(model_id)
                await asyncio.to_thread(_remove, parked, folder)

    # -- ModelControl ----------------------------------------------------------------------
    async def list(self) -> list[ModelStatus]:
        return await self.registry.status()

    async def status(self, model_id: str) -> ModelStatus:
        return await self.registry.model_status(model_id)

    async def load(self, model_id: str) -> ModelStatus:
        await self.registry.load(model_id)
        return await self.registry.model_status(model_id)

    async def unload(self, model_id: str) -> ModelStatus:
        await self.registry.model_status(model_id)  # NOT_FOUND first
        await self.registry.unload(model_id)
        return await self.registry.model_status(model_id)

    async def pin(self, model_id: str, pinned: bool) -> ModelStatus:
        await self.registry.model_status(model_id)  # NOT_FOUND first
        self.registry.pin(model_id, pinned)
        return await self.registry.model_status(model_id)

    # -- ModelMesh SPI ---------------------------------------------------------------------
    def confined_model_path(self, model_path: str) -> Path:
        """ModelMesh's modelPath, accepted only under the models directory from settings."""
        root = self._modelmesh_dir
        if root is None:
            raise InvalidInput("this server takes no modelPath: set --modelmesh-models-dir")
        if not model_path or "\x00" in model_path or len(model_path) > 4096:
            raise InvalidInput("modelPath must be a path under the ModelMesh models directory")
        path = Path(model_path)
        if not path.is_absolute():
            path = root / path
        if not is_within(path, root):
            raise InvalidInput(
                f"modelPath {model_path!r} is outside the ModelMesh models directory {str(root)!r}"
            )
        return path

    async def register_path(self, model_id: str, model_type: str, model_path: str) -> ModelStatus:
        """Serve the model folder ModelMesh pulled to ``model_path`` under ``model_id``."""
        validate_model_id(model_id)
        source = self.confined_model_path(model_path)
        root = self._modelmesh_dir
        if root is None:  # confined_model_path refused the call already
            raise InvalidInput("this server takes no modelPath: set --modelmesh-models-dir")
        if not await asyncio.to_thread(source.exists):
            raise InvalidInput(f"modelPath {model_path!r} does not exist")
        folder = self.registry.store.folder(model_id)
        with self._claim(model_id):
            if not await asyncio.to_thread((folder / MANIFEST).is_file):
                await asyncio.to_thread(_register, folder, model_id, model_type, source, root)
                self._external.add(model_id)
        return await self.registry.model_status(model_id)

    async def unregister(self, model_id: str) -> None:
        """ModelMesh's unloadModel: a model it registered leaves the store (draining)."""
        validate_model_id(model_id)
        if model_id in self._external:
            await self.undeploy(model_id)
        else:
            await self.registry.unload(model_id, force=True)

    async def predict_size(self, model_path: str) -> int:
        return await asyncio.to_thread(path_size, self.confined_model_path(model_path))

    async def _load_quietly(self, model_id: str) -> None:
        try:
            await self.registry.load(model_id)
        except Exception:  # the failure is recorded in the registry and shown in status
            return

    @contextlib.contextmanager
    def _claim(self, model_id: str) -> Iterator[None]:
        """One deploy / undeploy per id at a time: a second one at once is ALREADY_EXISTS."""
        if model_id in self._claimed:
            raise AlreadyExists(f"model {model_id!r} is being deployed or undeployed right now")
        self._claimed.add(model_id)
        try:
            yield
        finally:
            self._claimed.discard(model_id)


MAX_DEPLOY_FILES = 10_000
MAX_PATH_DEPTH = 16


def _deploy_plan(files: Sequence[ModelFile]) -> list[tuple[PurePosixPath, ModelFile]]:
    """Each uploaded file's safe relative path; colliding names are refused."""
    if not files:
        raise InvalidInput("model_files must hold at least one file")
    if len(files) > MAX_DEPLOY_FILES:
        raise InvalidInput(f"model_files holds {len(files)} files; at most {MAX_DEPLOY_FILES}")
    plan = [(_safe_relative(f.filename), f) for f in files]
    paths = {path for path, _ in plan}
    if len(paths) != len(plan):
        raise InvalidInput("model_files names the same file twice")
    for path in paths:
        clash = next((parent for parent in path.parents if parent in paths), None)
        if clash is not None:
            raise InvalidInput(f"model file {str(clash)!r} is also a folder of {str(path)!r}")
    return plan


def _safe_relative(filename: str) -> PurePosixPath:
    """A relative path of plain names: no '..', '.', empty parts, control characters or '\\'."""
    parts = filename.split("/") if isinstance(filename, str) else []
    bad = (
        not parts
        or len(filename) > 1024
        or len(parts) > MAX_PATH_DEPTH
        or any(part in ("", ".", "..") or len(part.encode()) > 255 for part in parts)
        or any(ord(ch) < 32 or ch in "\\\x7f" for ch in filename)
    )
    if bad:
        shown = filename[:100] if isinstance(filename, str) else filename
        raise InvalidInput(
            f"invalid model file name {shown!r}: use a relative path of plain names "
            "(no '..', '.', empty parts, backslashes or control characters)"
        )
    return PurePosixPath(filename)


def infer_manifest(model_id: str, folder: Path, source: Path, model_type: str = "") -> ModelManifest:
    """A manifest for a bare Hugging Face folder (or a .gguf file) by looking at its files."""
    ggufs = [source] if source.suffix == ".gguf" else sorted(source.glob("*.gguf"))
    if ggufs or model_type in ("torch-causal-lm", "onnx-causal-lm", "onnx-genai-causal-lm", "gguf"):
        target = ggufs[0] if ggufs else source
        runtime = model_type if model_type.endswith("causal-lm") else GENERATION_RUNTIME
        return ModelManifest(model_id, GENERATION_TASKS, runtime, target, folder)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise InvalidInput(f"{source} has neither a {MANIFEST}, a config.json nor a .gguf file")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"config.json is not valid JSON: {exc}") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    architectures = architectures if isinstance(architectures, list) else []
    if any(str(a).endswith("ForCausalLM") for a in architectures):
        return ModelManifest(model_id, GENERATION_TASKS, GENERATION_RUNTIME, source, folder)
    classifier = any(str(a).endswith("ForSequenceClassification") for a in architectures)
    tasks = CLASSIFIER_TASKS if classifier else ENCODER_TASKS
    return ModelManifest(model_id, tasks, "onnx-encoder", source, folder)


def _write_model(folder: Path, model_id: str, files: list[tuple[PurePosixPath, ModelFile]]) -> None:
    """Write into a hidden staging folder, check everything, then rename it into the store. The
    manifest is checked as the registry will read it: its source must lie in the model folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".deploy-{model_id}-", dir=folder.parent))
    try:
        for path, file in files:
            target = staging / "files" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.data)
        given = staging / "files" / MANIFEST
        if given.is_file():  # a deployed manifest: its source is relative to the model folder
            given.rename(staging / MANIFEST)
            manifest = _deployed_manifest(staging, model_id)
        else:  # a bare Hugging Face folder or .gguf file: infer the manifest, sourced in files/
            manifest = infer_manifest(model_id, staging, staging / "files")
        check_settings(manifest.runtime, manifest.settings)
        relative = manifest.source.relative_to(staging)
        dataclasses.replace(manifest, source=folder / relative, folder=staging).write()
        try:
            staging.rename(folder)
        except OSError:  # the id appeared meanwhile (a folder written by hand)
            raise AlreadyExists(f"model {model_id!r} already exists; undeploy it first") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _deployed_manifest(staging: Path, model_id: str) -> ModelManifest:
    try:
        data = json.loads((staging / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"the deployed {MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"the deployed {MANIFEST} must be a JSON object")
    if data.get("id", model_id) != model_id:
        raise InvalidInput(f"the deployed manifest names id {data.get('id')!r}, not {model_id!r}")
    try:
        manifest = ModelManifest.parse(data, staging, model_id)
        factory_for(manifest.runtime)
    except (ManifestError, ValueError) as exc:
        raise InvalidInput(f"the deployed {MANIFEST} cannot be served: {exc}") from None
    if not is_within(manifest.source, staging):
        raise InvalidInput(
            f"the deployed manifest's source {data.get('source')!r} is outside the model's folder; "
            "deploy the model's files with it and name them by a relative path"
        )
    return manifest


def _register(folder: Path, model_id: str, model_type: str, source: Path, root: Path) -> None:
    """A manifest for a folder ModelMesh pulled; a manifest inside it may not point outside ``root``."""
    if (source / MANIFEST).is_file():
        try:
            data = json.loads((source / MANIFEST).read_text())
            given = ModelManifest.parse(data if isinstance(data, dict) else {}, source, model_id)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{MANIFEST} in modelPath cannot be served: {exc}") from None
        if not is_within(given.source, root):
            raise InvalidInput(f"the source of {MANIFEST} in modelPath is outside the models directory")
        check_settings(given.runtime, given.settings)
        dataclasses.replace(given, folder=folder).write()
    else:
        infer_manifest(model_id, folder, source, model_type).write()


def _park(folder: Path, model_id: str) -> Path | None:
    """Rename a model folder out of the store (atomic); None when it is not there."""
    if not (folder / MANIFEST).is_file():
        return None
    parked = Path(tempfile.mkdtemp(prefix=f".undeploy-{model_id}-", dir=folder.parent))
    folder.rename(parked / "model")
    return parked


def _remove(parked: Path, folder: Path) -> None:
    """Delete an undeployed model's files, and its folder if a load that was running then made
    it again (an export writes into the model's folder)."""
    shutil.rmtree(parked, ignore_errors=True)
    if folder.is_dir() and not (folder / MANIFEST).exists():
        shutil.rmtree(folder, ignore_errors=True)


def path_size(path: Path) -> int:
    """Bytes of the files under ``path`` (ModelMesh's size prediction before a load)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise InvalidInput(f"modelPath {str(path)!r} does not exist")
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
