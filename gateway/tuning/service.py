"""TuningService: the protocol-neutral tuning API every door calls (Caikit's training routes, the
OpenAI-shaped fine-tuning API, Taskgate's gRPC jobs service, adapter management).

A request is checked whole before any job exists, and a refusal names the field at fault
(``InvalidInput(..., param=...)``): the adapter name (valid, not a model's id, not tuned by a
queued or running job, of the same base and method as its earlier versions), the base model
(in the store, of the kind the method tunes; nothing is loaded or converted for the check), the
hyper-parameters (the method's config), the data (inline records, an uploaded file's id, or a
JSONL file under the store's ``.datasets/`` folder; every record parsed) and the gate. A full
queue is ``Overloaded``; an unknown job or file is ``ModelNotFound`` (NOT_FOUND / 404).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.jobs.manager import Gate, JobManager, JobRequest, JobRequestError, QueueFull
from adapters.jobs.store import JobEvent, JobNotFound, JobRecord
from adapters.store import AdapterNotFound, AdapterStoreError, AdapterVersion, is_adapter_name
from gateway.errors import InvalidInput, ModelNotFound, Overloaded, PayloadTooLarge, PermissionDenied
from gateway.models.store import ModelStore, is_within
from gateway.ops.access import Tenant, current_tenant
from gateway.settings import TuningSettings
from gateway.tuning.serving import OWNER, PUBLIC, AdapterServing

DATASETS = ".datasets"
FILES = ".files"
_FILE_ID = re.compile(r"file-[0-9a-f]{24}")
MAX_FILE_BYTES = 64 * 1024 * 1024
ACCESS = "access"  # a job spec's owner: {"owner": tenant, "public": bool}
GATE_METRICS = ("val_loss", "val_accuracy", "train_loss")


@dataclass(frozen=True)
class DataRef:
    """Where a job's records come from: exactly one of the three."""

    records: Sequence[Mapping[str, Any]] | None = None
    file_id: str | None = None
    dataset: str | None = None  # a path under <store>/.datasets/


@dataclass(frozen=True)
class JobInput:
    name: str  # the adapter the job publishes (a new version when it exists)
    method: str
    base_model: str
    train: DataRef
    validation: DataRef | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    gate: Mapping[str, Any] | None = None  # {"metric": ..., "threshold": optional}


@dataclass(frozen=True)
class UploadedFile:
    id: str
    filename: str
    bytes: int
    records: int
    created_at: int
    purpose: str


