"""A lean path for the encoder task routes, in front of FastAPI's routing (ASGI middleware).

Caikit's encoder routes (``/api/v1/task/embedding``, ``-tasks``, similarity, rerank,
tokenization, classification) are the hot ones. Through FastAPI each request also pays for
route matching, the dependency solver, ``Request`` and body plumbing, response-model validation,
``jsonable_encoder`` and ``json.dumps``: measured with bench/profile_layers.py, a good part of the
gateway's CPU per request. Here a POST to one of those paths with ``content-type:
application/json`` is parsed with orjson, validated by the same pydantic request model, served by
the same function the FastAPI route calls (gateway/frontends/http/caikit_tasks.py) and answered
with orjson.

Anything else goes to FastAPI unchanged, and so does any body this path does not accept as it
is: JSON orjson refuses (NaN literals, a lone UTF-16 surrogate, integers past 64 bits, a BOM,
other encodings) or a body the model refuses is replayed to the FastAPI route, which answers it
exactly as before (its 400 body names the field). The OpenAPI document is FastAPI's, untouched.
Errors from the core are answered as the app's exception handler answers them (the one table,
the door's body); a result holding a non-finite float (which JSON cannot carry) is an internal
error, as Starlette's ``JSONResponse`` makes it, never a silent ``null``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core import TaskService
from gateway.errors import TaskgateError, internal
from gateway.frontends.http import caikit_tasks, schemas
from gateway.frontends.http.common import Json, request_id
from gateway.frontends.http.errors import ErrorBodies, error_response

log = logging.getLogger(__name__)

Handler = Callable[[TaskService, Any, Request], Awaitable[Json]]
ROUTES: dict[str, tuple[type[BaseModel], Handler]] = {
    "/api/v1/task/embedding": (schemas.EmbeddingRequest, caikit_tasks.embed_one),
    "/api/v1/task/embedding-tasks": (schemas.EmbeddingTasksRequest, caikit_tasks.embed_many),
    "/api/v1/task/sentence-similarity": (schemas.SimilarityRequest, caikit_tasks.similarity_one),
    "/api/v1/task/sentence-similarity-tasks": (schemas.SimilarityTasksRequest, caikit_tasks.similarity_many),
    "/api/v1/task/rerank": (schemas.RerankRequest, caikit_tasks.rerank_one),
    "/api/v1/task/rerank-tasks": (schemas.RerankTasksRequest, caikit_tasks.rerank_many),
    "/api/v1/task/tokenization": (schemas.TextRequest, caikit_tasks.tokenize),
    "/api/v1/task/text-classification": (schemas.TextRequest, caikit_tasks.classify),
}


class TaskFastPath:
    """Serves ``ROUTES`` itself; everything else (and every body it does not take) goes to ``app``.
    Install it inside the access gate and the body limit (they still see every request)."""

    def __init__(self, app: ASGIApp, core: TaskService, bodies: ErrorBodies) -> None:
        self.app = app
        self.core = core
        self.bodies = bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = ROUTES.get(scope["path"])
            if route is not None and _json_content(scope):
                await self._serve(route, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: tuple[type[BaseModel], Handler], scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = await _read_body(receive)
        if body is None:  # the client left (or the body limit answered 413 already)
            return
        model, handler = route
        try:
            parsed = model.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError):
            await self.app(scope, _replay(body, receive), send)  # FastAPI answers it, as it always has
            return
        request = Request(scope, receive)
        try:
            content = _dumps(await handler(self.core, parsed, request))
        except TaskgateError as exc:
            response: Response = error_response(exc, request_id(request), self.bodies.body_for(scope["path"]))
        except Exception as exc:  # what the app's last-resort handler does
            rid = request_id(request)
            log.error("unhandled error (request id %s)", rid, exc_info=exc)
            response = error_response(internal(rid), rid, self.bodies.body_for(scope["path"]))
        else:
            response = Response(content, media_type="application/json")
        await response(scope, receive, send)


def _json_content(scope: Scope) -> bool:
    """``content-type: application/json`` (parameters allowed), as FastAPI reads a JSON body."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read handed out again first."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _dumps(content: Json) -> bytes:
    """orjson's bytes; it writes NaN and infinities as null, where ``json.dumps(allow_nan=False)``
    (Starlette's JSONResponse) raises: so does this, and the request is an internal error."""
    data = orjson.dumps(content)
    if b"null" in data and not _finite(content):
        raise ValueError("Out of range float values are not JSON compliant")
    return data


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True
