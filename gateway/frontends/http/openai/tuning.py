"""OpenAI's fine-tuning API over Taskgate's tuning jobs (``/v1/files``, ``/v1/fine_tuning/jobs``),
in the shapes the official ``openai`` client sends and parses.

- ``POST /v1/files`` (multipart ``file`` + ``purpose`` "fine-tune"; JSON Lines checked line by
  line; a body over ``--max-request-bytes`` is 413) and ``GET /v1/files/{file_id}``.
- ``POST /v1/fine_tuning/jobs``: see ``tuning_schemas`` for the request (``method.type`` is
  a Taskgate method or ``supervised``; the adapter is named ``suffix``, else ``<model>-ft-<hex>``;
  extras ``training_data``, ``training_dataset``, ``gate``, ...). Records are Taskgate's:
  ``{"text", "label"}`` for ``classifier``, ``{"input", "output"}`` (+ ``task``) for the others;
  OpenAI's chat ``messages`` format is not read. Bad input is a 400 naming ``param`` and no job
  exists; a full queue is 429.
- ``GET /v1/fine_tuning/jobs`` (``after``, ``limit``; newest first), ``GET .../{id}``,
  ``POST .../{id}/cancel`` (answers at once: a running job shows ``running`` until its worker
  stops after the current step, then ``cancelled``; cancelling a finished job returns it as it is).
- ``GET .../{id}/events`` (``after``, ``limit``; newest first, as OpenAI lists them).
  ``?stream=true`` is the live feed: server-sent events, oldest first, each ``data:`` a
  ``fine_tuning.job.event`` (with an SSE ``id:``; ``after`` or a ``Last-Event-ID`` header resumes
  after that event), replaying what happened and following until the job ends, then
  ``data: [DONE]``. A client may attach at any point; a comment line keeps an idle feed open.
- The job object is OpenAI's ``fine_tuning.job`` (status queued / running / succeeded / cancelled /
  failed) plus Taskgate's progress fields (``tuning_convert``). ``fine_tuned_model`` is the
  adapter's name, servable at once when the job succeeds (``adapter`` is the version published,
  ``name@N``); a job that succeeded without publishing (its gate was not beaten) has
  ``fine_tuned_model`` null and says why in ``reasons``.

The file ids and dataset paths a job was given come from its spec's ``sources`` (recorded by
the tuning service whichever door made the job). Errors are OpenAI's body with the one table's
status and the field at fault.
The routes are left out of ``/openapi.json`` (Caikit-shaped, as the rest of ``/v1``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from adapters.jobs.store import JobEvent, JobRecord
from gateway.errors import ModelNotFound, TaskgateError
from gateway.frontends.http.common import Json
from gateway.frontends.http.errors import ErrorBodies
from gateway.frontends.http.openai import tuning_convert as convert
from gateway.frontends.http.openai.errors import OpenAIParamError, openai_error_body
from gateway.frontends.http.openai.tuning_schemas import parse_job_request, prepare_job
from gateway.tuning.service import TuningService

FILE_PURPOSE = "fine-tune"
HEARTBEAT_S = 15.0
MAX_EVENT_PAGE = 1000

log = logging.getLogger(__name__)


def install_openai_tuning(app: FastAPI, bodies: ErrorBodies, tuning: TuningService) -> None:
    """Add the routes and say their errors in OpenAI's body with the field at fault."""
    app.include_router(openai_tuning_router(tuning))
    for prefix in ("/v1/files", "/v1/fine_tuning"):
        bodies.register(prefix, tuning_error_body)


def tuning_error_body(error: TaskgateError, request_id: str) -> Json:
    """OpenAI's error body, ``param`` filled from the error (the service names its fields)."""
    body = openai_error_body(error, request_id)
    if body["error"]["param"] is None and error.param is not None:
        body["error"]["param"] = error.param
    return body


