"""Caikit's NlpService over gRPC: read the request and the ``mm-model-id`` metadata, call the
core, convert the result. Errors are looked up in the one table (gateway.frontends.wire_codes)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from gateway.core import RequestContext, TaskService
from gateway.errors import InvalidInput, TaskgateError, internal
from gateway.frontends.grpc import convert
from gateway.frontends.grpc.common import MODEL_ID_KEY, Context, abort, metadata, request_context, task_rpc
from gateway.generation.params import GenerationParams
from gateway.results import GENERATION_PRODUCER
from gateway.wire import caikit_data_model_nlp_pb2 as nlp_data_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

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
