"""ModelRegistry: model id -> loaded runtime, under a memory budget (the multiplexer).

- Lazy: a model is loaded on its first request. Single-flight: concurrent first requests share
  one load; at most ``max_concurrent_loads`` loads run at once. A request waits for a load up
  to its deadline, then gets UNAVAILABLE with a retry hint.
- Budget: sizes are estimated from files before loading (or remembered from an earlier load)
  and measured after. When a load would pass the budget, idle models are evicted, chosen by the
  eviction policy (gateway/models/eviction.py: fewest recent requests per byte by default, or
  least recently used); never one with requests in flight, never a pinned one.
- A failed load marks the model FAILED with its reason and is retried only after an
  exponential back-off; it never disturbs the other models.
- ``use()`` brackets a request: the model cannot be evicted while it is in use.
- Unloading (undeploy, a folder leaving the store, ModelMesh's unloadModel) drains: the model
  takes no new requests, the ones in flight finish (up to ``drain_timeout_s``; after that they
  end UNAVAILABLE), and only then does the runtime go.
- Per-model state and metric series exist only for models in the store: a request naming an
  unknown id is NOT_FOUND before anything is recorded, and ``forget()`` drops a removed model's.
- Derived models (``add_derived``) are served like store models under keys no client can name
  directly (an adapter host "<base>+peft", a tuned classifier "<name>@<version>"): they are built
  from a store model's manifest and go when that model leaves the store or changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidInput, ModelNotFound, TaskgateError, Unavailable
from gateway.metrics import Metrics
from gateway.models.eviction import RoomKeeper, make_policy
from gateway.models.memory import SizeMeter, trim_heap
from gateway.models.model_settings import check_settings
from gateway.models.status import (
    DiskView,
    disk_view,
    estimate_size,
    pinned_by_manifest,
    unreadable_status,
)
from gateway.models.status import ModelStatus as ModelStatus  # re-exported: callers import it here
from gateway.models.store import ManifestError, ModelManifest, ModelStore, validate_model_id
from gateway.settings import RegistrySettings
from gateway.tasks import Task
from runtimes.base import EncoderRuntime, Runtime, ThreadSettings
from runtimes.catalog import factory_for
from runtimes.causal_lm import CausalLMRuntime

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    manifest: ModelManifest
    runtime: Runtime[Any, Any]
    size_bytes: int
    load_seconds: float
    pinned: bool = False
    hits: int = 0
    inflight: int = 0
    last_used: float = field(default_factory=time.time)
    idle: asyncio.Event | None = None  # set when the last request leaves a draining model

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


@dataclass
class _Failure:
    reason: str
    at: float
    count: int


class ModelRegistry:
    def __init__(
        self,
        store: ModelStore,
        threads: ThreadSettings,
        settings: RegistrySettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or RegistrySettings()
        self._threads = threads
        self._metrics = metrics or Metrics()
        self._loaded: dict[str, LoadedModel] = {}  # insertion order is not LRU; last_used is
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        self._failed: dict[str, _Failure] = {}
        self._sizes: dict[str, int] = {}  # measured sizes, remembered across unloads
        self._misses: dict[str, int] = {}
        # key -> (its manifest, the store manifest of the model it derives from)
        self._derived: dict[str, tuple[ModelManifest, ModelManifest]] = {}
        self._pins: set[str] = set()
        self._load_slots: asyncio.Semaphore | None = None
        self._unload_listeners: list[Callable[[LoadedModel], Awaitable[None]]] = []
        self._meter = SizeMeter()
        self._policy = make_policy(self.settings.eviction_policy, self.settings.eviction_aging_requests)
        self._room = RoomKeeper(
            self._policy,
            self.settings.memory_budget_bytes,
            self.settings.room_wait_s,
            self._loaded.values,
            self._unload,
        )
        self._running = 0  # requests inside use(), all models
        self._started = 0
        self.load_count = 0

    # -- requests ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(self, model_id: str, deadline: float | None = None) -> AsyncIterator[LoadedModel]:
        """The loaded model, protected from eviction until the block exits."""
        model = await self.get(model_id, deadline)
        model.inflight += 1
        self._running += 1
        self._started += 1
        try:
            yield model
        finally:
            model.inflight -= 1
            self._running -= 1
            model.last_used = time.time()
            if not model.inflight:
                self._room.freed()  # a load waiting for room may evict it now
                if model.idle is not None:
                    model.idle.set()  # an unload is draining it

    async def get(self, model_id: str, deadline: float | None = None) -> LoadedModel:
        model = self._loaded.get(model_id)
        if model is not None:
            self._metrics.cache.labels(model_id, "hit").inc()
            self._policy.record(model_id)
        else:
            started = time.monotonic()
            pending = self._loading.get(model_id) or self._start_load(model_id)  # NOT_FOUND first
            self._policy.record(model_id)
            self._metrics.cache.labels(model_id, "miss").inc()
            self._misses[model_id] = self._misses.get(model_id, 0) + 1
            model = await self._wait(model_id, pending, deadline)
            while self._loaded.get(model_id) is not model:  # evicted before this waiter resumed
                model = await self._wait_for_load(model_id, deadline)
            self._metrics.load_wait.labels(model_id).observe(time.monotonic() - started)
        model.hits += 1
        model.last_used = time.time()
        return model

    # -- management ----------------------------------------------------------------------
    async def load(self, model_id: str) -> LoadedModel:
        return await self.get(model_id)

    async def unload(self, model_id: str, *, force: bool = False) -> bool:
        """Unload a model; False when it is not loaded. In-flight models refuse unless forced;
        forced, a load in progress is waited for first (its files are about to go)."""
        pending = self._loading.get(model_id)
        if pending is not None and force:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        model = self._loaded.get(model_id)
        if model is None:
            return False
        if model.inflight and not force:
            raise Unavailable(
                f"model {model_id!r} has {model.inflight} requests in flight; retry", retry_after_s=1.0
            )
        await self._unload(model)
        return True

    def pin(self, model_id: str, pinned: bool) -> None:
        self.store.manifest(model_id)  # NOT_FOUND for unknown models
        if pinned:
            self._pins.add(model_id)
        else:
            self._pins.discard(model_id)
        if model_id in self._loaded:
            self._loaded[model_id].pinned = pinned or pinned_by_manifest(self._loaded[model_id].manifest)

    def on_unload(self, listener: Callable[[LoadedModel], Awaitable[None]]) -> None:
        """``await listener(model)`` after a model drained, before its runtime unloads."""
        self._unload_listeners.append(listener)

    def update_settings(self, model_id: str, patch: dict[str, Any]) -> None:
        """Merge ``patch`` into the model's manifest settings and write it back atomically
        (blocking file I/O: call it in a thread). The settings are checked before anything is
        written."""
        manifest = self.store.manifest(model_id)
        settings = {**manifest.settings, **patch}
        check_settings(manifest.runtime, settings)
        updated = dataclasses.replace(manifest, settings=settings)
        updated.write()
        loaded = self._loaded.get(model_id)
        if loaded is not None:
            loaded.manifest = updated

    def add_derived(self, manifest: ModelManifest, base: ModelManifest) -> None:
        """Serve ``manifest`` under its ``model_id`` (a key outside the store's id space), derived
        from the store model ``base``. Re-adding a key with another manifest unloads nothing:
        call it before the first ``get`` of the key, or ``unload`` the key first."""
        self._derived[manifest.model_id] = (manifest, base)

    def derived(self, model_id: str) -> ModelManifest | None:
        entry = self._derived.get(model_id)
        return entry[0] if entry else None

    async def drop_derived(self, model_id: str) -> None:
        """Unload (draining) a derived model and stop serving its key."""
        model = self._loaded.get(model_id)
        if model is not None:
            await self._unload(model)
        self._derived.pop(model_id, None)
        self.forget(model_id)

    def forget(self, model_id: str) -> None:
        """Drop what is kept about a model that left the store (counters, back-off, metric series)."""
        for kept in (self._misses, self._failed, self._sizes):
            kept.pop(model_id, None)
        self._pins.discard(model_id)
        self._policy.forget(model_id)
        self._metrics.forget_model(model_id)

    async def forget_missing(self) -> list[str]:
        """Unload (draining) models whose folder left the store or whose manifest changed."""
        loaded = list(self._loaded.items())
        present = set(await asyncio.to_thread(self.store.model_ids))
        current = await asyncio.to_thread(self._read_manifests, [m for m, _ in loaded if m in present])
        gone = [
            model
            for model_id, model in loaded
            if model_id not in self._derived and current.get(model_id) != model.manifest
        ]
        bases = await asyncio.to_thread(
            self._read_manifests, sorted({base.model_id for _, base in self._derived.values()} & present)
        )
        stale = [key for key, (_, base) in self._derived.items() if bases.get(base.model_id) != base]
        gone += [self._loaded[key] for key in stale if key in self._loaded]
        for key in stale:
            del self._derived[key]
        present |= set(self._derived)
        self._failed.clear()  # the store changed: a failed model may load now
        await asyncio.gather(*(self._unload(model) for model in gone))
        kept = {
            *self._misses,
            *self._sizes,
            *self._pins,
            *self._policy.tracked(),
            *(m.model_id for m in gone),
        }
        for model_id in kept:
            if model_id not in present:  # after the unloads: their timings are series too
                self.forget(model_id)
        return [model.model_id for model in gone]

    def _read_manifests(self, model_ids: list[str]) -> dict[str, ModelManifest | None]:
        found: dict[str, ModelManifest | None] = {}
        for model_id in model_ids:
            try:
                found[model_id] = self.store.manifest(model_id)
            except (ModelNotFound, ManifestError):
                found[model_id] = None
        return found

    async def unload_all(self) -> None:
        await asyncio.gather(*(self._unload(model) for model in list(self._loaded.values())))

    def loaded_ids(self) -> set[str]:
        return set(self._loaded)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    @property
    def loaded_bytes(self) -> int:
        return sum(model.size_bytes for model in self._loaded.values())

    async def status(self) -> list[ModelStatus]:
        """Every model in the store (the store is read, and sources sized, off the event loop)."""
        disk = await asyncio.to_thread(self._disk_view, None)
        return [self._status(model_id, *view) for model_id, view in disk.items()]

    async def model_status(self, model_id: str) -> ModelStatus:
        validate_model_id(model_id)
        manifest, estimate = (await asyncio.to_thread(self._disk_view, [model_id]))[model_id]
        if manifest is None:
            raise ModelNotFound(f"model {model_id!r} is not in the model store")
        return self._status(model_id, manifest, estimate)

    def _disk_view(self, model_ids: list[str] | None) -> DiskView:
        return disk_view(self.store, self._sizes, model_ids)

    # -- loading -------------------------------------------------------------------------
    def _start_load(self, model_id: str) -> asyncio.Future[LoadedModel]:
        """Start loading a model of the store (NOT_FOUND when it is not there)."""
        manifest = self._manifest(model_id)
        self._check_backoff(model_id)
        pending: asyncio.Future[LoadedModel] = asyncio.get_running_loop().create_future()
        self._loading[model_id] = pending
        asyncio.get_running_loop().create_task(self._load(manifest, pending))
        return pending

    async def _wait_for_load(self, model_id: str, deadline: float | None) -> LoadedModel:
        pending = self._loading.get(model_id) or self._start_load(model_id)
        return await self._wait(model_id, pending, deadline)

    async def _wait(
        self, model_id: str, pending: asyncio.Future[LoadedModel], deadline: float | None
    ) -> LoadedModel:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.shield(pending), timeout)
        except TimeoutError:
            raise Unavailable(
                f"model {model_id!r} is still loading; retry shortly", retry_after_s=1.0
            ) from None

    def _manifest(self, model_id: str) -> ModelManifest:
        derived = self._derived.get(model_id)
        if derived is not None:
            return derived[0]
        try:
            return self.store.manifest(model_id)
        except ManifestError as exc:
            raise Unavailable(f"model {model_id!r} cannot be served: {exc}") from None

    def _check_backoff(self, model_id: str) -> None:
        failure = self._failed.get(model_id)
        if failure is None:
            return
        wait = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** (failure.count - 1))
        remaining = failure.at + wait - time.monotonic()
        if remaining > 0:
            raise Unavailable(f"model {model_id!r} failed to load: {failure.reason}", retry_after_s=remaining)

    async def _load(self, manifest: ModelManifest, pending: asyncio.Future[LoadedModel]) -> None:
        model_id = manifest.model_id
        if self._load_slots is None:
            self._load_slots = asyncio.Semaphore(self.settings.max_concurrent_loads)
        try:
            async with self._load_slots:
                need = await asyncio.to_thread(self._load_need, manifest)
                await self._room.make_room(need, model_id)
                with self._room.reserve(need):
                    model = await asyncio.to_thread(self._load_sync, manifest, need)
                model.pinned = model_id in self._pins or pinned_by_manifest(manifest)
                self._sizes[model_id] = model.size_bytes
                self._loaded[model_id] = model
                await self._room.make_room(0, model_id)  # the measured size may exceed the estimate
        except BaseException as exc:
            reason = exc.message if isinstance(exc, TaskgateError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, Unavailable):
                log.exception("loading model %s failed", model_id)
                count = self._failed[model_id].count + 1 if model_id in self._failed else 1
                self._failed[model_id] = _Failure(reason, time.monotonic(), count)
            error = (
                exc
                if isinstance(exc, Unavailable)
                else Unavailable(
                    f"model {model_id!r} failed to load: {reason}",
                    retry_after_s=self.settings.retry_initial_s,
                )
            )
            pending.set_exception(error)
            pending.exception()  # retrieved: there may be no waiter left
        else:
            self._failed.pop(model_id, None)
            pending.set_result(model)
        finally:
            self._loading.pop(model_id, None)
            self._report()

    def _load_need(self, manifest: ModelManifest) -> int:
        """Bytes to hold for a load while it runs: its remembered size, or its peak when larger."""
        files = estimate_size(manifest)
        known = self._sizes.get(manifest.model_id) or files
        if not self.settings.measure_rss:
            return known
        return max(known, int(files * self._meter.peak_ratio(manifest.runtime)))

    def _load_sync(self, manifest: ModelManifest, reserved: int) -> LoadedModel:
        started = time.perf_counter()
        factory = factory_for(manifest.runtime, derived=manifest.model_id in self._derived)
        runtime = factory(
            source=manifest.source, work_dir=manifest.folder, options=manifest.settings, threads=self._threads
        )
        _check_tasks(manifest, runtime)

        def load() -> None:
            runtime.load()
            if manifest.settings.get("warmup"):
                runtime.warmup()

        if self.settings.measure_rss:
            _, size = self._meter.measure(manifest.runtime, runtime.size_bytes, load, self._activity)
        else:
            load()
            size = runtime.size_bytes()
        self.load_count += 1
        elapsed = time.perf_counter() - started
        self._metrics.load_seconds.labels(manifest.model_id).observe(elapsed)
        log.info(
            "loaded model %s in %.2f s (%d bytes, %d reserved while loading)",
            manifest.model_id,
            elapsed,
            size,
            reserved,
        )
        return LoadedModel(manifest, runtime, size, elapsed)

    async def _unload(self, model: LoadedModel) -> None:
        """Take the model out of service, let its requests finish (bounded), then unload it."""
        if self._loaded.get(model.model_id) is not model:
            return
        del self._loaded[model.model_id]  # new requests no longer reach this instance
        started = time.perf_counter()
        if model.inflight:
            model.idle = asyncio.Event()
            log.info("unloading model %s: draining %d requests", model.model_id, model.inflight)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(model.idle.wait(), self.settings.drain_timeout_s)
        for listener in self._unload_listeners:  # requests still running now end UNAVAILABLE
            await listener(model)
        await asyncio.to_thread(model.runtime.unload)
        await asyncio.to_thread(trim_heap)
        self._metrics.unload_seconds.labels(model.model_id).observe(time.perf_counter() - started)
        log.info("unloaded model %s (%d bytes)", model.model_id, model.size_bytes)
        self._report()

    def _activity(self) -> tuple[int, int]:
        """(requests running, requests started so far): read from the loading thread."""
        return self._running, self._started

    def _report(self) -> None:
        self._metrics.loaded_models.set(len(self._loaded))
        self._metrics.loaded_bytes.set(self.loaded_bytes)

    def _status(self, model_id: str, manifest: ModelManifest | str | None, estimate: int) -> ModelStatus:
        if not isinstance(manifest, ModelManifest):
            return unreadable_status(
                model_id, manifest or "not in the model store", self.store.root / model_id
            )
        loaded = self._loaded.get(model_id)
        failure = self._failed.get(model_id)
        if loaded:
            state = "LOADED"
        elif model_id in self._loading:
            state = "LOADING"
        else:
            state = "FAILED" if failure else "NOT_LOADED"
        return ModelStatus(
            model_id=model_id,
            state=state,
            tasks=tuple(sorted(task.value for task in manifest.tasks)),
            runtime=manifest.runtime,
            source=str(manifest.source),
            size_bytes=loaded.size_bytes if loaded else 0,
            estimated_size_bytes=self._sizes.get(model_id) or estimate,
            pinned=model_id in self._pins or pinned_by_manifest(manifest),
            hits=loaded.hits if loaded else 0,
            misses=self._misses.get(model_id, 0),
            inflight=loaded.inflight if loaded else 0,
            last_used=loaded.last_used if loaded else 0.0,
            load_seconds=loaded.load_seconds if loaded else 0.0,
            reason=failure.reason if failure and not loaded else "",
            folder=str(manifest.folder),
        )


def _check_tasks(manifest: ModelManifest, runtime: Runtime[Any, Any]) -> None:
    try:
        check_settings(manifest.runtime, manifest.settings)
    except InvalidInput as exc:
        raise ManifestError(f"model {manifest.model_id!r}: {exc.message}") from None
    if isinstance(runtime, EncoderRuntime):
        kind = f"{runtime.head} model"
        if runtime.head == "classification":
            allowed = {Task.TEXT_CLASSIFICATION, Task.TOKENIZATION}
        else:
            allowed = {Task.EMBEDDING, Task.SENTENCE_SIMILARITY, Task.RERANK, Task.TOKENIZATION}
    elif isinstance(runtime, CausalLMRuntime):
        kind, allowed = "causal language model", {Task.TEXT_GENERATION}
    else:
        return
    extra = manifest.tasks - allowed
    if extra:
        names = ", ".join(sorted(task.value for task in extra))
        raise ManifestError(f"model {manifest.model_id!r} lists tasks its {kind} cannot serve: {names}")
