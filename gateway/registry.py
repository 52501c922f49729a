"""ModelRegistry: model id -> loaded runtime, loaded on first use, one load per model at a time.

The registry owns every loaded model. Concurrent first requests for one model share a single
load (single-flight). A failed load is remembered with its reason and retried only after a
back-off, so a broken model answers UNAVAILABLE quickly and never disturbs the others.
Memory budgets and eviction build on this object (see the multiplexing issue).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.batcher import BatchSettings
from gateway.errors import InvalidInput, TaskgateError, Unavailable
from gateway.store import ManifestError, ModelManifest, ModelStore
from gateway.tasks import Task
from runtimes.base import EncoderRuntime, Runtime, ThreadSettings
from runtimes.catalog import factory_for

log = logging.getLogger(__name__)

FAILED_RETRY_S = 5.0


@dataclass
class LoadedModel:
    manifest: ModelManifest
    runtime: Runtime[Any, Any]
    size_bytes: int
    load_seconds: float
    hits: int = 0
    last_used: float = field(default_factory=time.time)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


@dataclass(frozen=True)
class ModelStatus:
    model_id: str
    state: str  # "NOT_LOADED", "LOADING", "LOADED" or "FAILED"
    tasks: tuple[str, ...]
    runtime: str
    source: str
    size_bytes: int
    hits: int
    reason: str = ""


@dataclass
class _Failure:
    reason: str
    at: float


class ModelRegistry:
    def __init__(self, store: ModelStore, threads: ThreadSettings) -> None:
        self._store = store
        self._threads = threads
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        self._failed: dict[str, _Failure] = {}
        self.load_count = 0

    async def get(self, model_id: str) -> LoadedModel:
        model = self._loaded.get(model_id)
        if model is None:
            model = await self._load_once(model_id)
        model.hits += 1
        model.last_used = time.time()
        return model

    async def _load_once(self, model_id: str) -> LoadedModel:
        pending = self._loading.get(model_id)
        if pending is None:
            try:
                manifest = self._store.manifest(model_id)  # NOT_FOUND / INVALID_ARGUMENT early
            except ManifestError as exc:
                raise Unavailable(f"model {model_id!r} cannot be served: {exc}") from None
            failure = self._failed.get(model_id)
            if failure and time.monotonic() - failure.at < FAILED_RETRY_S:
                raise Unavailable(
                    f"model {model_id!r} failed to load: {failure.reason}",
                    retry_after_s=FAILED_RETRY_S,
                )
            pending = asyncio.get_running_loop().create_future()
            self._loading[model_id] = pending
            try:
                model = await asyncio.to_thread(self._load_sync, manifest)
            except BaseException as exc:
                reason = str(exc) if isinstance(exc, ManifestError) else f"{type(exc).__name__}: {exc}"
                log.exception("loading model %s failed", model_id)
                self._failed[model_id] = _Failure(reason, time.monotonic())
                error = Unavailable(
                    f"model {model_id!r} failed to load: {reason}", retry_after_s=FAILED_RETRY_S
                )
                pending.set_exception(error)
                pending.exception()  # mark retrieved: waiters may be none
                raise error from None
            finally:
                self._loading.pop(model_id, None)
            self._failed.pop(model_id, None)
            self._loaded[model_id] = model
            pending.set_result(model)
            return model
        return await asyncio.shield(pending)

    def _load_sync(self, manifest: ModelManifest) -> LoadedModel:
        started = time.perf_counter()
        factory = factory_for(manifest.runtime)
        runtime = factory(
            source=manifest.source,
            work_dir=manifest.folder,
            options=manifest.settings,
            threads=self._threads,
        )
        _check_tasks(manifest, runtime)
        runtime.load()
        self.load_count += 1
        elapsed = time.perf_counter() - started
        log.info("loaded model %s in %.2f s", manifest.model_id, elapsed)
        return LoadedModel(manifest, runtime, runtime.size_bytes(), elapsed)

    def update_settings(self, model_id: str, patch: dict[str, Any]) -> None:
        """Merge ``patch`` into the model's manifest settings and write it back atomically."""
        manifest = self._store.manifest(model_id)
        updated = dataclasses.replace(manifest, settings={**manifest.settings, **patch})
        updated.write()
        loaded = self._loaded.get(model_id)
        if loaded is not None:
            loaded.manifest = updated

    def unload_all(self) -> None:
        for model in self._loaded.values():
            model.runtime.unload()
        self._loaded.clear()

    def status(self) -> list[ModelStatus]:
        statuses = []
        for model_id in self._store.model_ids():
            try:
                manifest = self._store.manifest(model_id)
            except (ManifestError, TaskgateError) as exc:
                statuses.append(ModelStatus(model_id, "FAILED", (), "", "", 0, 0, str(exc)))
                continue
            loaded = self._loaded.get(model_id)
            failure = self._failed.get(model_id)
            state = "LOADED" if loaded else "LOADING" if model_id in self._loading else "NOT_LOADED"
            if failure and not loaded:
                state = "FAILED"
            statuses.append(
                ModelStatus(
                    model_id=model_id,
                    state=state,
                    tasks=tuple(sorted(task.value for task in manifest.tasks)),
                    runtime=manifest.runtime,
                    source=manifest.source.as_uri(),
                    size_bytes=loaded.size_bytes if loaded else 0,
                    hits=loaded.hits if loaded else 0,
                    reason=failure.reason if failure and not loaded else "",
                )
            )
        return statuses


def _check_tasks(manifest: ModelManifest, runtime: Runtime[Any, Any]) -> None:
    batching = manifest.settings.get("batching", {})
    try:
        BatchSettings.from_mapping(batching if isinstance(batching, dict) else {"invalid": batching})
    except InvalidInput as exc:
        raise ManifestError(f"model {manifest.model_id!r}: {exc.message}") from None
    encoder_tasks = {Task.EMBEDDING, Task.SENTENCE_SIMILARITY, Task.RERANK, Task.TOKENIZATION}
    if isinstance(runtime, EncoderRuntime):
        if runtime.head == "classification":
            allowed = {Task.TEXT_CLASSIFICATION, Task.TOKENIZATION}
        else:
            allowed = encoder_tasks
        extra = manifest.tasks - allowed
        if extra:
            names = ", ".join(sorted(task.value for task in extra))
            raise ManifestError(
                f"model {manifest.model_id!r} lists tasks its {runtime.head} model cannot serve: {names}"
            )
