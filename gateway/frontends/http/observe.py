"""The outermost ASGI middleware: every HTTP request gets a record (``gateway.ops.request_log``).

Pure ASGI (not Starlette's BaseHTTPMiddleware, which runs the app in another task and breaks
streaming and contextvars): the record is current for the whole request, the response's start
gets ``x-request-id`` (the caller's, checked, or a new one) and a valid ``traceparent`` back,
and the record is finished when the app returns, i.e. after the last byte of a stream.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.frontends.wire_codes import grpc_name_for_http
from gateway.ops.request_log import RequestObserver, RequestRecord, cut

REQUEST_ID = b"x-request-id"
TRACEPARENT = b"traceparent"
# (path prefix, door): the first that matches (the path itself or below it) names the door
DOORS: tuple[tuple[str, str], ...] = (
    ("/api/v1/task", "caikit"),
    ("/api/v1", "tuning"),  # Caikit's training route
    ("/management/trainings", "tuning"),
    ("/management/adapters", "tuning"),
    ("/management", "management"),
    ("/v2/health", "probe"),
    ("/v2/repository", "management"),
    ("/v2", "kserve_v2"),
    ("/v1/fine_tuning", "tuning"),
    ("/v1/files", "tuning"),
    ("/v1", "openai"),
    ("/health", "probe"),
    ("/metrics", "metrics"),
    ("/info", "info"),
)


def http_door(path: str) -> str:
    for prefix, door in DOORS:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return door
    return "other"


def status_code(status: int) -> str:
    """A gRPC status name for an HTTP status (the one table's mapping, read backwards)."""
    if status < 400:
        return "OK"
    return grpc_name_for_http(status) or ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT")


class ObserveRequests:
    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_id = traceparent = None
        for name, value in scope.get("headers", ()):
            if name == REQUEST_ID:
                given_id = value.decode("latin-1")
            elif name == TRACEPARENT:
                traceparent = value.decode("latin-1")
        path: str = scope.get("path", "")
        record, token = self.observer.begin("http", http_door(path), "", given_id, traceparent)
        echoed = [(REQUEST_ID, record.request_id.encode())]
        if record.traceparent:
            echoed.append((TRACEPARENT, record.traceparent.encode()))

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = message.get("headers", ())
                message["headers"] = [h for h in headers if h[0] not in (REQUEST_ID, TRACEPARENT)] + echoed
            elif record.payloads and message["type"] == "http.response.body":
                _keep_response(record, message)
            await send(message)

        app_receive = receive
        if record.payloads:
            app_receive = _payload_receiver(record, receive)
        code = ""
        try:
            await self.app(scope, app_receive, observed_send)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            code = "INTERNAL"
            raise
        finally:
            self.observer.end(token)
            record.method = f"{scope.get('method', '')} {_route(scope, path)}"
            self.observer.finish(record, code or status_code(record.status or 500))


def _route(scope: Scope, path: str) -> str:
    """The route's template (``/v2/models/{model_name}/infer``) when one matched, else the path
    (cut: a client chose it)."""
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return template
    return path if len(path) <= 200 else path[:200] + "..."


def _payload_receiver(record: RequestRecord, receive: Receive) -> Receive:
    async def kept() -> Message:
        message = await receive()
        if message["type"] == "http.request" and len(record.request_payload) < 2048:
            record.request_payload = cut(record.request_payload + _text(message.get("body", b"")))
        return message

    return kept


def _keep_response(record: RequestRecord, message: Message) -> None:
    if len(record.response_payload) < 2048:
        record.response_payload = cut(record.response_payload + _text(message.get("body", b"")))


def _text(body: bytes) -> str:
    return body[:4096].decode("utf-8", "replace")
