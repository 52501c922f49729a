"""Taskgate's own tuning service over gRPC (``taskgate.tuning.Tuning``): jobs, their live
progress (WatchJob, server streaming) and adapter versions, on the protocol-neutral
TuningService. A CreateJob refusal's message starts with the request field at fault
(``base_model: ...``, ``hyperparameters.learning_rate: ...``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format, struct_pb2

from adapters.jobs.store import JobEvent, JobRecord
from adapters.store import AdapterVersion
from gateway.core import RequestContext
from gateway.errors import InvalidInput, ModelNotFound, PayloadTooLarge, TaskgateError, internal
from gateway.frontends.grpc.common import Context, abort, request_context, rpc
from gateway.tuning.service import DataRef, JobInput, TuningService
from gateway.wire import taskgate_tuning_pb2 as pb
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
EVENT_PAGE = 100
# TuningService's param -> the CreateJobRequest field it stands for
_FIELDS = {"model": "base_model", "training_file": "train", "validation_file": "validation"}
_RECORD_FIELDS = {"classifier": ("text", "label")}


def _method_name(method: int) -> str:
    values = pb.Method.DESCRIPTOR.values_by_number
    if method == pb.METHOD_UNSPECIFIED or method not in values:
        known = ", ".join(
            name for name in pb.Method.DESCRIPTOR.values_by_name if name != "METHOD_UNSPECIFIED"
        )
        raise InvalidInput(f"method: required, one of {known}", param="method")
    return values[method].name.lower()


def _method_value(name: str) -> Any:  # a pb.Method value
    value = pb.Method.DESCRIPTOR.values_by_name.get(name.upper())
    return value.number if value is not None else pb.METHOD_UNSPECIFIED


def _whole_numbers(value: Any) -> Any:
    """A Struct's numbers are doubles: 3.0 -> 3, so integer settings stay integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def _hyperparameters(request: Any) -> dict[str, Any]:
    try:
        values = json_format.MessageToDict(request.hyperparameters)
    except ValueError as exc:  # NaN or infinity has no JSON form
        raise InvalidInput(f"hyperparameters: {exc}", param="hyperparameters") from None
    result: dict[str, Any] = _whole_numbers(values)
    return result


def _record(record: Any, method: str) -> dict[str, Any]:
    wanted = _RECORD_FIELDS.get(method, ("input", "output"))
    values = {name: getattr(record, name) for name in ("input", "output", "text", "label")}
    out = {name: value for name, value in values.items() if name in wanted or value}
    task = record.WhichOneof("task")
    if task is not None:
        out["task"] = getattr(record, task)
    return out


def _data(data: Any, method: str) -> DataRef | None:
    source = data.WhichOneof("source")
    if source == "inline":
        return DataRef(records=[_record(r, method) for r in data.inline.records])
    if source == "file_id":
        return DataRef(file_id=data.file_id)
    if source == "dataset":
        return DataRef(dataset=data.dataset)
    return None


def job_input(request: Any) -> JobInput:
    method = _method_name(request.method)
    gate: dict[str, Any] | None = None
    if request.HasField("gate"):
        gate = {"metric": request.gate.metric} if request.gate.metric else {}
        if request.gate.HasField("threshold"):
            gate["threshold"] = request.gate.threshold
        gate = gate or {"metric": "val_accuracy" if method == "classifier" else "val_loss"}
    validation = _data(request.validation, method) if request.HasField("validation") else None
    return JobInput(
        name=request.name,
        method=method,
        base_model=request.base_model,
        train=_data(request.train, method) or DataRef(),
        validation=validation,
        hyperparameters=_hyperparameters(request),
        gate=gate,
    )


def _field_error(error: TaskgateError, method: str) -> TaskgateError:
    """A TuningService refusal, its message led by the request field it names."""
    if error.param is None:
        return error
    field = _FIELDS.get(error.param, error.param)
    if error.param == "hyperparameters":
        from adapters.methods import TuningMethod, config_class

        word = error.message.split(" ", 1)[0]
        if word in config_class(TuningMethod.parse(method)).field_names():
            field = f"hyperparameters.{word}"
    return type(error)(f"{field}: {error.message}", param=field, retry_after_s=error.retry_after_s)


def _seconds(message: Any, value: float | None) -> None:
    if value is not None:
        message.FromNanoseconds(round(value * 1e9))


def _progress(values: dict[str, Any]) -> pb.Progress | None:
    if "step" not in values:
        return None
    names = ("step", "total_steps", "epoch", "loss", "learning_rate", "eta_s")
    return pb.Progress(**{name: values[name] for name in names if isinstance(values.get(name), int | float)})


