"""Taskgate's jobs, events and files as OpenAI's objects (openai 3.51 ``types/fine_tuning/
fine_tuning_job.py``, ``fine_tuning_job_event.py``, ``types/file_object.py``).

A job's OpenAI fields come first; Taskgate's own follow as extra fields, which the official
client keeps (``job.state``, ``job.progress``, ... ; ``job.model_extra`` lists them):
``state`` (Caikit's: QUEUED, RUNNING, COMPLETED, CANCELED, ERRORED), ``progress`` (step,
total_steps, epoch, loss, learning_rate, eta_s of the last optimizer step), ``metrics`` (the
evaluation's: ``val_accuracy`` or ``val_loss``, ``train_loss``), ``reasons``, ``adapter`` (the
published version, ``name@N``), ``adapter_name`` (what the job publishes), ``started_at``.
"""

from __future__ import annotations

import time
from typing import Any

from adapters.jobs.store import JobEvent, JobRecord, JobState
from gateway.frontends.http.common import Json
from gateway.tuning.service import UploadedFile

ORGANIZATION = "taskgate"
STATUS = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.COMPLETED: "succeeded",
    JobState.CANCELED: "cancelled",
    JobState.ERRORED: "failed",
}
EVENT_ID_PREFIX = "ftevent-"


def file_object(info: UploadedFile) -> Json:
    return {
        "id": info.id,
        "object": "file",
        "bytes": info.bytes,
        "created_at": info.created_at,
        "filename": info.filename,
        "purpose": info.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
        "records": info.records,  # Taskgate's: JSON lines parsed
    }


def job_object(record: JobRecord, sources: Json, config: Json, default_learning_rate: float) -> Json:
    """``sources``: the data the request named (file ids, datasets); ``config``: the method's
    effective hyper-parameters (defaults filled in)."""
    adapter = record.result.get("adapter")
    published = record.state is JobState.COMPLETED and adapter is not None
    return {
        "id": record.id,
        "object": "fine_tuning.job",
        "created_at": int(record.created_at),
        "finished_at": int(record.finished_at) if record.finished_at is not None else None,
        "model": record.base_model,
        "fine_tuned_model": record.name if published else None,
        "organization_id": ORGANIZATION,
        "result_files": [],
        "status": STATUS[record.state],
        "validation_file": sources.get("validation_file"),
        "training_file": sources.get("training_file"),
        "hyperparameters": _openai_hyperparameters(config, default_learning_rate),
        "trained_tokens": None,
        "error": _error(record),
        "seed": config.get("seed"),
        "estimated_finish": _estimated_finish(record),
        "integrations": [],
        "metadata": None,
        "method": {"type": record.method, record.method: {"hyperparameters": config}},
        # Taskgate's
        "state": record.state.value,
        "progress": dict(record.progress),
        "metrics": dict(record.result.get("metrics") or {}),
        "reasons": list(record.reasons),
        "adapter": adapter,
        "adapter_name": record.name,
        "started_at": int(record.started_at) if record.started_at is not None else None,
        "training_dataset": sources.get("training_dataset"),
        "validation_dataset": sources.get("validation_dataset"),
    }


def _openai_hyperparameters(config: Json, default_learning_rate: float) -> Json:
    rate = config.get("learning_rate")
    multiplier = None
    if isinstance(rate, int | float) and default_learning_rate > 0:
        multiplier = rate / default_learning_rate
    return {
        "n_epochs": config.get("num_epochs"),
        "batch_size": config.get("batch_size"),
        "learning_rate_multiplier": multiplier,
    }


def _error(record: JobRecord) -> Json | None:
    if record.state is not JobState.ERRORED:
        return None
    reasons = list(record.reasons)
    code = "interrupted" if reasons == ["interrupted"] else "training_failed"
    return {"code": code, "message": "; ".join(reasons) or "the tuning job failed", "param": None}


def _estimated_finish(record: JobRecord) -> int | None:
    eta = record.progress.get("eta_s")
    if record.state is not JobState.RUNNING or not isinstance(eta, int | float):
        return None
    return int(time.time() + eta)


def event_id(event: JobEvent) -> str:
    return f"{EVENT_ID_PREFIX}{event.job_id.removeprefix('ftjob-')}-{event.seq}"


def event_seq(value: str, job_id: str) -> int | None:
    """The sequence number in an event id of ``job_id`` (None when it is not one)."""
    prefix = f"{EVENT_ID_PREFIX}{job_id.removeprefix('ftjob-')}-"
    tail = value.removeprefix(prefix) if value.startswith(prefix) else ""
    return int(tail) if tail.isdigit() and len(tail) <= 12 else None


def event_object(event: JobEvent) -> Json:
    data: dict[str, Any] = dict(event.data)
    metrics = "step" in data or "metrics" in data
    return {
        "id": event_id(event),
        "object": "fine_tuning.job.event",
        "created_at": int(event.created_at),
        "level": "warn" if event.level.startswith("warn") else event.level,
        "message": event.message,
        "data": data or None,
        "type": "metrics" if metrics else "message",
        "seq": event.seq,  # Taskgate's: the event's number within its job (1, 2, ...)
    }
