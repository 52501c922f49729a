"""The one place an HTTP request is admitted (ASGI middleware, outermost): probes, shutdown,
API keys, rights and the tenant's in-flight limit, decided by ``gateway.ops.access.Admission``.

Routes by what they need (the longest rule first):

- liveness, open and answered while draining: ``/health``, ``/v2/health/live``, ``/metrics``
  (Prometheus scrapes without a key; its labels name models, never client input);
- readiness, open but 503 while draining: ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]/ready``;
- ``tune``: Caikit's train route and ``/management/trainings``, OpenAI's ``/v1/files`` and
  ``/v1/fine_tuning``;
- ``manage``: the rest of ``/management`` (models, adapters) and ``/v2/repository``;
- ``infer``: everything else (task routes, model metadata, ``/info``, ``/v1`` inference, docs).

The key comes from ``Authorization: Bearer <key>`` (what the openai client sends), or
``x-api-key``. Refusals use the door's error body (``ErrorBodies``) and the one table's status;
a 401 carries ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import contextlib
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import TaskgateError, Unauthenticated, new_request_id
from gateway.frontends.http.errors import ErrorBodies, error_response
from gateway.ops.access import Admission, Probe, Right, Route, bearer_key
from gateway.ops.request_log import current_request_id

LIVENESS_PATHS = frozenset({"/health", "/v2/health/live", "/metrics"})
_READINESS = re.compile(r"/v2/health/ready|/v2/models/[^/]+(/versions/[^/]+)?/ready")
_PREFIXES: tuple[tuple[str, Right], ...] = (
    ("/api/v1/TextGenerationTaskPeftPromptTuningTrain", Right.TUNE),
    ("/management/trainings", Right.TUNE),
    ("/v1/files", Right.TUNE),
    ("/v1/fine_tuning", Right.TUNE),
    ("/management", Right.MANAGE),
    ("/v2/repository", Right.MANAGE),
)


def http_route(path: str) -> Route:
    if path in LIVENESS_PATHS:
        return Probe.LIVENESS
    if _READINESS.fullmatch(path):
        return Probe.READINESS
    for prefix, right in _PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return right
    return Right.INFER


class AccessGate:
    def __init__(self, app: ASGIApp, admission: Admission, bodies: ErrorBodies) -> None:
        self.app = app
        self.admission = admission
        self.bodies = bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        route = http_route(path)
        if route is Probe.LIVENESS:
            await self.app(scope, receive, send)
            return
        key = _key(scope) if self.admission.keys is not None else None  # no keys: no header read
        with contextlib.ExitStack() as admitted:
            try:
                tenant = self.admission.check(route, key)
                admitted.enter_context(self.admission.admitted(tenant))
            except TaskgateError as exc:
                rid = current_request_id() or new_request_id()
                response = error_response(exc, rid, self.bodies.body_for(path))
                if isinstance(exc, Unauthenticated):
                    response.headers["www-authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _key(scope: Scope) -> str | None:
    """The API key: ``Authorization: Bearer <key>``, else ``x-api-key``."""
    return bearer_key(_header(scope, b"authorization")) or _header(scope, b"x-api-key")
