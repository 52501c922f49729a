"""The job manager: a bounded queue of tuning jobs, each run in its own worker process, published
into the adapter store on evidence.

A job is prepare -> train -> evaluate -> publish. ``submit`` checks everything it can before a job
exists (the caller turns ``JobRequestError`` into INVALID_ARGUMENT / 400 naming the field, and
``QueueFull`` into RESOURCE_EXHAUSTED / 429), writes the job's data into its own folder and queues
it. At most ``max_concurrent_jobs`` run at once. A job whose worker dies (a crash, SIGKILL, an
out-of-memory) ends ERRORED with the signal in its reasons and publishes nothing. With a gate,
a job publishes only when its validation metric beats the adapter's current version (or the
threshold given); otherwise it ends COMPLETED with the reason "not published: ...".

``follow(job_id)`` is the live progress feed: the stored events, then new ones as they happen,
until the job finishes; a client may attach at any point of the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from adapters.jobs.store import JobEvent, JobNotFound, JobRecord, JobState, JobStore
from adapters.store import AdapterStore, AdapterStoreError, AdapterVersion
from gateway.settings import TuningSettings

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"val_loss", "train_loss"}


class JobRequestError(ValueError):
    """A request refused before any job exists; ``field`` names what is wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class QueueFull(RuntimeError):
    pass


@dataclass(frozen=True)
class Gate:
    """Publish only on evidence: ``metric`` must beat ``threshold``, or the current version's value."""

    metric: str
    threshold: float | None = None

    def beats(self, value: float, reference: float) -> bool:
        return value < reference if self.metric in LOWER_IS_BETTER else value > reference


@dataclass(frozen=True)
class JobRequest:
    """A validated job: what the worker runs (``spec``) and what publishing needs."""

    name: str
    method: str
    base_model: str
    spec: dict[str, Any]  # the trainer's spec, data paths filled in by the manager
    train_records: list[dict[str, Any]]
    validation_records: list[dict[str, Any]] = field(default_factory=list)
    gate: Gate | None = None


Published = Callable[[AdapterVersion], Awaitable[None]]