def openai_tuning_router(tuning: TuningService) -> APIRouter:
    router = APIRouter(prefix="/v1", include_in_schema=False)

    async def render(records: list[JobRecord]) -> list[Json]:
        return [_job_object(record) for record in records]

    @router.post("/files")
    async def upload_file(request: Request) -> JSONResponse:
        try:
            form = await request.form()
        except Exception as exc:  # starlette's multipart errors share no base class
            detail = getattr(exc, "detail", exc)
            raise OpenAIParamError(f"the body is not a valid multipart form: {detail}", param=None) from None
        try:
            unknown = sorted(set(form.keys()) - {"file", "purpose"})
            if unknown:
                raise OpenAIParamError(
                    f"Unrecognized request argument supplied: {unknown[0]}",
                    param=unknown[0],
                    code="unrecognized_request_argument",
                )
            purpose = form.get("purpose")
            if purpose != FILE_PURPOSE:
                shown = purpose if isinstance(purpose, str) else None
                raise OpenAIParamError(
                    f"purpose must be {FILE_PURPOSE!r} (training data for a tuning job), got {shown!r}",
                    param="purpose",
                )
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise OpenAIParamError(
                    "file is required: a JSON Lines file sent as a multipart file part",
                    param="file",
                    code="missing_required_parameter",
                )
            content = await upload.read()
            info = await tuning.upload(upload.filename or "training.jsonl", content, FILE_PURPOSE)
        finally:
            await form.close()
        return JSONResponse(convert.file_object(info))

    @router.get("/files/{file_id}")
    async def get_file(file_id: str) -> JSONResponse:
        return JSONResponse(convert.file_object(await tuning.file(file_id)))

    @router.post("/fine_tuning/jobs")
    async def create_job(request: Request) -> JSONResponse:
        body = await asyncio.to_thread(parse_job_request, await request.body())
        kind = await asyncio.to_thread(_base_kind, tuning, body.model)
        prepared = prepare_job(body, kind, _default_learning_rate)
        try:
            record = await tuning.create_job(prepared.job)
        except TaskgateError as exc:
            raise prepared.rename(exc) from None
        return JSONResponse((await render([record]))[0])

    @router.get("/fine_tuning/jobs")
    async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> JSONResponse:
        _refuse_metadata_filter(request)
        if not 1 <= limit <= 100:
            raise OpenAIParamError(f"limit must be within 1-100, got {limit}", param="limit")
        try:
            page = await tuning.jobs(after=after, limit=limit)
            has_more = len(page) == limit and bool(await tuning.jobs(after=page[-1].id, limit=1))
        except ModelNotFound:
            raise OpenAIParamError(f"after: no fine-tuning job {after!r}", param="after") from None
        return JSONResponse({"object": "list", "data": await render(page), "has_more": has_more})

    @router.get("/fine_tuning/jobs/{job_id}")
    async def get_job(job_id: str) -> JSONResponse:
        return JSONResponse((await render([await tuning.job(job_id)]))[0])

    @router.post("/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> JSONResponse:
        return JSONResponse((await render([await tuning.cancel(job_id)]))[0])

    @router.get("/fine_tuning/jobs/{job_id}/events", response_model=None)
    async def job_events(
        request: Request,
        job_id: str,
        after: str | None = None,
        limit: int | None = None,
        stream: bool = False,
    ) -> JSONResponse | StreamingResponse:
        await tuning.job(job_id)  # NOT_FOUND before anything else
        if stream:
            if limit is not None:
                raise OpenAIParamError("limit does not apply to the live feed (stream=true)", param="limit")
            resume = after if after is not None else request.headers.get("last-event-id")
            start = _cursor(resume, job_id) if resume else 0
            return StreamingResponse(
                _feed(tuning, job_id, start),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        limit = 20 if limit is None else limit
        if not 1 <= limit <= MAX_EVENT_PAGE:
            raise OpenAIParamError(f"limit must be within 1-{MAX_EVENT_PAGE}, got {limit}", param="limit")
        before = _cursor(after, job_id) if after is not None else None
        events, has_more = await _newest_first(tuning, job_id, before, limit)
        return JSONResponse(
            {"object": "list", "data": [convert.event_object(e) for e in events], "has_more": has_more}
        )

    return router


async def _newest_first(
    tuning: TuningService, job_id: str, before: int | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """A page of events, newest first, older than ``before`` (a seq; None: from the newest).
    Events of a job are numbered 1, 2, ... without gaps."""
    if before is None:
        tail: list[JobEvent] = []
        seen = 0
        while True:  # the newest ``limit`` events, reading forward in bounded chunks
            chunk = await tuning.events(job_id, after_seq=seen, limit=10_000)
            if not chunk:
                break
            tail = (tail + chunk)[-limit:]
            seen = chunk[-1].seq
            if len(chunk) < 10_000:
                break
        before = seen + 1
        page = tail
    else:
        first = max(1, before - limit)
        page = await tuning.events(job_id, after_seq=first - 1, limit=before - first) if before > 1 else []
    page = [e for e in page if e.seq < before]
    return page[::-1], bool(page) and page[0].seq > 1


async def _feed(tuning: TuningService, job_id: str, after_seq: int) -> AsyncIterator[str]:
    """The job's events as SSE until it ends; a comment every HEARTBEAT_S of silence."""
    queue: asyncio.Queue[JobEvent | None] = asyncio.Queue(maxsize=1000)  # a slow reader holds it back
    failed: list[BaseException] = []

    async def pump() -> None:
        try:
            async for event in tuning.follow(job_id, after_seq):
                await queue.put(event)
        except Exception as exc:  # said to the client below; the loop goes on serving
            failed.append(exc)
        await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                break
            payload = json.dumps(convert.event_object(event))
            yield f"id: {convert.event_id(event)}\ndata: {payload}\n\n"
        if failed:
            log.error("the live feed of job %s failed", job_id, exc_info=failed[0])
            error = {"error": {"message": "the live feed failed", "type": "server_error", "param": None}}
            yield f"event: error\ndata: {json.dumps(error)}\n\n"
            return
        yield "data: [DONE]\n\n"
    finally:
        task.cancel()


def _cursor(value: str, job_id: str) -> int:
    seq = convert.event_seq(value, job_id)
    if seq is None:
        raise OpenAIParamError(f"after: {value[:80]!r} is not an event id of job {job_id}", param="after")
    return seq


def _refuse_metadata_filter(request: Request) -> None:
    for key in request.query_params:
        if key == "metadata" or key.startswith("metadata["):
            raise OpenAIParamError("filtering jobs by metadata is not supported by this server", param=key)


def _base_kind(tuning: TuningService, model: str) -> str | None:
    """ "encoder" or "causal_lm" for a store model (read from its config, nothing loaded); None
    when the store has no such model or its kind is unreadable (the service then says what)."""
    from adapters.base_models import ModelKind, manifest_kind

    if not tuning.models.exists(model):
        return None
    try:
        kind = manifest_kind(tuning.models.manifest(model))
    except (OSError, ValueError):
        return None
    return "encoder" if kind is ModelKind.ENCODER else "causal_lm"


def _default_learning_rate(method: str) -> float:
    from adapters.methods import TuningMethod, config_class

    return float(config_class(TuningMethod.parse(method))().learning_rate)


def _job_object(record: JobRecord) -> Json:
    """The job as OpenAI's object, its effective hyper-parameters (defaults filled in) shown."""
    from adapters.methods import TuningMethod, parse_config

    raw: dict[str, Any] = dict(record.spec.get("hyperparameters") or {})
    try:
        config = parse_config(TuningMethod.parse(record.method), raw).to_dict()
    except ValueError:
        config = raw
    given = record.spec.get("sources") or {}
    train, validation = given.get("train") or {}, given.get("validation") or {}
    sources = {
        "training_file": train.get("file_id"),
        "validation_file": validation.get("file_id"),
        "training_dataset": train.get("dataset"),
        "validation_dataset": validation.get("dataset"),
    }
    return convert.job_object(record, sources, config, _default_learning_rate(record.method))
