"""Compose the gateway: store -> registry -> core, and both frontends on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn

from adapters.jobs.manager import JobManager
from adapters.jobs.store import JobState, JobStore
from adapters.store import AdapterStore
from gateway.core import TaskService
from gateway.frontends.grpc.server import start_grpc
from gateway.frontends.http.app import create_app
from gateway.metrics import Metrics
from gateway.models.management import ModelManagement
from gateway.models.memory import limit_arenas
from gateway.models.registry import ModelRegistry
from gateway.models.single_model import install_single_model
from gateway.models.store import ModelStore, prepare_store
from gateway.models.store_watch import watch_store
from gateway.ops import tls
from gateway.ops.access import Admission
from gateway.ops.loop_lag import watch_loop_lag
from gateway.ops.shutdown import Drain
from gateway.settings import Settings
from gateway.tuning.service import TuningService
from gateway.tuning.serving import AdapterServing
from runtimes import export_worker

log = logging.getLogger(__name__)

STOP_GRACE_S = 2  # after the drain (or its deadline), for what is still answering


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns SIGINT / SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Addresses:
    grpc: str
    http: str


class Gateway:
    """One serving process: ``await start()``, then ``await stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry(
            ModelStore(settings.model_store), settings.runtime, settings.registry, self.metrics
        )
        self.core = TaskService(self.registry, settings.limits, settings.runtime, self.metrics)
        self.metrics.watch_generation(self.core.generation.sample)
        models_dir = settings.server.modelmesh_models_dir
        self.management = ModelManagement(self.registry, Path(models_dir) if models_dir else None)
        # tuned adapters and tuning jobs live beside the models, in folders no model id can name
        root = self.registry.store.root
        self.adapter_store = AdapterStore(root / ".adapters")
        self.adapters = AdapterServing(
            self.registry, self.adapter_store, settings.registry.adapter_cache_bytes, self.metrics
        )
        self.core.adapters = self.adapters
        self.jobs_dir = root / ".jobs"
        self.jobs: JobManager | None = None  # opened at start (its SQLite file is created then)
        self.tuning: TuningService | None = None
        self._watch_stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.addresses = Addresses("", "")
        self.drain = Drain()  # graceful shutdown (gateway/shutdown.py): both access gates see it
        self.admission = Admission(settings.api_keys, self.drain, settings.limits.max_inflight)

    async def start(self) -> Addresses:
        server = self.settings.server
        budgeted = self.settings.registry
        if budgeted.memory_budget_bytes and budgeted.malloc_arenas:
            limit_arenas(budgeted.malloc_arenas)  # before model threads exist: freed memory is reused
        if self.settings.single_model is not None:  # a KServe predictor: the model at /mnt/models
            await asyncio.to_thread(install_single_model, self.registry.store, self.settings.single_model)
        await asyncio.to_thread(prepare_store, self.registry.store)
        await asyncio.to_thread(self.adapter_store.clean_staging)
        job_store = await asyncio.to_thread(JobStore, self.jobs_dir / "jobs.sqlite")
        self.metrics.watch_jobs(job_store.state_counts, tuple(state.value for state in JobState))
        self.jobs = JobManager(
            job_store, self.adapter_store, self.jobs_dir, self.settings.tuning, self.adapters.on_published
        )
        await self.jobs.start()
        self.tuning = TuningService(self.jobs, self.adapters, self.registry.store, self.settings.tuning)
        for model_id in self.settings.preload:
            await self.registry.get(model_id)
        self._watch_task = asyncio.create_task(watch_store(self.registry, self._watch_stop))
        self._grpc, grpc_port = await start_grpc(
            self.core, self.management, server, self.settings.registry, self.tuning, self.admission
        )
        config = uvicorn.Config(
            create_app(self.core, self.management, server, self.tuning, self.admission),
            host=server.host,
            port=server.http_port,
            log_level=server.log_level,
            access_log=False,
            log_config=None,  # uvicorn's lines go through the root logger (text or JSON, log_format)
            lifespan="off",
            http="httptools",
            backlog=server.http_backlog,
            timeout_graceful_shutdown=STOP_GRACE_S,  # after the drain: what is left is cut
            **tls.uvicorn_options(server),
        )
        # uvicorn logs access lines whenever any ancestor logger has a handler; we don't want them
        logging.getLogger("uvicorn.access").propagate = False
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                await self._http_task  # re-raises the bind error
                raise OSError(f"HTTP server on {server.host}:{server.http_port} stopped at start-up")
            await asyncio.sleep(0.01)
        # from here on the loop serves: its lag is measured (start-up's imports and app building are not)
        self._lag_task = asyncio.create_task(watch_loop_lag(self.metrics, self._watch_stop))
        http_port = self._http.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if tls.enabled(server) else "http"
        self.addresses = Addresses(f"{server.host}:{grpc_port}", f"{scheme}://{server.host}:{http_port}")
        return self.addresses

    async def shutdown(self) -> None:
        """SIGTERM: readiness false and new work refused at once; admitted requests and streams
        finish for up to ``shutdown_timeout_s``; generation streams still running then end
        UNAVAILABLE; then ``stop()`` (running tuning jobs end interrupted)."""
        timeout_s = self.settings.server.shutdown_timeout_s
        await self.drain.begin()
        log.info("draining: %d requests in flight, waiting up to %.0f s", self.drain.inflight, timeout_s)
        if not await self.drain.wait_idle(timeout_s):
            log.warning("drain deadline passed with %d requests in flight: cutting them", self.drain.inflight)
            await asyncio.to_thread(self.core.generation.close)  # every stream ends UNAVAILABLE
            await self.drain.wait_idle(STOP_GRACE_S)
        await self.stop(grace_s=STOP_GRACE_S)

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
        if self.jobs is not None:
            await self.jobs.close()  # running jobs end ERRORED "interrupted"
            await asyncio.to_thread(self.jobs.jobs.close)
        self._watch_stop.set()
        for task in (self._watch_task, self._lag_task):
            if task is not None:
                await task
        await self.core.close()
        await self.registry.unload_all()
        await asyncio.to_thread(export_worker.shutdown)  # an export worker goes with the server
