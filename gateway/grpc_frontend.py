"""gRPC frontend (grpc.aio): Caikit's NlpService and InfoService, health and reflection.

Thin: read the request and the ``mm-model-id`` metadata, call the core, convert the result.
Errors are looked up in the one table of gateway.errors.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway import grpc_convert as convert
from gateway.core import RequestContext, TaskService
from gateway.errors import TaskgateError, internal, new_request_id
from gateway.info import models_info, runtime_info
from gateway.settings import ServerSettings
from gateway.wire import caikit_data_model_common_runtime_pb2 as runtime_pb2
from gateway.wire import caikit_runtime_info_pb2, caikit_runtime_info_pb2_grpc
from gateway.wire import caikit_runtime_nlp_pb2 as nlp_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

log = logging.getLogger(__name__)

MODEL_ID_KEY = "mm-model-id"
REQUEST_ID_KEY = "x-request-id"

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Any, RequestContext, str], Awaitable[Any]]


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else value
    return ""


def task_rpc(handler: Handler) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """Wrap a handler: request context from metadata and deadline, errors via the one table."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        request_id = _metadata(context, REQUEST_ID_KEY) or new_request_id()
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        ctx = RequestContext(request_id=request_id, deadline=deadline)
        try:
            return await handler(self, request, ctx, _metadata(context, MODEL_ID_KEY))
        except TaskgateError as exc:
            await _abort(context, exc, request_id)
        except Exception:
            log.exception("unhandled error in %s (request id %s)", handler.__name__, request_id)
            await _abort(context, internal(request_id), request_id)

    return wrapper


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: TaskgateError, request_id: str) -> None:
    trailers: list[tuple[str, str]] = [(REQUEST_ID_KEY, request_id)]
    if exc.retry_after_s is not None:
        trailers.append(("retry-after", str(int(max(1, exc.retry_after_s)))))
    context.set_trailing_metadata(tuple(trailers))
    await context.abort(exc.wire.grpc, exc.message)


def _opt(request: Any, field: str) -> Any:
    return getattr(request, field) if request.HasField(field) else None


def _truthy(request: Any, field: str, default: bool) -> bool:
    return bool(getattr(request, field)) if request.HasField(field) else default


def _documents(request: Any) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(doc) for doc in request.documents]


class NlpServicer(nlp_grpc.NlpServiceServicer):
    def __init__(self, core: TaskService) -> None:
        self._core = core

    @task_rpc
    async def EmbeddingTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.embed(ctx, model_id, [request.text], _opt(request, "truncate_input_tokens"))
        return convert.embedding(out)

    @task_rpc
    async def EmbeddingTasksPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.embed(
            ctx, model_id, list(request.texts), _opt(request, "truncate_input_tokens")
        )
        return convert.embeddings(out)

    @task_rpc
    async def SentenceSimilarityTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.similarity(
            ctx,
            model_id,
            [request.source_sentence],
            list(request.sentences),
            _opt(request, "truncate_input_tokens"),
        )
        return convert.similarity(out)

    @task_rpc
    async def SentenceSimilarityTasksPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.similarity(
            ctx,
            model_id,
            list(request.source_sentences),
            list(request.sentences),
            _opt(request, "truncate_input_tokens"),
        )
        return convert.similarities(out)

    @task_rpc
    async def RerankTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.rerank(
            ctx,
            model_id,
            [request.query],
            _documents(request),
            top_n=_opt(request, "top_n"),
            truncate=_opt(request, "truncate_input_tokens"),
            return_documents=_truthy(request, "return_documents", True),
            return_query=_truthy(request, "return_query", True),
            return_text=_truthy(request, "return_text", True),
        )
        return convert.rerank(out)

    @task_rpc
    async def RerankTasksPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.rerank(
            ctx,
            model_id,
            list(request.queries),
            _documents(request),
            top_n=_opt(request, "top_n"),
            truncate=_opt(request, "truncate_input_tokens"),
            return_documents=_truthy(request, "return_documents", True),
            return_query=_truthy(request, "return_queries", True),
            return_text=_truthy(request, "return_text", True),
        )
        return convert.reranks(out)

    @task_rpc
    async def TokenizationTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        return convert.tokenization(await self._core.tokenize(ctx, model_id, request.text))

    @task_rpc
    async def TextClassificationTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        return convert.classification(await self._core.classify(ctx, model_id, request.text))


class InfoServicer(caikit_runtime_info_pb2_grpc.InfoServiceServicer):
    def __init__(self, core: TaskService) -> None:
        self._core = core

    async def GetRuntimeInfo(self, request: Any, context: Any) -> runtime_pb2.RuntimeInfoResponse:
        info = runtime_info()
        return runtime_pb2.RuntimeInfoResponse(
            runtime_version=info["runtime_version"], python_packages=info["python_packages"]
        )

    async def GetModelsInfo(self, request: Any, context: Any) -> runtime_pb2.ModelInfoResponse:
        wanted = set(request.model_ids)
        models = [
            runtime_pb2.ModelInfo(**m)
            for m in models_info(self._core.registry)
            if not wanted or m["name"] in wanted
        ]
        return runtime_pb2.ModelInfoResponse(models=models)


SERVICE_NAMES = (
    nlp_pb2.DESCRIPTOR.services_by_name["NlpService"].full_name,
    caikit_runtime_info_pb2.DESCRIPTOR.services_by_name["InfoService"].full_name,
)


async def start_grpc(core: TaskService, settings: ServerSettings) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server; returns it and the bound port (useful when the port is 0)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    nlp_grpc.add_NlpServiceServicer_to_server(NlpServicer(core), server)
    caikit_runtime_info_pb2_grpc.add_InfoServiceServicer_to_server(InfoServicer(core), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind gRPC to {settings.host}:{settings.grpc_port}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port