class JobManager:
    def __init__(
        self,
        jobs: JobStore,
        adapters: AdapterStore,
        jobs_dir: Path,
        settings: TuningSettings,
        on_published: Published | None = None,
    ) -> None:
        self.jobs = jobs
        self.adapters = adapters
        self.jobs_dir = jobs_dir
        self.settings = settings
        self._on_published = on_published
        self._queue: list[str] = []
        self._running: dict[str, _RunningJob] = {}
        self._watchers: dict[str, set[asyncio.Queue[JobEvent | None]]] = {}
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        interrupted, queued = await asyncio.to_thread(self.jobs.recover)
        for job_id in interrupted:
            log.warning("tuning job %s was running when the gateway stopped: ERRORED (interrupted)", job_id)
        self._queue.extend(queued)
        self._pump_task = asyncio.create_task(self._pump())
        self._wake.set()

    async def close(self) -> None:
        """Stop taking jobs; running workers are stopped (their jobs end ERRORED, interrupted)."""
        self._closing = True
        self._wake.set()
        for running in list(self._running.values()):
            running.interrupt = True
            running.stop.set()
        for running in list(self._running.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(running.done), 30)
        if self._pump_task is not None:
            await self._pump_task

    # -- requests ------------------------------------------------------------------------
    async def submit(self, request: JobRequest) -> JobRecord:
        if len(self._queue) >= self.settings.max_queued_jobs:
            raise QueueFull(
                f"the tuning queue holds {len(self._queue)} jobs, its limit; retry when one has started"
            )
        if await asyncio.to_thread(self.jobs.name_in_use, request.name):
            raise JobRequestError("name", f"a queued or running job already tunes {request.name!r}")
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        folder = self._folder(job_id)
        spec = await asyncio.to_thread(self._write_job_files, folder, request)
        record = await asyncio.to_thread(
            self.jobs.create, job_id, request.name, request.method, request.base_model, spec
        )
        await self._event(
            job_id, "info", f"queued: {request.method} on {request.base_model} -> {request.name}"
        )
        self._queue.append(job_id)
        self._wake.set()
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        record = await asyncio.to_thread(self.jobs.get, job_id)
        if record.state.finished:
            return record
        if job_id in self._queue:
            self._queue.remove(job_id)
            record = await asyncio.to_thread(
                self.jobs.set_state, job_id, JobState.CANCELED, reasons=["cancelled"]
            )
            await self._event(job_id, "info", "cancelled before it started")
            self._finish_watchers(job_id)
            return record
        running = self._running.get(job_id)
        if running is not None:
            running.stop.set()
            await self._event(job_id, "info", "cancel requested; stopping after the current step")
        return await asyncio.to_thread(self.jobs.get, job_id)

    async def get(self, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self.jobs.get, job_id)

    async def follow(self, job_id: str, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        """The job's events after ``after_seq``, then live ones until the job finishes."""
        queue: asyncio.Queue[JobEvent | None] = asyncio.Queue(maxsize=10_000)
        self._watchers.setdefault(job_id, set()).add(queue)
        try:
            record = await asyncio.to_thread(self.jobs.get, job_id)
            seen = after_seq
            while True:  # the stored events, a page at a time
                page = await asyncio.to_thread(self.jobs.events, job_id, after_seq=seen, limit=1000)
                for event in page:
                    seen = event.seq
                    yield event
                if len(page) < 1000:
                    break
            if record.state.finished and job_id not in self._running:
                return
            while True:
                item = await queue.get()
                if item is None:
                    return
                if item.seq > seen:
                    seen = item.seq
                    yield item
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    self._watchers.pop(job_id, None)

    # -- the queue -----------------------------------------------------------------------
    async def _pump(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while (
                self._queue and len(self._running) < self.settings.max_concurrent_jobs and not self._closing
            ):
                job_id = self._queue.pop(0)
                try:
                    record = await asyncio.to_thread(self.jobs.get, job_id)
                except JobNotFound:
                    continue
                if record.state is not JobState.QUEUED:
                    continue
                running = _RunningJob(job_id, asyncio.get_running_loop().create_future())
                self._running[job_id] = running
                running.task = asyncio.create_task(self._run(record, running))

    async def _run(self, record: JobRecord, running: _RunningJob) -> None:
        job_id = record.id
        try:
            await asyncio.to_thread(self.jobs.set_state, job_id, JobState.RUNNING)
            await self._event(job_id, "info", "running: preparing the base model and the data")
            outcome = await self._supervise(record, running)
            await self._conclude(record, running, outcome)
        except Exception as exc:  # never leave a job RUNNING
            log.exception("tuning job %s failed in the gateway", job_id)
            await asyncio.to_thread(
                self.jobs.set_state, job_id, JobState.ERRORED, reasons=[f"{type(exc).__name__}: {exc}"]
            )
        finally:
            self._running.pop(job_id, None)
            self._finish_watchers(job_id)
            if not running.done.done():
                running.done.set_result(None)
            self._wake.set()

    async def _supervise(self, record: JobRecord, running: _RunningJob) -> dict[str, Any]:
        """Start the worker and relay its messages until it exits; its last word, or how it died."""
        from adapters.jobs.worker import worker_main

        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=False)
        output = self._folder(record.id) / "output"
        shutil.rmtree(output, ignore_errors=True)
        process = context.Process(
            target=worker_main,
            args=(record.spec, str(output), child, running.stop, self.settings.nice, self.settings.threads),
            name=f"taskgate-tune-{record.id}",
            daemon=True,
        )
        process.start()
        child.close()
        running.process = process
        last: dict[str, Any] = {}
        while True:
            message = await asyncio.to_thread(_receive, parent, 0.5)
            if message is _EOF:
                break
            if message is None:
                if not process.is_alive():
                    break
                continue
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            if kind == "progress":
                progress = {k: v for k, v in message.items() if k != "type"}
                await asyncio.to_thread(self.jobs.set_progress, record.id, progress)
                await self._event(record.id, "info", _progress_line(progress), progress)
            elif kind == "log":
                await self._event(record.id, "info", str(message.get("message", "")))
            else:
                last = message
        await asyncio.to_thread(process.join, 10)
        parent.close()
        if not last:
            code = process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            hint = " (killed: out of memory?)" if code == -9 else ""
            last = {"type": "died", "reason": f"the tuning worker died: {how}{hint}"}
        return last

    async def _conclude(self, record: JobRecord, running: _RunningJob, outcome: dict[str, Any]) -> None:
        job_id = record.id
        kind = outcome.get("type")
        if kind == "cancelled" or (running.stop.is_set() and kind != "result"):
            state = JobState.ERRORED if running.interrupt else JobState.CANCELED
            reason = "interrupted" if running.interrupt else "cancelled"
            await asyncio.to_thread(self.jobs.set_state, job_id, state, reasons=[reason])
            await self._event(job_id, "info", reason)
            return
        if kind != "result":
            reason = str(outcome.get("reason", "the tuning worker failed"))
            if outcome.get("trace"):
                log.error("tuning job %s failed:\n%s", job_id, outcome["trace"])
            await asyncio.to_thread(self.jobs.set_state, job_id, JobState.ERRORED, reasons=[reason])
            await self._event(job_id, "error", reason)
            return
        metrics = {k: float(v) for k, v in outcome.get("metrics", {}).items() if isinstance(v, int | float)}
        await self._event(job_id, "info", "evaluated: " + _metrics_line(metrics), {"metrics": metrics})
        verdict = await asyncio.to_thread(self._gate, record, metrics)
        if verdict:
            await asyncio.to_thread(
                self.jobs.set_state,
                job_id,
                JobState.COMPLETED,
                reasons=[verdict],
                result={"metrics": metrics},
            )
            await self._event(job_id, "info", verdict)
            return
        output = self._folder(job_id) / "output"
        version = await asyncio.to_thread(
            self.adapters.publish,
            record.name,
            output,
            base_model=record.base_model,
            method=record.method,
            job_id=job_id,
            metrics=metrics,
            extra={**await asyncio.to_thread(adapter_extra, output), **_owner_extra(record.spec)},
        )
        if self._on_published is not None:
            await self._on_published(version)  # the registry serves it from the next request on
        result = {"metrics": metrics, "adapter": version.reference, "version": version.version}
        await asyncio.to_thread(
            self.jobs.set_state,
            job_id,
            JobState.COMPLETED,
            reasons=[f"published {version.reference}"],
            result=result,
        )
        await self._event(job_id, "info", f"published {version.reference}", result)

    def _gate(self, record: JobRecord, metrics: dict[str, float]) -> str:
        """'' to publish, else the reason not to."""
        raw = record.spec.get("gate")
        if not raw:
            return ""
        gate = Gate(metric=str(raw["metric"]), threshold=raw.get("threshold"))
        value = metrics.get(gate.metric)
        if value is None:
            return f"not published: the job reported no {gate.metric}"
        if gate.threshold is not None:
            if gate.beats(value, float(gate.threshold)):
                return ""
            return (
                f"not published: {gate.metric} {value:.4g} does not beat the threshold {gate.threshold:.4g}"
            )
        try:
            current = self.adapters.get(record.name)
        except AdapterStoreError:
            return ""  # nothing to beat
        reference = current.metrics.get(gate.metric)
        if reference is None or gate.beats(value, reference):
            return ""
        return (
            f"not published: {gate.metric} {value:.4g} does not beat {reference:.4g} "
            f"of the current version {current.reference}"
        )

    # -- helpers -------------------------------------------------------------------------
    def _folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _write_job_files(self, folder: Path, request: JobRequest) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        spec = dict(request.spec)
        spec["train_path"] = str(_write_jsonl(folder / "train.jsonl", request.train_records))
        if request.validation_records:
            spec["validation_path"] = str(
                _write_jsonl(folder / "validation.jsonl", request.validation_records)
            )
        if request.gate is not None:
            spec["gate"] = {"metric": request.gate.metric, "threshold": request.gate.threshold}
        return spec

    async def _event(self, job_id: str, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        event = await asyncio.to_thread(self.jobs.add_event, job_id, level, message, data)
        for queue in list(self._watchers.get(job_id, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    def _finish_watchers(self, job_id: str) -> None:
        for queue in list(self._watchers.get(job_id, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def running_jobs(self) -> list[str]:
        return list(self._running)

    def worker_pid(self, job_id: str) -> int | None:
        running = self._running.get(job_id)
        return running.process.pid if running is not None and running.process is not None else None


@dataclass
class _RunningJob:
    job_id: str
    done: asyncio.Future[None]
    stop: Any = field(default_factory=lambda: multiprocessing.get_context("spawn").Event())
    process: Any = None
    interrupt: bool = False
    task: asyncio.Task[None] | None = None


_EOF = object()


def _receive(conn: Connection, timeout: float) -> object:
    try:
        if conn.poll(timeout):
            return conn.recv()
    except (EOFError, OSError):
        return _EOF
    return None


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def _progress_line(progress: dict[str, Any]) -> str:
    parts = [f"step {progress.get('step')}/{progress.get('total_steps')}"]
    for name in ("epoch", "loss", "learning_rate", "eta_s"):
        value = progress.get(name)
        if isinstance(value, int | float):
            parts.append(f"{name} {value:.4g}")
    return ", ".join(parts)


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())) or "no metrics"


def _owner_extra(spec: dict[str, Any]) -> dict[str, Any]:
    """The owner of the job (the tenant that made it) and whether its adapter is public, as
    ``TuningService`` recorded them in the spec; serving checks them (``adapter_serving``)."""
    access = spec.get("access")
    if not isinstance(access, dict) or not access.get("owner"):
        return {}
    return {"owner": str(access["owner"]), "public": access.get("public") is True}


def adapter_extra(output: Path) -> dict[str, Any]:
    """What serving needs to know from the trainer's ``tuning.json``: the verbalizer a prompt goes
    through, the tasks of a multi-task prompt, a classifier's labels."""
    try:
        about = json.loads((output / "tuning.json").read_text())
    except (OSError, ValueError):
        return {}
    keep = ("verbalizer", "tasks", "labels", "eos_token", "hyperparameters")
    return {key: about[key] for key in keep if key in about}
