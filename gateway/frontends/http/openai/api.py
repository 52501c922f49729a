"""The OpenAI-compatible door (``/v1``) over the protocol-neutral core.

``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (both streamed or not) and ``POST /v1/embeddings``, in the shapes
the official ``openai`` client parses. ``model`` is resolved by ``ModelNameResolver``: a store
model, or a tuned adapter (``name`` / ``name@N``) served by the core on its base model; the
model list shows both. Chat messages are rendered with the model's own chat template by the
core. Errors are OpenAI's body (``openai_errors``, registered for ``/v1`` in ``create_app``)
with the status of the one table; ``x-request-timeout-ms`` sets the deadline.

Bodies are parsed here rather than by FastAPI, so a bad field is a 400 naming it (``param``).
The routes are left out of ``/openapi.json``: that document is shaped for Caikit's clients and
its fuzz test expects Caikit's error body on every route.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway.core import RequestContext, TaskService
from gateway.frontends.http.common import request_context, until_disconnect
from gateway.frontends.http.openai import convert as convert
from gateway.frontends.http.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_request,
)
from gateway.frontends.http.openai.stream import StreamShape, close_all, events, run_all
from gateway.frontends.model_names import ModelNameResolver, StoredAdapters
from gateway.generation.params import GenerationParams
from gateway.models.registry import ModelStatus
from gateway.models.store import MANIFEST

Jobs = list[tuple[str, GenerationParams]]  # (prompt, params) per choice, in choice order


def openai_router(core: TaskService, names: ModelNameResolver | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1", include_in_schema=False)
    adapters = StoredAdapters(core.adapters.store) if core.adapters is not None else None
    resolver = names or ModelNameResolver(core.registry, adapters)

    async def served(model: str) -> str:
        return (await resolver.resolve(model)).served_id

    @router.get("/models")
    async def list_models() -> JSONResponse:
        statuses = [s for s in await core.registry.status() if s.tasks]  # readable manifests
        created = await asyncio.to_thread(_created_times, statuses)
        data = [convert.model_card(s.model_id, t) for s, t in zip(statuses, created, strict=True)]
        data += [convert.model_card(a.name, int(a.created)) for a in await resolver.adapters()]
        return JSONResponse({"object": "list", "data": data})

    @router.get("/models/{model}")
    async def get_model(model: str) -> JSONResponse:
        resolved = await resolver.resolve(model)
        if resolved.adapter is not None:
            return JSONResponse(convert.model_card(model, int(resolved.adapter.created)))
        status = await core.registry.model_status(resolved.base_model_id)
        created = await asyncio.to_thread(_created_times, [status])
        return JSONResponse(convert.model_card(model, created[0]))

    @router.post("/completions")
    async def completions(request: Request) -> Response:
        ctx = request_context(request)
        body = parse_request(CompletionRequest, await request.body())
        prompts = convert.check_completion(body)
        model_id = await served(body.model)
        n = body.n or 1
        max_tokens = body.max_tokens or convert.DEFAULT_COMPLETION_TOKENS
        echo = bool(body.echo)
        jobs = [
            (p, convert.generation_params(body, max_tokens, j, echo=echo)) for p in prompts for j in range(n)
        ]
        created = int(time.time())
        if body.stream:
            shape = _shape(ctx, created, body, chat=False, per_prompt=n)
            return await _stream(core, request, ctx, model_id, jobs, shape)
        outputs = await until_disconnect(
            request, run_all([core.generate(ctx, model_id, p, params) for p, params in jobs])
        )
        return JSONResponse(convert.completion(ctx.request_id, created, body.model, outputs, n))

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        ctx = request_context(request)
        body = parse_request(ChatCompletionRequest, await request.body())
        messages = convert.check_chat(body)
        model_id = await served(body.model)
        prompt = await core.chat_prompt(ctx, model_id, messages)
        n = body.n or 1
        max_tokens = body.max_completion_tokens or body.max_tokens or prompt.max_new_tokens
        jobs = [(prompt.text, convert.generation_params(body, max_tokens, j)) for j in range(n)]
        created = int(time.time())
        if body.stream:
            shape = _shape(ctx, created, body, chat=True, per_prompt=n)
            return await _stream(core, request, ctx, model_id, jobs, shape)
        outputs = await until_disconnect(
            request, run_all([core.generate(ctx, model_id, p, params) for p, params in jobs])
        )
        return JSONResponse(convert.chat_completion(ctx.request_id, created, body.model, outputs))

    @router.post("/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        ctx = request_context(request)
        body = parse_request(EmbeddingRequest, await request.body())
        texts = convert.embedding_inputs(body)
        model_id = await served(body.model)
        out = await until_disconnect(request, core.embed(ctx, model_id, texts, None))
        return JSONResponse(convert.embeddings(out, body.model, body.encoding_format, body.dimensions))

    return router


async def _stream(
    core: TaskService, request: Request, ctx: RequestContext, model_id: str, jobs: Jobs, shape: StreamShape
) -> StreamingResponse:
    """Start every choice's stream and wait for each one's first chunk, so that an error before
    any output is answered with its status and body; then stream the rest as events."""
    streams = [core.generate_stream(ctx, model_id, text, params) for text, params in jobs]
    try:
        firsts = await until_disconnect(request, run_all([anext(stream) for stream in streams]))
    except BaseException:
        await close_all(streams)
        raise
    return StreamingResponse(
        events(shape, streams, firsts), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


def _shape(
    ctx: RequestContext,
    created: int,
    body: CompletionRequest | ChatCompletionRequest,
    *,
    chat: bool,
    per_prompt: int,
) -> StreamShape:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamShape(ctx.request_id, created, body.model, chat, include_usage, per_prompt)


def _created_times(statuses: list[ModelStatus]) -> list[int]:
    """When each model was put in the store: its manifest's modification time (reads files)."""
    times = []
    for status in statuses:
        try:
            times.append(int(os.stat(Path(status.folder) / MANIFEST).st_mtime))
        except OSError:
            times.append(0)
    return times
