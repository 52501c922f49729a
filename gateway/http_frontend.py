"""REST frontend (FastAPI): Caikit's task routes, /health and /info, errors via the one table."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway import http_convert as convert
from gateway import http_schemas as schemas
from gateway.core import RequestContext, TaskService
from gateway.errors import (
    Cancelled,
    InvalidInput,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    TaskgateError,
    internal,
    new_request_id,
)
from gateway.generation.params import GenerationParams
from gateway.http_management import management_router
from gateway.http_openapi import install_caikit_openapi
from gateway.info import models_info, runtime_info
from gateway.management import ModelManagement
from gateway.results import Producer
from gateway.settings import ServerSettings

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
TIMEOUT_HEADER = "x-request-timeout-ms"  # the HTTP counterpart of a gRPC deadline
Json = dict[str, Any]
T = TypeVar("T")


def _error_body(exc: TaskgateError, request_id: str) -> Json:
    # a message may quote the client's input; a lone surrogate in it would fail the JSON encoding
    details = exc.message.encode("utf-8", "backslashreplace").decode()
    return {"details": details, "code": exc.wire.http, "id": request_id}


def error_response(exc: TaskgateError, request_id: str) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: request_id}
    if exc.retry_after_s is not None:
        headers["retry-after"] = str(int(max(1, exc.retry_after_s)))
    return JSONResponse(_error_body(exc, request_id), status_code=exc.wire.http, headers=headers)


def _sse(data: Json) -> str:
    """One server-sent event. Errors are events too, told apart by their keys (details, code,
    id), which is how Caikit and caikit-nlp-client read a stream."""
    return f"data: {json.dumps(data)}\n\n"


def _sse_error(exc: TaskgateError, request_id: str) -> StreamingResponse:
    """An error before any output: the right status, with the body as one SSE error event."""

    async def body() -> AsyncIterator[str]:
        yield _sse(_error_body(exc, request_id))

    return StreamingResponse(body(), status_code=exc.wire.http, media_type="text/event-stream")


GENERATION_PRODUCER = Producer(name="taskgate causal-lm", version=__version__)


def _request_id(request: Request) -> str:
    """The caller's x-request-id, or one made once per request and kept on its state."""
    request_id: str | None = getattr(request.state, "request_id", None)
    if request_id is None:
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        request.state.request_id = request_id
    return request_id


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (so its rows are dropped)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise Cancelled("the client disconnected")
    return task.result()


