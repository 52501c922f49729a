"""The outermost gRPC interceptor: every call gets a record (``gateway.ops.request_log``).

The record is current while the call runs (the access gate, the guard and the servicer see it),
its request id is the caller's ``x-request-id`` metadata (checked) or a new one, and it is
finished when the call's handler returns: after the last message of a stream. A successful call
carries ``x-request-id`` (and a valid ``traceparent``) in its trailing metadata; a failed one
gets them from ``common.abort``. Wrapped handlers are cached per method (bounded like the
access gate's); a method no service of ours has is wrapped per call and never cached.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextvars import Token
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from gateway.frontends.grpc.common import REQUEST_ID_KEY, Context
from gateway.frontends.grpc.guard import Continuation
from gateway.ops.request_log import RequestObserver, RequestRecord, cut

TRACEPARENT_KEY = "traceparent"
MAX_CACHED = 1024
DOORS: dict[str, str] = {
    "caikit.runtime.Nlp.NlpService": "caikit",
    "caikit.runtime.info.InfoService": "info",
    "caikit.runtime.models.ModelManagement": "management",
    "taskgate.management.v1.ModelControl": "management",
    "mmesh.ModelRuntime": "modelmesh",
    "inference.GRPCInferenceService": "kserve_v2",
    "caikit.runtime.Nlp.NlpTrainingService": "tuning",
    "caikit.runtime.training.TrainingManagement": "tuning",
    "taskgate.tuning.Tuning": "tuning",
    "grpc.health.v1.Health": "probe",
    "grpc.reflection.v1alpha.ServerReflection": "reflection",
    "grpc.reflection.v1.ServerReflection": "reflection",
}


def grpc_door(method: str) -> str:
    return DOORS.get(method[1:].split("/", 1)[0], "other")


class ObserveCalls(grpc.aio.ServerInterceptor):
    def __init__(self, observer: RequestObserver) -> None:
        self._observer = observer
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        door = grpc_door(method)
        if door == "other":  # no service of ours: the guard's per-call refusal, never cached
            shown = method if len(method) <= 200 else method[:200] + "..."
            return _observed_handler(handler, self._observer, door, shown)
        wrapped = _observed_handler(handler, self._observer, door, method)
        if method in self._wrapped or len(self._wrapped) < MAX_CACHED:
            self._wrapped[method] = (handler, wrapped)
        return wrapped


def _observed_handler(
    handler: grpc.RpcMethodHandler, observer: RequestObserver, door: str, method: str
) -> grpc.RpcMethodHandler:
    parse, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        behaviour, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behaviour, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behaviour, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behaviour, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    return make(_observed(behaviour, observer, door, method), parse, serialize)


def _observed(
    behaviour: Callable[..., Any], observer: RequestObserver, door: str, method: str
) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            record, token = _begin(observer, context, door, method)
            code = "OK"
            try:
                async for response in behaviour(request, context):
                    yield response
                _answered(context, record)
            except BaseException as exc:
                code = _code(context, exc)
                raise
            finally:
                observer.end(token)
                observer.finish(record, code)

        return stream

    async def call(request: Any, context: Context) -> Any:
        record, token = _begin(observer, context, door, method)
        code = "OK"
        try:
            result = behaviour(request, context)
            if inspect.isawaitable(result):
                result = await result
            _answered(context, record)
            if record.payloads and isinstance(result, Message):
                record.response_payload = cut(text_format.MessageToString(result, as_one_line=True))
            return result
        except BaseException as exc:
            code = _code(context, exc)
            raise
        finally:
            observer.end(token)
            observer.finish(record, code)

    return call


def _begin(
    observer: RequestObserver, context: Context, door: str, method: str
) -> tuple[RequestRecord, Token[RequestRecord | None]]:
    given_id = traceparent = None
    for item in context.invocation_metadata() or ():
        if item.key == REQUEST_ID_KEY:
            given_id = item.value
        elif item.key == TRACEPARENT_KEY:
            traceparent = item.value
    record, token = observer.begin(
        "grpc",
        door,
        method,
        given_id if isinstance(given_id, str) else None,
        traceparent if isinstance(traceparent, str) else None,
    )
    return record, token


def _answered(context: Context, record: RequestRecord) -> None:
    """A call that ends OK carries its request id (and traceparent) in the trailing metadata."""
    if context.code() not in (None, grpc.StatusCode.OK, 0):
        return  # the servicer set a status itself (it set its trailers too)
    trailers = [(REQUEST_ID_KEY, record.request_id)]
    if record.traceparent:
        trailers.append((TRACEPARENT_KEY, record.traceparent))
    context.set_trailing_metadata(tuple(trailers))


def _code(context: Context, exc: BaseException) -> str:
    """The status a failed call ends with: the one ``abort`` set, else CANCELLED / INTERNAL."""
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return str(code.name)
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"
