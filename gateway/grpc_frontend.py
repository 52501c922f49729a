"""gRPC frontend (grpc.aio): Caikit's NlpService and InfoService, health and reflection.

Thin: read the request and the ``mm-model-id`` metadata, call the core, convert the result.
Errors are looked up in the one table of gateway.errors.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway import __version__
from gateway import grpc_convert as convert
from gateway.core import RequestContext, TaskService
from gateway.errors import InvalidInput, TaskgateError, internal
from gateway.generation.params import GenerationParams
from gateway.grpc_common import MODEL_ID_KEY, Context, abort, metadata, request_context, task_rpc
from gateway.grpc_guard import DEPLOY_METHOD, RequestGuard
from gateway.grpc_management import (
    CaikitModelManagementServicer,
    ModelControlServicer,
    ModelMeshRuntimeServicer,
)
from gateway.info import models_info, runtime_info
from gateway.management import ModelManagement
from gateway.results import Producer
from gateway.settings import RegistrySettings, ServerSettings
from gateway.wire import caikit_data_model_common_runtime_pb2 as runtime_pb2
from gateway.wire import caikit_data_model_nlp_pb2 as nlp_data_pb2
from gateway.wire import caikit_runtime_info_pb2, caikit_runtime_info_pb2_grpc
from gateway.wire import caikit_runtime_models_pb2 as caikit_models_pb2
from gateway.wire import caikit_runtime_models_pb2_grpc as caikit_models_grpc
from gateway.wire import caikit_runtime_nlp_pb2 as nlp_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import modelmesh_model_runtime_pb2 as mmesh_pb2
from gateway.wire import modelmesh_model_runtime_pb2_grpc as mmesh_grpc
from gateway.wire import taskgate_management_pb2 as control_pb2
from gateway.wire import taskgate_management_pb2_grpc as control_grpc

log = logging.getLogger(__name__)


def _opt(request: Any, field: str) -> Any:
    return getattr(request, field) if request.HasField(field) else None


def _truthy(request: Any, field: str, default: bool) -> bool:
    return bool(getattr(request, field)) if request.HasField(field) else default


def _documents(request: Any) -> list[dict[str, Any]]:
    documents = []
    for index, doc in enumerate(request.documents):
        try:
            documents.append(json_format.MessageToDict(doc))
        except ValueError as exc:  # NaN / infinity in a Struct has no JSON form
            raise InvalidInput(f"documents[{index}] cannot be read: {exc}") from None
    return documents


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
    async def TextGenerationTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        out = await self._core.generate(ctx, model_id, request.text, generation_params(request))
        return convert.generated_text(out, GENERATION_PRODUCER)

    async def ServerStreamingTextGenerationTaskPredict(
        self, request: Any, context: Context
    ) -> AsyncIterator[nlp_data_pb2.GeneratedTextStreamResult]:
        ctx = request_context(context)
        try:
            params = generation_params(request)
            stream = self._core.generate_stream(ctx, metadata(context, MODEL_ID_KEY), request.text, params)
            async for chunk in stream:
                yield convert.stream_chunk(chunk, GENERATION_PRODUCER)
        except TaskgateError as exc:
            await abort(context, exc, ctx.request_id)
        except Exception:
            log.exception("streaming generation failed (request id %s)", ctx.request_id)
            await abort(context, internal(ctx.request_id), ctx.request_id)

    @task_rpc
    async def TextClassificationTaskPredict(self, request: Any, ctx: RequestContext, model_id: str) -> Any:
        return convert.classification(await self._core.classify(ctx, model_id, request.text))


GENERATION_PRODUCER = Producer(name="taskgate causal-lm", version=__version__)
_GENERATION_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationParams))


def generation_params(request: Any) -> GenerationParams:
    """Caikit's (ServerStreaming)TextGenerationTaskRequest -> validated GenerationParams."""
    values: dict[str, Any] = {}
    for name in _GENERATION_FIELDS:
        if name == "stop_sequences":
            values[name] = list(request.stop_sequences) or None
        elif name == "exponential_decay_length_penalty":
            if request.HasField(name):
                penalty = request.exponential_decay_length_penalty
                values[name] = (penalty.start_index, penalty.decay_factor)
        elif request.HasField(name):
            values[name] = getattr(request, name)
    return GenerationParams.from_request(values)


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
            runtime_pb2.ModelInfo(**info)
            for info in await models_info(self._core.registry)
            if not wanted or info["name"] in wanted
        ]
        return runtime_pb2.ModelInfoResponse(models=models)


SERVICE_NAMES = (
    nlp_pb2.DESCRIPTOR.services_by_name["NlpService"].full_name,
    caikit_runtime_info_pb2.DESCRIPTOR.services_by_name["InfoService"].full_name,
    caikit_models_pb2.DESCRIPTOR.services_by_name["ModelManagement"].full_name,
    control_pb2.DESCRIPTOR.services_by_name["ModelControl"].full_name,
    mmesh_pb2.DESCRIPTOR.services_by_name["ModelRuntime"].full_name,
)


def modelmesh_address(endpoint: str, host: str) -> str:
    """ModelMesh's ``port:N`` / ``unix:PATH`` endpoint notation as a gRPC listen address."""
    if endpoint.startswith("port:"):
        return f"{host}:{int(endpoint[5:])}"
    if endpoint.startswith("unix:"):
        return endpoint
    raise ValueError(f"ModelMesh endpoint must be port:N or unix:PATH, got {endpoint!r}")


async def start_grpc(
    core: TaskService, management: ModelManagement, settings: ServerSettings, registry: RegistrySettings
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server; returns it and the bound port (useful when the port is 0)."""
    largest = max(settings.max_request_bytes, settings.max_deploy_bytes)
    guard = RequestGuard(settings.max_request_bytes, {DEPLOY_METHOD: settings.max_deploy_bytes})
    server = grpc.aio.server(
        interceptors=[guard],  # per-method limits below this server-wide one (deploys carry files)
        options=[
            ("grpc.max_receive_message_length", largest),
            # Responses may be larger than their request (rerank echoes the documents for every
            # query; HTTP serves those too), so they get the largest bound, not the task one.
            ("grpc.max_send_message_length", largest),
            ("grpc.so_reuseport", 0),
        ],
    )
    nlp_grpc.add_NlpServiceServicer_to_server(NlpServicer(core), server)
    caikit_runtime_info_pb2_grpc.add_InfoServiceServicer_to_server(InfoServicer(core), server)
    caikit_models_grpc.add_ModelManagementServicer_to_server(
        CaikitModelManagementServicer(management), server
    )
    control_grpc.add_ModelControlServicer_to_server(ModelControlServicer(management, core), server)
    mmesh = ModelMeshRuntimeServicer(management, registry.memory_budget_bytes, registry.max_concurrent_loads)
    mmesh_grpc.add_ModelRuntimeServicer_to_server(mmesh, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind gRPC to {settings.host}:{settings.grpc_port}")
    if settings.modelmesh_endpoint:
        address = modelmesh_address(settings.modelmesh_endpoint, settings.host)
        if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
            raise OSError(f"cannot bind the ModelMesh endpoint {address}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port