class TuningService:
    def __init__(
        self, manager: JobManager, adapters: AdapterServing, models: ModelStore, settings: TuningSettings
    ) -> None:
        self.manager = manager
        self.adapters = adapters
        self.models = models
        self.settings = settings
        self._files = models.root / FILES
        self._datasets = models.root / DATASETS

    # -- jobs ----------------------------------------------------------------------------
    async def create_job(self, request: JobInput) -> JobRecord:
        """The job is the caller's (``current_tenant()``): its adapter is served to that tenant
        alone unless the tenant publishes publicly, and other tenants do not see the job."""
        checked = await asyncio.to_thread(self._check, request, current_tenant())
        try:
            return await self.manager.submit(checked)
        except QueueFull as exc:
            raise Overloaded(str(exc), retry_after_s=30.0) from None
        except JobRequestError as exc:
            raise InvalidInput(str(exc), param=exc.field) from None

    async def job(self, job_id: str) -> JobRecord:
        try:
            record = await self.manager.get(_job_id(job_id))
        except JobNotFound:
            raise ModelNotFound(f"no tuning job {job_id!r}") from None
        if not _job_visible(record, current_tenant()):
            raise ModelNotFound(f"no tuning job {job_id!r}")
        return record

    async def jobs(self, *, after: str | None = None, limit: int = 20) -> list[JobRecord]:
        if after is not None:
            await self.job(after)
        if not 1 <= limit <= 100:
            raise InvalidInput(f"limit must be within 1-100, got {limit}", param="limit")
        tenant = current_tenant()
        if tenant is None:
            return await asyncio.to_thread(self.manager.jobs.page, after=after, limit=limit)
        return await asyncio.to_thread(self._tenant_page, tenant, after, limit)

    async def cancel(self, job_id: str) -> JobRecord:
        await self.job(job_id)
        return await self.manager.cancel(job_id)

    async def events(self, job_id: str, *, after_seq: int = 0, limit: int = 100) -> list[JobEvent]:
        await self.job(job_id)
        return await asyncio.to_thread(self.manager.jobs.events, job_id, after_seq=after_seq, limit=limit)

    async def follow(self, job_id: str, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        """The job's events from ``after_seq`` on, live until the job ends (NOT_FOUND first)."""
        await self.job(job_id)
        async for event in self.manager.follow(job_id, after_seq):
            yield event

    # -- files ---------------------------------------------------------------------------
    async def upload(self, filename: str, content: bytes, purpose: str) -> UploadedFile:
        if len(content) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"a training file holds at most {MAX_FILE_BYTES} bytes", param="file")
        records = await asyncio.to_thread(self._parse_jsonl, content, "file")
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        info = UploadedFile(file_id, filename[:256], len(content), len(records), int(time.time()), purpose)
        await asyncio.to_thread(self._write_file, info, content)
        return info

    async def file(self, file_id: str) -> UploadedFile:
        try:
            return await asyncio.to_thread(self._read_file_info, file_id)
        except InvalidInput:
            raise ModelNotFound(f"no uploaded file {str(file_id)[:64]!r}") from None

    # -- adapters ------------------------------------------------------------------------
    async def adapter_versions(self, name: str) -> list[AdapterVersion]:
        try:
            return await asyncio.to_thread(self.adapters.store.versions, name)
        except AdapterNotFound as exc:
            raise ModelNotFound(str(exc)) from None
        except AdapterStoreError as exc:
            raise InvalidInput(str(exc), param="name") from None

    async def adapter_names(self) -> list[str]:
        return await asyncio.to_thread(self.adapters.store.names)

    async def current_version(self, name: str) -> int:
        try:
            return await asyncio.to_thread(self.adapters.store.current_version, name)
        except AdapterStoreError as exc:
            raise ModelNotFound(str(exc)) from None

    async def rollback(self, name: str, version: int) -> AdapterVersion:
        """Serve an earlier version of ``name`` from the next request on."""
        try:
            target = await asyncio.to_thread(self.adapters.store.rollback, name, version)
        except AdapterNotFound as exc:
            raise ModelNotFound(str(exc)) from None
        except AdapterStoreError as exc:
            raise InvalidInput(str(exc), param="version") from None
        await self.adapters.on_published(target)
        return target

    # -- checks (in a thread: they read files) -------------------------------------------
    def _check(self, request: JobInput, owner: Tenant | None = None) -> JobRequest:
        from adapters.base_models import manifest_kind, require_kind
        from adapters.methods import METHODS, TuningMethod, parse_config, trainer_class
        from adapters.methods.data import load_records, split_off

        try:
            method = TuningMethod.parse(request.method)
        except ValueError as exc:
            raise InvalidInput(str(exc), param="method") from None
        name = request.name
        if not is_adapter_name(name):
            raise InvalidInput(
                f"invalid adapter name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
                param="name",
            )
        if self.models.exists(name):
            raise InvalidInput(
                f"{name!r} is the id of a model in the store; name the adapter otherwise", param="name"
            )
        if not self.models.exists(request.base_model):
            raise InvalidInput(f"base model {request.base_model!r} is not in the model store", param="model")
        manifest = self.models.manifest(request.base_model)
        try:
            require_kind(
                manifest_kind(manifest), METHODS[method].kind, method=method.value, model_id=manifest.model_id
            )
        except ValueError as exc:
            raise InvalidInput(str(exc), param="model") from None
        self._check_history(name, request.base_model, method.value, owner)
        try:
            config = parse_config(method, request.hyperparameters)
        except ValueError as exc:
            raise InvalidInput(str(exc), param="hyperparameters") from None
        train = self._records(request.train, "training_file")
        validation = self._records(request.validation, "validation_file") if request.validation else []
        try:
            raw_train = load_records(train, "train")
            raw_validation = load_records(validation, "validation") if validation else []
            if raw_validation and config.validation_fraction > 0:
                raise InvalidInput(
                    "give validation data or the validation_fraction hyper-parameter, not both",
                    param="hyperparameters",
                )
            if not raw_validation:
                raw_train, raw_validation = split_off(raw_train, config.validation_fraction, config.seed)
            trainer_class(method)(config).check_data(raw_train, raw_validation)
        except ValueError as exc:
            field_name = "validation_file" if str(exc).startswith("validation") else "training_file"
            raise InvalidInput(str(exc), param=field_name) from None
        gate = self._gate(request.gate, method.value)
        spec = {
            "method": method.value,
            "base_model": request.base_model,
            "model_store": str(self.models.root),
            "hyperparameters": dict(request.hyperparameters),
            # where the data came from, for the doors to show (the records themselves are copied)
            "sources": {"train": _described(request.train), "validation": _described(request.validation)},
        }
        if owner is not None:  # recorded in the published version's extra (adapters.jobs.manager)
            spec[ACCESS] = {OWNER: owner.name, PUBLIC: owner.public_adapters}
        return JobRequest(
            name=name,
            method=method.value,
            base_model=request.base_model,
            spec=spec,
            train_records=list(train),
            validation_records=list(validation),
            gate=gate,
        )

    def _check_history(self, name: str, base_model: str, method: str, owner: Tenant | None) -> None:
        try:
            current = self.adapters.store.get(name)
        except AdapterStoreError:
            return
        if owner is not None and current.extra.get(OWNER) not in (None, owner.name):
            raise PermissionDenied(f"adapter {name!r} belongs to another tenant; name yours otherwise")
        if current.base_model != base_model or current.method != method:
            raise InvalidInput(
                f"adapter {name!r} exists as a {current.method} adapter of {current.base_model!r}; "
                f"a new version must tune the same base with the same method, or choose another name",
                param="name",
            )

    def _tenant_page(self, tenant: Tenant, after: str | None, limit: int) -> list[JobRecord]:
        """A page of the jobs ``tenant`` sees, newest first (the store's pages, filtered)."""
        found: list[JobRecord] = []
        cursor = after
        while len(found) < limit:
            page = self.manager.jobs.page(after=cursor, limit=100)
            found += [record for record in page if _job_visible(record, tenant)]
            if len(page) < 100:
                break
            cursor = page[-1].id
        return found[:limit]

    def _gate(self, raw: Mapping[str, Any] | None, method: str) -> Gate | None:
        if not raw:
            return None
        metric = raw.get("metric", "val_accuracy" if method == "classifier" else "val_loss")
        if metric not in GATE_METRICS:
            raise InvalidInput(
                f"gate metric must be one of {', '.join(GATE_METRICS)}, got {metric!r}", param="gate"
            )
        threshold = raw.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise InvalidInput(f"gate threshold must be a number, got {threshold!r}", param="gate")
        unknown = sorted(set(raw) - {"metric", "threshold"})
        if unknown:
            raise InvalidInput(f"unknown gate field(s) {', '.join(unknown)}", param="gate")
        return Gate(metric=metric, threshold=float(threshold) if threshold is not None else None)

    def _records(self, ref: DataRef | None, param: str) -> list[dict[str, Any]]:
        if ref is None:
            raise InvalidInput("training data is required", param=param)
        given = [x for x in (ref.records, ref.file_id, ref.dataset) if x is not None]
        if len(given) != 1:
            raise InvalidInput(
                "give the data inline, as an uploaded file id, or as a dataset path; one", param=param
            )
        records: list[dict[str, Any]]
        if ref.records is not None:
            if not all(isinstance(r, Mapping) for r in ref.records):
                raise InvalidInput("every record must be a JSON object", param=param)
            records = [dict(r) for r in ref.records]
        elif ref.file_id is not None:
            info = self._read_file_info(ref.file_id, param)
            records = self._parse_jsonl((self._files / f"{info.id}.jsonl").read_bytes(), param)
        else:
            records = self._parse_jsonl(self._dataset(str(ref.dataset), param).read_bytes(), param)
        if not records:
            raise InvalidInput("the data holds no records", param=param)
        if len(records) > self.settings.max_train_records:
            raise PayloadTooLarge(
                f"the data holds {len(records)} records; at most {self.settings.max_train_records}",
                param=param,
            )
        return records

    def _dataset(self, relative: str, param: str) -> Path:
        path = self._datasets / relative
        if (
            not relative
            or "\x00" in relative
            or Path(relative).is_absolute()
            or not is_within(path, self._datasets)
        ):
            raise InvalidInput(
                f"dataset {relative!r} must be a path inside the store's {DATASETS}/ folder", param=param
            )
        if path.suffix != ".jsonl" or not path.is_file():
            raise InvalidInput(
                f"no JSONL dataset {relative!r} in the store's {DATASETS}/ folder", param=param
            )
        return path

    def _parse_jsonl(self, content: bytes, param: str) -> list[dict[str, Any]]:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the file is not UTF-8 text (JSON Lines expected)", param=param) from None
        records: list[dict[str, Any]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"line {number} is not JSON: {exc}", param=param) from None
            if not isinstance(value, dict):
                raise InvalidInput(f"line {number} is not a JSON object", param=param)
            records.append(value)
            if len(records) > self.settings.max_train_records:
                raise PayloadTooLarge(f"more than {self.settings.max_train_records} records", param=param)
        if not records:
            raise InvalidInput("the file holds no records", param=param)
        return records

    def _write_file(self, info: UploadedFile, content: bytes) -> None:
        self._files.mkdir(parents=True, exist_ok=True)
        (self._files / f"{info.id}.jsonl").write_bytes(content)
        meta = {k: getattr(info, k) for k in ("id", "filename", "bytes", "records", "created_at", "purpose")}
        (self._files / f"{info.id}.json").write_text(json.dumps(meta))

    def _read_file_info(self, file_id: str, param: str = "file_id") -> UploadedFile:
        if not isinstance(file_id, str) or not _FILE_ID.fullmatch(file_id):
            raise InvalidInput(f"invalid file id {str(file_id)[:64]!r}", param=param)
        try:
            meta = json.loads((self._files / f"{file_id}.json").read_text())
        except (OSError, ValueError):
            raise InvalidInput(f"no uploaded file {file_id!r}", param=param) from None
        return UploadedFile(**meta)


def _described(ref: DataRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    if ref.file_id is not None:
        return {"file_id": ref.file_id}
    if ref.dataset is not None:
        return {"dataset": ref.dataset}
    return {"records": len(ref.records or ())}


def _job_visible(record: JobRecord, tenant: Tenant | None) -> bool:
    """A job is its owner's; one made without API keys (no owner) is everyone's."""
    owner = record.spec.get(ACCESS, {}).get(OWNER)
    return tenant is None or owner is None or owner == tenant.name


def _job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not re.fullmatch(r"ftjob-[0-9a-f]{24}", job_id):
        raise ModelNotFound(f"no tuning job {str(job_id)[:64]!r}")
    return job_id