def job_message(record: JobRecord) -> pb.Job:
    metrics = {k: float(v) for k, v in record.result.get("metrics", {}).items() if isinstance(v, int | float)}
    job = pb.Job(
        id=record.id,
        name=record.name,
        method=_method_value(record.method),
        base_model=record.base_model,
        state=pb.JobState.Value(record.state.value),
        progress=_progress(record.progress),
        reasons=list(record.reasons),
        result=pb.JobResult(
            adapter=str(record.result.get("adapter", "")),
            version=int(record.result.get("version", 0)),
            metrics=metrics,
        ),
    )
    for name in ("val_accuracy", "val_loss"):
        if name in metrics:
            job.validation.CopyFrom(pb.ValidationMetric(name=name, value=metrics[name]))
            break
    _seconds(job.created_at, record.created_at)
    _seconds(job.started_at, record.started_at)
    _seconds(job.finished_at, record.finished_at)
    return job


def event_message(event: JobEvent) -> pb.JobEvent:
    data = struct_pb2.Struct()
    data.update(event.data)
    message = pb.JobEvent(
        job_id=event.job_id,
        seq=event.seq,
        level=event.level,
        message=event.message,
        progress=_progress(event.data),
        data=data,
    )
    _seconds(message.created_at, event.created_at)
    return message


def adapter_message(name: str, versions: list[AdapterVersion], current: int) -> pb.Adapter:
    adapter = pb.Adapter(name=name, current_version=current)
    for version in versions:
        message = adapter.versions.add(
            version=version.version,
            reference=version.reference,
            base_model=version.base_model,
            method=_method_value(version.method),
            job_id=version.job_id or "",
            metrics={k: float(v) for k, v in version.metrics.items()},
            files=version.files,
        )
        _seconds(message.created_at, version.created)
    return adapter


class TuningServicer(tuning_grpc.TuningServicer):
    def __init__(self, tuning: TuningService) -> None:
        self._tuning = tuning

    @rpc
    async def CreateJob(self, request: Any, ctx: RequestContext) -> pb.Job:
        job = job_input(request)
        try:
            return job_message(await self._tuning.create_job(job))
        except (InvalidInput, PayloadTooLarge) as exc:
            raise _field_error(exc, job.method) from None

    @rpc
    async def GetJob(self, request: Any, ctx: RequestContext) -> pb.Job:
        return job_message(await self._tuning.job(request.job_id))

    @rpc
    async def ListJobs(self, request: Any, ctx: RequestContext) -> pb.ListJobsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidInput(f"page_size: must be within 1-{MAX_PAGE_SIZE}, got {size}", param="page_size")
        try:
            jobs = await self._tuning.jobs(
                after=request.page_token or None, limit=min(size + 1, MAX_PAGE_SIZE)
            )
        except ModelNotFound:
            raise InvalidInput("page_token: not a token this service gave", param="page_token") from None
        page = jobs[:size]
        more = len(jobs) > size or len(page) == MAX_PAGE_SIZE
        return pb.ListJobsResponse(
            jobs=[job_message(record) for record in page],
            next_page_token=page[-1].id if more and page else "",
        )

    @rpc
    async def CancelJob(self, request: Any, ctx: RequestContext) -> pb.Job:
        return job_message(await self._tuning.cancel(request.job_id))

    async def WatchJob(self, request: Any, context: Context) -> AsyncIterator[pb.JobUpdate]:
        ctx = request_context(context)
        try:
            async for update in self._watch(request.job_id, max(0, request.after_seq)):
                yield update
        except TaskgateError as exc:
            await abort(context, exc, ctx.request_id)
        except Exception:
            log.exception("watching tuning job failed (request id %s)", ctx.request_id)
            await abort(context, internal(ctx.request_id), ctx.request_id)

    async def _watch(self, job_id: str, seen: int) -> AsyncIterator[pb.JobUpdate]:
        """The job, its stored events a page at a time, live ones until it ends, the job."""
        yield pb.JobUpdate(job=job_message(await self._tuning.job(job_id)))
        while True:
            page = await self._tuning.events(job_id, after_seq=seen, limit=EVENT_PAGE)
            for event in page:
                seen = event.seq
                yield pb.JobUpdate(event=event_message(event))
            if len(page) < EVENT_PAGE:
                break
        async for event in self._tuning.follow(job_id, seen):
            yield pb.JobUpdate(event=event_message(event))
        yield pb.JobUpdate(job=job_message(await self._tuning.job(job_id)))

    @rpc
    async def ListAdapters(self, request: Any, ctx: RequestContext) -> pb.ListAdaptersResponse:
        adapters = [await self._adapter(name) for name in await self._tuning.adapter_names()]
        return pb.ListAdaptersResponse(adapters=adapters)

    @rpc
    async def GetAdapter(self, request: Any, ctx: RequestContext) -> pb.Adapter:
        return await self._adapter(request.name)

    @rpc
    async def RollbackAdapter(self, request: Any, ctx: RequestContext) -> pb.Adapter:
        await self._tuning.rollback(request.name, request.version)
        return await self._adapter(request.name)

    async def _adapter(self, name: str) -> pb.Adapter:
        versions = await self._tuning.adapter_versions(name)
        return adapter_message(name, versions, await self._tuning.current_version(name))