def _deadline(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        timeout_ms = float(raw)
    except ValueError:
        raise InvalidInput(f"{TIMEOUT_HEADER} must be a number of milliseconds, got {raw!r}") from None
    if not math.isfinite(timeout_ms):  # NaN compared false everywhere: the request waited forever
        raise InvalidInput(f"{TIMEOUT_HEADER} must be a finite number of milliseconds, got {raw!r}")
    if timeout_ms < 0:
        raise InvalidInput(f"{TIMEOUT_HEADER} must not be negative, got {raw!r}")
    return time.monotonic() + timeout_ms / 1000.0


def routing_error(request: Request, status: int, detail: object = None) -> TaskgateError:
    """Starlette's and FastAPI's own refusals as errors of the one table."""
    path = request.url.path if len(request.url.path) <= 200 else request.url.path[:200] + "..."
    if status == 404:
        return RouteNotFound(f"no route {path!r}")
    if status == 405:
        return MethodNotAllowed(f"method {request.method} is not allowed on {path!r}")
    message = detail if isinstance(detail, str) else f"invalid request to {path!r}"
    if status == 413:
        return PayloadTooLarge(message)
    if 400 <= status < 500:  # e.g. FastAPI's "There was an error parsing the body" (JSON nested too deep)
        return InvalidInput(message)
    return internal(_request_id(request))


class BodyLimit:
    """Refuse request bodies over the limit with 413, before they are buffered whole
    (model deploys, ``POST /management/models``, have a limit of their own)."""

    def __init__(self, app: ASGIApp, limit: int, deploy_limit: int) -> None:
        self.app = app
        self.limits = (limit, deploy_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deploy = scope.get("method") == "POST" and scope.get("path") == "/management/models"
        limit = self.limits[1] if deploy else self.limits[0]
        too_large = PayloadTooLarge(f"request body is larger than {limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(too_large, new_request_id())(scope, receive, send)
                return
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit and not refused:
                refused = True
                await error_response(too_large, new_request_id())(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded)


def create_app(core: TaskService, management: ModelManagement, settings: ServerSettings) -> FastAPI:
    app = FastAPI(
        title="Taskgate",
        version=__version__,
        description="Task-level text APIs (Caikit-compatible routes).",
    )
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, deploy_limit=settings.max_deploy_bytes)
    install_caikit_openapi(app)
    app.include_router(management_router(management, core))

    @app.exception_handler(TaskgateError)
    async def on_taskgate_error(request: Request, exc: TaskgateError) -> JSONResponse:
        return error_response(exc, _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def on_routing(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The router's own refusals (unknown path, wrong verb) in the table's body, not FastAPI's."""
        error = routing_error(request, exc.status_code, exc.detail)
        response = error_response(error, _request_id(request))
        response.headers.update(exc.headers or {})  # 405 names the allowed verbs in Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return error_response(InvalidInput(f"invalid request: {problems}"), _request_id(request))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = _request_id(request)
        log.error("unhandled error (request id %s)", request_id, exc_info=exc)
        return error_response(internal(request_id), request_id)

    def ctx(request: Request) -> RequestContext:
        return RequestContext(request_id=_request_id(request), deadline=_deadline(request))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(core.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/health", response_class=PlainTextResponse)
    async def health() -> str:
        return "OK"

    @app.get("/info/version")
    async def info_version() -> Json:
        return runtime_info()

    @app.get("/info/models")
    async def info_models() -> Json:
        return {"models": await models_info(core.registry)}

    @app.post("/api/v1/task/embedding")
    async def embedding(body: schemas.EmbeddingRequest, request: Request) -> Json:
        p = body.parameters
        work = core.embed(ctx(request), body.model_id, [body.inputs], p.truncate_input_tokens)
        return convert.embedding(await until_disconnect(request, work))

    @app.post("/api/v1/task/embedding-tasks")
    async def embedding_tasks(body: schemas.EmbeddingTasksRequest, request: Request) -> Json:
        p = body.parameters
        work = core.embed(ctx(request), body.model_id, body.inputs, p.truncate_input_tokens)
        return convert.embeddings(await until_disconnect(request, work))

    @app.post("/api/v1/task/sentence-similarity")
    async def sentence_similarity(body: schemas.SimilarityRequest, request: Request) -> Json:
        i, p = body.inputs, body.parameters
        work = core.similarity(
            ctx(request), body.model_id, [i.source_sentence], i.sentences, p.truncate_input_tokens
        )
        return convert.similarity(await until_disconnect(request, work))

    @app.post("/api/v1/task/sentence-similarity-tasks")
    async def sentence_similarity_tasks(body: schemas.SimilarityTasksRequest, request: Request) -> Json:
        i, p = body.inputs, body.parameters
        work = core.similarity(
            ctx(request), body.model_id, i.source_sentences, i.sentences, p.truncate_input_tokens
        )
        return convert.similarities(await until_disconnect(request, work))

    @app.post("/api/v1/task/rerank")
    async def rerank(body: schemas.RerankRequest, request: Request) -> Json:
        i, p = body.inputs, body.parameters
        work = core.rerank(
            ctx(request),
            body.model_id,
            [i.query],
            i.documents,
            top_n=p.top_n,
            truncate=p.truncate_input_tokens,
            return_documents=p.return_documents is not False,
            return_query=p.return_query is not False,
            return_text=p.return_text is not False,
        )
        return convert.rerank(await until_disconnect(request, work))

    @app.post("/api/v1/task/rerank-tasks")
    async def rerank_tasks(body: schemas.RerankTasksRequest, request: Request) -> Json:
        i, p = body.inputs, body.parameters
        work = core.rerank(
            ctx(request),
            body.model_id,
            i.queries,
            i.documents,
            top_n=p.top_n,
            truncate=p.truncate_input_tokens,
            return_documents=p.return_documents is not False,
            return_query=p.return_queries is not False,
            return_text=p.return_text is not False,
        )
        return convert.reranks(await until_disconnect(request, work))

    @app.post("/api/v1/task/tokenization")
    async def tokenization(body: schemas.TextRequest, request: Request) -> Json:
        work = core.tokenize(ctx(request), body.model_id, body.inputs)
        return convert.tokenization(await until_disconnect(request, work))

    @app.post("/api/v1/task/text-generation")
    async def text_generation(body: schemas.TextGenerationRequest, request: Request) -> Json:
        params = GenerationParams.from_request(body.parameters.model_dump())
        work = core.generate(ctx(request), body.model_id, body.inputs, params)
        return convert.generated_text(await until_disconnect(request, work), GENERATION_PRODUCER)

    @app.post("/api/v1/task/server-streaming-text-generation")
    async def server_streaming_text_generation(
        body: schemas.TextGenerationRequest, request: Request
    ) -> StreamingResponse:
        """Server-sent events: one ``data:`` JSON chunk per event. A failure is an event with the
        usual error body; before any output it also has the error's HTTP status."""
        context = ctx(request)
        try:
            params = GenerationParams.from_request(body.parameters.model_dump())
            chunks = core.generate_stream(context, body.model_id, body.inputs, params)
            first = await anext(chunks)  # errors before any output get a proper status code
        except TaskgateError as exc:
            return _sse_error(exc, context.request_id)

        async def events() -> AsyncIterator[str]:
            try:
                yield _sse(convert.stream_chunk(first, GENERATION_PRODUCER))
                async for chunk in chunks:
                    yield _sse(convert.stream_chunk(chunk, GENERATION_PRODUCER))
            except TaskgateError as exc:
                yield _sse(_error_body(exc, context.request_id))
            except Exception:
                log.exception("streaming generation failed (request id %s)", context.request_id)
                yield _sse(_error_body(internal(context.request_id), context.request_id))
            finally:
                await chunks.aclose()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @app.post("/api/v1/task/text-classification")
    async def text_classification(body: schemas.TextRequest, request: Request) -> Json:
        work = core.classify(ctx(request), body.model_id, body.inputs)
        return convert.classification(await until_disconnect(request, work))

    return app
