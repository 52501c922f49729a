"""The one place a gRPC call is admitted (the outermost interceptor, before ``RequestGuard``):
probes, shutdown, API keys, rights and the tenant's in-flight limit, decided by
``gateway.ops.access.Admission``.

Methods by what they need:

- liveness, open and answered while draining: ``grpc.health.v1.Health`` (it reports
  NOT_SERVING itself once draining begins) and KServe's ``ServerLive``;
- readiness, open but UNAVAILABLE while draining: KServe's ``ServerReady`` and ``ModelReady``;
- ``tune``: Caikit's ``NlpTrainingService`` and ``TrainingManagement``, Taskgate's tuning jobs;
- ``manage``: Caikit's ``ModelManagement``, ``ModelControl``, ModelMesh's ``ModelRuntime``,
  KServe's repository load / unload, and Taskgate's adapter versions (``*Adapter*``);
- ``infer``: everything else (Caikit's NlpService and InfoService, KServe inference and
  metadata, reflection).

The key rides in the metadata ``authorization: Bearer <key>`` or ``x-api-key: <key>``. Each
method's wrapped handler is cached (bounded: a handler made per call for an unknown method is
re-wrapped, and at most ``MAX_CACHED`` names are kept).

Past the process-wide in-flight limit (``Admission.sheds``) an ``infer`` call is refused here,
before the guard runs and before grpcio reads its message (``_shed_handler``): under overload
each refused call costs the event loop as little as we can make it. The limit is checked again
when a call is admitted (``_admit``), so a call let through here cannot overshoot it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from gateway.errors import TaskgateError
from gateway.frontends.grpc.common import Context, metadata
from gateway.frontends.grpc.guard import Continuation, refuse
from gateway.ops.access import Admission, Probe, Right, Route, bearer_key

MAX_CACHED = 1024
_KSERVE = "/inference.GRPCInferenceService/"
_EXACT: dict[str, Route] = {
    _KSERVE + "ServerLive": Probe.LIVENESS,
    _KSERVE + "ServerReady": Probe.READINESS,
    _KSERVE + "ModelReady": Probe.READINESS,
    _KSERVE + "RepositoryModelLoad": Right.MANAGE,
    _KSERVE + "RepositoryModelUnload": Right.MANAGE,
    "/taskgate.tuning.Tuning/ListAdapters": Right.MANAGE,
    "/taskgate.tuning.Tuning/GetAdapter": Right.MANAGE,
    "/taskgate.tuning.Tuning/RollbackAdapter": Right.MANAGE,
}
_SERVICES: dict[str, Route] = {
    "grpc.health.v1.Health": Probe.LIVENESS,
    "caikit.runtime.Nlp.NlpTrainingService": Right.TUNE,
    "caikit.runtime.training.TrainingManagement": Right.TUNE,
    "taskgate.tuning.Tuning": Right.TUNE,
    "caikit.runtime.models.ModelManagement": Right.MANAGE,
    "taskgate.management.v1.ModelControl": Right.MANAGE,
    "mmesh.ModelRuntime": Right.MANAGE,
}


def grpc_route(method: str) -> Route:
    """What a full method name (``/package.Service/Method``) needs."""
    exact = _EXACT.get(method)
    if exact is not None:
        return exact
    service = method[1:].split("/", 1)[0]
    return _SERVICES.get(service, Right.INFER)


class AccessGate(grpc.aio.ServerInterceptor):
    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._shed = _shed_handler(admission)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        route = grpc_route(method)
        if self._admission.sheds(route):  # the cheap refusal: no guard, no message read
            return self._shed
        handler = await continuation(handler_call_details)
        if handler is None or route is Probe.LIVENESS:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _gated_handler(handler, route, self._admission)
        if method in self._wrapped or len(self._wrapped) < MAX_CACHED:
            self._wrapped[method] = (handler, wrapped)
        return wrapped


def _shed_handler(admission: Admission) -> grpc.RpcMethodHandler:
    """Answers OVERLOADED (with retry-after) without reading the request: a stream handler, so
    grpcio calls it at once for any client arity, before it has received the message."""

    async def shed(requests: Any, context: Context) -> None:
        await refuse(context, admission.overloaded())

    return grpc.stream_stream_rpc_method_handler(shed)


def _gated_handler(
    handler: grpc.RpcMethodHandler, route: Route, admission: Admission
) -> grpc.RpcMethodHandler:
    parse, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _gated(handler.stream_stream, route, admission), parse, serialize
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _gated(handler.stream_unary, route, admission), parse, serialize
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _gated(handler.unary_stream, route, admission), parse, serialize
        )
    return grpc.unary_unary_rpc_method_handler(
        _gated(handler.unary_unary, route, admission), parse, serialize
    )


def _gated(behaviour: Callable[..., Any], route: Route, admission: Admission) -> Callable[..., Any]:
    """``behaviour`` (request or request iterator, context) behind the admission."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            with contextlib.ExitStack() as admitted:
                await _admit(admission, route, context, admitted)
                responses = behaviour(request, context)
                try:
                    async for response in responses:
                        yield response
                finally:
                    await responses.aclose()

        return stream

    async def call(request: Any, context: Context) -> Any:
        with contextlib.ExitStack() as admitted:
            await _admit(admission, route, context, admitted)
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

    return call


async def _admit(
    admission: Admission, route: Route, context: Context, admitted: contextlib.ExitStack
) -> None:
    key = None
    if admission.keys is not None:  # no keys: no metadata read
        key = bearer_key(metadata(context, "authorization")) or metadata(context, "x-api-key")
    try:
        tenant = admission.check(route, key)
        admitted.enter_context(admission.admitted(tenant))
    except TaskgateError as exc:
        await refuse(context, exc)
