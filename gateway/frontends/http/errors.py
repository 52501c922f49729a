"""Errors as HTTP responses. The status always comes from the one table (wire_codes); the body's
shape belongs to the door the request came through: Caikit's ``{details, code, id}`` by default,
and a door that speaks another protocol (KServe v2, OpenAI) registers its own shape for its path
prefix with ``ErrorBodies.register``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from gateway.errors import (
    InvalidInput,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    TaskgateError,
    internal,
)
from gateway.frontends.http.common import REQUEST_ID_HEADER, Json, request_id, sse
from gateway.frontends.wire_codes import wire_code
from gateway.ops.request_log import note_error

ErrorBody = Callable[[TaskgateError, str], Json]


def safe_message(error: TaskgateError) -> str:
    # a message may quote the client's input; a lone surrogate in it would fail the JSON encoding
    return error.message.encode("utf-8", "backslashreplace").decode()


def caikit_error_body(error: TaskgateError, request_id: str) -> Json:
    """Caikit's REST error body (caikit.runtime.http_server): details, code and id."""
    return {"details": safe_message(error), "code": wire_code(error).http, "id": request_id}


class ErrorBodies:
    """Path prefix -> the body shape of errors on that door; Caikit's shape everywhere else."""

    def __init__(self) -> None:
        self._by_prefix: list[tuple[str, ErrorBody]] = []

    def register(self, prefix: str, body: ErrorBody) -> None:
        self._by_prefix.append((prefix, body))
        self._by_prefix.sort(key=lambda item: -len(item[0]))  # the longest prefix wins

    def body_for(self, path: str) -> ErrorBody:
        for prefix, body in self._by_prefix:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return body
        return caikit_error_body


def error_response(error: TaskgateError, rid: str, body: ErrorBody = caikit_error_body) -> JSONResponse:
    note_error(error)
    headers = {REQUEST_ID_HEADER: rid}
    if error.retry_after_s is not None:
        headers["retry-after"] = str(int(max(1, error.retry_after_s)))
    return JSONResponse(body(error, rid), status_code=wire_code(error).http, headers=headers)


def sse_error(error: TaskgateError, rid: str, body: ErrorBody = caikit_error_body) -> StreamingResponse:
    """An error before any output: the right status, with the body as one SSE error event."""
    note_error(error)

    async def events() -> AsyncIterator[str]:
        yield sse(body(error, rid))

    return StreamingResponse(events(), status_code=wire_code(error).http, media_type="text/event-stream")


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
    return internal(request_id(request))
