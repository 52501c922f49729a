"""The REST server (FastAPI): every HTTP door on one app, errors via the one table.

The doors are routers: Caikit's task routes, management, /health, /info and /metrics. Each door
that speaks a protocol with its own error body registers that shape for its path prefix.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.core import TaskService
from gateway.errors import InvalidInput, TaskgateError, internal
from gateway.frontends.http.access_gate import AccessGate
from gateway.frontends.http.adapters import adapters_router
from gateway.frontends.http.body_limit import BodyLimit
from gateway.frontends.http.caikit_tasks import caikit_task_router
from gateway.frontends.http.caikit_training import caikit_training_router
from gateway.frontends.http.common import Json, request_id
from gateway.frontends.http.errors import ErrorBodies, error_response, routing_error
from gateway.frontends.http.kserve_v2 import kserve_v2_router, v2_error_body
from gateway.frontends.http.management import management_router
from gateway.frontends.http.observe import ObserveRequests
from gateway.frontends.http.openai.api import openai_router
from gateway.frontends.http.openai.errors import openai_error_body
from gateway.frontends.http.openai.tuning import install_openai_tuning
from gateway.frontends.http.openapi import install_caikit_openapi
from gateway.frontends.http.task_fast_path import TaskFastPath
from gateway.frontends.kserve_v2 import KServeV2Service
from gateway.models.info import models_info, runtime_info
from gateway.models.management import ModelManagement
from gateway.ops.access import Admission
from gateway.ops.request_log import RequestObserver
from gateway.settings import ServerSettings
from gateway.tuning.service import TuningService

log = logging.getLogger(__name__)


def create_app(
    core: TaskService,
    management: ModelManagement,
    settings: ServerSettings,
    tuning: TuningService | None = None,
    admission: Admission | None = None,
) -> FastAPI:
    """The app; ``tuning`` (None: no tuning routes) serves the job and adapter routes;
    ``admission`` (None: none) checks keys and shutdown before anything else (access_gate)."""
    app = FastAPI(
        title="Taskgate",
        version=__version__,
        description="Task-level text APIs (Caikit-compatible routes).",
    )
    bodies = ErrorBodies()
    app.add_middleware(TaskFastPath, core=core, bodies=bodies)  # innermost: the gates see its routes
    app.add_middleware(
        BodyLimit, limit=settings.max_request_bytes, deploy_limit=settings.max_deploy_bytes, bodies=bodies
    )
    app.add_middleware(AccessGate, admission=admission or Admission(), bodies=bodies)
    observer = RequestObserver(core.metrics, access=settings.access_log, payloads=settings.log_payloads)
    app.add_middleware(ObserveRequests, observer=observer)  # outermost: every answer is recorded
    install_caikit_openapi(app)
    app.include_router(management_router(management, core))
    app.include_router(caikit_task_router(core))
    app.include_router(kserve_v2_router(KServeV2Service(core, management)))
    bodies.register("/v2", v2_error_body)
    app.include_router(openai_router(core))
    bodies.register("/v1", openai_error_body)
    if tuning is not None:
        app.include_router(caikit_training_router(tuning))
        app.include_router(adapters_router(tuning))
        install_openai_tuning(app, bodies, tuning)

    def respond(request: Request, error: TaskgateError) -> JSONResponse:
        return error_response(error, request_id(request), bodies.body_for(request.url.path))

    @app.exception_handler(TaskgateError)
    async def on_taskgate_error(request: Request, exc: TaskgateError) -> JSONResponse:
        return respond(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_routing(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The router's own refusals (unknown path, wrong verb) in the table's body, not FastAPI's."""
        response = respond(request, routing_error(request, exc.status_code, exc.detail))
        response.headers.update(exc.headers or {})  # 405 names the allowed verbs in Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return respond(request, InvalidInput(f"invalid request: {problems}"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("unhandled error (request id %s)", rid, exc_info=exc)
        return respond(request, internal(rid))

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

    return app
