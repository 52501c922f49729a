"""The guard in front of every gRPC method: size limits per method, malformed messages and
unknown methods answered from the one error table.

Left alone, grpcio parses a request inside its own code: bytes that don't parse come back as
UNKNOWN with the parser's exception text, and the only size limit is the server-wide receive
limit, which has to admit model deploys. ``RequestGuard`` wraps each method's handler once (the
wrapped handler is cached per method name; the cache is bounded by the registered methods):

- unary requests: the handler gets the raw bytes and the wrapper checks the size and parses
  them before calling the servicer (one extra coroutine frame and a length check per call);
- streamed requests (reflection): the deserializer checks and parses each message and raises
  the error, which the wrapped behaviour answers through the table;
- a method nobody serves answers ROUTE_NOT_FOUND (gRPC UNIMPLEMENTED, as grpcio would), from a
  handler made per call and never cached, so hostile method names cannot grow the cache.

It must be the server's only (or innermost) interceptor: a cached method skips ``continuation``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn

import grpc

from gateway.errors import InvalidInput, PayloadTooLarge, RouteNotFound, TaskgateError
from gateway.frontends.grpc.common import Context, abort, call_request_id
from gateway.ops.request_log import keep_request_payload

DEPLOY_METHOD = "/caikit.runtime.models.ModelManagement/DeployModel"
# training data rides inline in these requests: they get the deploy limit too
TRAIN_METHODS = (
    "/caikit.runtime.Nlp.NlpTrainingService/TextGenerationTaskPeftPromptTuningTrain",
    "/taskgate.tuning.Tuning/CreateJob",
)
Parse = Callable[[bytes], Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RequestGuard(grpc.aio.ServerInterceptor):
    """Per-method receive limits (``limits`` by full method name, else ``max_request_bytes``)."""

    def __init__(self, max_request_bytes: int, limits: Mapping[str, int] | None = None) -> None:
        self._default_limit = max_request_bytes
        self._limits = dict(limits or {})
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}

    def limit(self, method: str) -> int:
        return self._limits.get(method, self._default_limit)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is not None:
            return guarded
        handler = await continuation(handler_call_details)
        if handler is None:
            return _unknown_method(method)
        guarded = guard_handler(handler, self.limit(method), method)
        self._guarded[method] = guarded
        return guarded


def guard_handler(handler: grpc.RpcMethodHandler, limit: int, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with its requests size-checked and parsed under the guard (async behaviours;
    a synchronous one, which this server does not have, is returned as it is)."""
    parse: Parse = handler.request_deserializer or _identity
    name = _message_name(parse, method)
    if not handler.request_streaming:
        behaviour = handler.unary_stream if handler.response_streaming else handler.unary_unary
        if not _is_async(behaviour):
            return handler
        call = _unary_request(behaviour, parse, limit, name, handler.response_streaming)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(call, None, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(call, None, handler.response_serializer)
    behaviour = handler.stream_stream if handler.response_streaming else handler.stream_unary
    if not _is_async(behaviour):
        return handler
    deserialize = _checked_deserializer(parse, limit, name)
    call = _stream_request(behaviour, handler.response_streaming)
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(call, deserialize, handler.response_serializer)
    return grpc.stream_unary_rpc_method_handler(call, deserialize, handler.response_serializer)


def _unary_request(
    behaviour: Callable[..., Any], parse: Parse, limit: int, name: str, response_streaming: bool
) -> Callable[[bytes, Context], Awaitable[Any]]:
    deserialize = _checked_deserializer(parse, limit, name)
    if response_streaming and inspect.isasyncgenfunction(behaviour):

        async def stream_out(raw: bytes, context: Context) -> None:
            try:
                request = deserialize(raw)
            except TaskgateError as exc:
                await refuse(context, exc)
            keep_request_payload(request)
            await _write_all(behaviour(request, context), context)

        return stream_out

    async def unary_out(raw: bytes, context: Context) -> Any:  # the hot path: no extra coroutine
        try:
            request = deserialize(raw)
        except TaskgateError as exc:
            await refuse(context, exc)
        keep_request_payload(request)
        return await behaviour(request, context)

    return unary_out


def _checked_deserializer(parse: Parse, limit: int, name: str) -> Parse:
    """``parse`` behind the method's size limit; failures are errors of the one table."""
    too_large = f"request message is larger than {limit} bytes"
    malformed = f"malformed {name} message"

    def deserialize(raw: bytes) -> Any:
        if len(raw) > limit:
            raise PayloadTooLarge(too_large)
        try:
            return parse(raw)
        except Exception:
            raise InvalidInput(malformed) from None

    return deserialize


def _stream_request(
    behaviour: Callable[..., Any], response_streaming: bool
) -> Callable[[Any, Context], Awaitable[Any]]:
    """The deserializer raises inside the servicer's loop over its requests; answer it here."""
    if response_streaming and inspect.isasyncgenfunction(behaviour):

        async def stream_out(requests: Any, context: Context) -> None:
            try:
                await _write_all(behaviour(requests, context), context)
            except TaskgateError as exc:
                await refuse(context, exc)

        return stream_out

    async def call(requests: Any, context: Context) -> Any:
        try:
            return await behaviour(requests, context)
        except TaskgateError as exc:
            await refuse(context, exc)

    return call


async def _write_all(responses: AsyncIterator[Any], context: Context) -> None:
    """What grpcio does with an async-generator servicer, done here (reader / writer API)."""
    try:
        async for response in responses:
            await context.write(response)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


def _unknown_method(method: str) -> grpc.RpcMethodHandler:
    """Answers without reading a message, so any client arity gets the status at once."""
    shown = method if len(method) <= 200 else method[:200] + "..."

    async def answer(requests: Any, context: Context) -> None:
        await refuse(context, RouteNotFound(f"no gRPC method {shown!r} on this server"))

    return grpc.stream_stream_rpc_method_handler(answer)


async def refuse(context: Context, error: TaskgateError) -> NoReturn:
    """Abort the call with ``error``'s code from the one table (and the request id trailer)."""
    await abort(context, error, call_request_id(context))
    raise AssertionError("context.abort returned")  # it raises AbortError


def _identity(raw: bytes) -> bytes:
    return raw


def _is_async(behaviour: Any) -> bool:
    return inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)


def _message_name(parse: Parse, method: str) -> str:
    """The request type's full name, from a generated ``Message.FromString`` deserializer."""
    descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    return full_name if isinstance(full_name, str) else f"{method} request"
