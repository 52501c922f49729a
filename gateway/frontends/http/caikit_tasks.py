"""Caikit's REST task routes (``/api/v1/task/...``), over the protocol-neutral core."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from gateway.core import TaskService
from gateway.errors import TaskgateError, internal
from gateway.frontends.http import convert, schemas
from gateway.frontends.http.common import Json, request_context, sse, until_disconnect
from gateway.frontends.http.errors import caikit_error_body, sse_error
from gateway.generation.params import GenerationParams
from gateway.results import GENERATION_PRODUCER

log = logging.getLogger(__name__)


def caikit_task_router(core: TaskService) -> APIRouter:
    router = APIRouter()

    @router.post("/api/v1/task/embedding")
    async def embedding(body: schemas.EmbeddingRequest, request: Request) -> Json:
        return await embed_one(core, body, request)

    @router.post("/api/v1/task/embedding-tasks")
    async def embedding_tasks(body: schemas.EmbeddingTasksRequest, request: Request) -> Json:
        return await embed_many(core, body, request)

    @router.post("/api/v1/task/sentence-similarity")
    async def sentence_similarity(body: schemas.SimilarityRequest, request: Request) -> Json:
        return await similarity_one(core, body, request)

    @router.post("/api/v1/task/sentence-similarity-tasks")
    async def sentence_similarity_tasks(body: schemas.SimilarityTasksRequest, request: Request) -> Json:
        return await similarity_many(core, body, request)

    @router.post("/api/v1/task/rerank")
    async def rerank(body: schemas.RerankRequest, request: Request) -> Json:
        return await rerank_one(core, body, request)

    @router.post("/api/v1/task/rerank-tasks")
    async def rerank_tasks(body: schemas.RerankTasksRequest, request: Request) -> Json:
        return await rerank_many(core, body, request)

    @router.post("/api/v1/task/tokenization")
    async def tokenization(body: schemas.TextRequest, request: Request) -> Json:
        return await tokenize(core, body, request)

    @router.post("/api/v1/task/text-generation")
    async def text_generation(body: schemas.TextGenerationRequest, request: Request) -> Json:
        params = GenerationParams.from_request(body.parameters.model_dump())
        work = core.generate(request_context(request), body.model_id, body.inputs, params)
        return convert.generated_text(await until_disconnect(request, work), GENERATION_PRODUCER)

    @router.post("/api/v1/task/server-streaming-text-generation")
    async def server_streaming_text_generation(
        body: schemas.TextGenerationRequest, request: Request
    ) -> StreamingResponse:
        """Server-sent events: one ``data:`` JSON chunk per event. A failure is an event with the
        usual error body; before any output it also has the error's HTTP status."""
        context = request_context(request)
        try:
            params = GenerationParams.from_request(body.parameters.model_dump())
            chunks = core.generate_stream(context, body.model_id, body.inputs, params)
            first = await anext(chunks)  # errors before any output get a proper status code
        except TaskgateError as exc:
            return sse_error(exc, context.request_id)

        async def events() -> AsyncIterator[str]:
            try:
                yield sse(convert.stream_chunk(first, GENERATION_PRODUCER))
                async for chunk in chunks:
                    yield sse(convert.stream_chunk(chunk, GENERATION_PRODUCER))
            except TaskgateError as exc:
                yield sse(caikit_error_body(exc, context.request_id))
            except Exception:
                log.exception("streaming generation failed (request id %s)", context.request_id)
                yield sse(caikit_error_body(internal(context.request_id), context.request_id))
            finally:
                await chunks.aclose()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @router.post("/api/v1/task/text-classification")
    async def text_classification(body: schemas.TextRequest, request: Request) -> Json:
        return await classify(core, body, request)

    return router


# The encoder task routes' work, shared by the FastAPI routes above (which the OpenAPI document
# describes) and the lean path in front of them (gateway/frontends/http/task_fast_path.py).
async def embed_one(core: TaskService, body: schemas.EmbeddingRequest, request: Request) -> Json:
    p = body.parameters
    work = core.embed(request_context(request), body.model_id, [body.inputs], p.truncate_input_tokens)
    return convert.embedding(await until_disconnect(request, work))


async def embed_many(core: TaskService, body: schemas.EmbeddingTasksRequest, request: Request) -> Json:
    p = body.parameters
    work = core.embed(request_context(request), body.model_id, body.inputs, p.truncate_input_tokens)
    return convert.embeddings(await until_disconnect(request, work))


async def similarity_one(core: TaskService, body: schemas.SimilarityRequest, request: Request) -> Json:
    i, p = body.inputs, body.parameters
    work = core.similarity(
        request_context(request), body.model_id, [i.source_sentence], i.sentences, p.truncate_input_tokens
    )
    return convert.similarity(await until_disconnect(request, work))


async def similarity_many(core: TaskService, body: schemas.SimilarityTasksRequest, request: Request) -> Json:
    i, p = body.inputs, body.parameters
    work = core.similarity(
        request_context(request), body.model_id, i.source_sentences, i.sentences, p.truncate_input_tokens
    )
    return convert.similarities(await until_disconnect(request, work))


async def rerank_one(core: TaskService, body: schemas.RerankRequest, request: Request) -> Json:
    i, p = body.inputs, body.parameters
    work = core.rerank(
        request_context(request),
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


async def rerank_many(core: TaskService, body: schemas.RerankTasksRequest, request: Request) -> Json:
    i, p = body.inputs, body.parameters
    work = core.rerank(
        request_context(request),
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


async def tokenize(core: TaskService, body: schemas.TextRequest, request: Request) -> Json:
    work = core.tokenize(request_context(request), body.model_id, body.inputs)
    return convert.tokenization(await until_disconnect(request, work))


async def classify(core: TaskService, body: schemas.TextRequest, request: Request) -> Json:
    work = core.classify(request_context(request), body.model_id, body.inputs)
    return convert.classification(await until_disconnect(request, work))
