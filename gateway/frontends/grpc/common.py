"""gRPC plumbing shared by the servicers: metadata, request context, the one error table."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from gateway.core import RequestContext
from gateway.errors import TaskgateError, internal, new_request_id
from gateway.frontends.wire_codes import wire_code
from gateway.ops.access import current_tenant
from gateway.ops.request_log import current_record

log = logging.getLogger(__name__)

MODEL_ID_KEY = "mm-model-id"
REQUEST_ID_KEY = "x-request-id"

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
TaskHandler = Callable[[Any, Any, RequestContext, str], Awaitable[Any]]
Handler = Callable[[Any, Any, RequestContext], Awaitable[Any]]
Wrapped = Callable[[Any, Any, Context], Awaitable[Any]]


def metadata(context: Context, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else value
    return ""


def rpc(handler: Handler) -> Wrapped:
    """Wrap a handler: request context from metadata and deadline, errors via the one table."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> Any:
        return await _guarded(context, handler.__name__, lambda ctx: handler(self, request, ctx))

    return wrapper


def task_rpc(handler: TaskHandler) -> Wrapped:
    """Like ``rpc``, and passes the model id named by the ``mm-model-id`` metadata."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> Any:
        model_id = metadata(context, MODEL_ID_KEY)
        return await _guarded(context, handler.__name__, lambda ctx: handler(self, request, ctx, model_id))

    return wrapper


def request_context(context: Context) -> RequestContext:
    """The request id (the call's record's: the caller's x-request-id, checked, or a new one;
    see ``frontends.grpc.observe``) and the gRPC deadline."""
    remaining = context.time_remaining()
    deadline = time.monotonic() + remaining if remaining is not None else None
    rid = call_request_id(context)
    return RequestContext(request_id=rid, deadline=deadline, tenant=current_tenant())  # set by access_gate


async def _guarded(context: Context, name: str, call: Callable[[RequestContext], Awaitable[Any]]) -> Any:
    ctx = request_context(context)
    request_id = ctx.request_id
    try:
        return await call(ctx)
    except TaskgateError as exc:
        await abort(context, exc, request_id)
    except Exception:
        log.exception("unhandled error in %s (request id %s)", name, request_id)
        await abort(context, internal(request_id), request_id)


def call_request_id(context: Context) -> str:
    record = current_record()
    if record is not None:
        return record.request_id
    return metadata(context, REQUEST_ID_KEY) or new_request_id()


async def abort(context: Context, exc: TaskgateError, request_id: str) -> None:
    trailers: list[tuple[str, str]] = [(REQUEST_ID_KEY, request_id)]
    record = current_record()
    if record is not None and record.traceparent:
        trailers.append(("traceparent", record.traceparent))
    if exc.retry_after_s is not None:
        trailers.append(("retry-after", str(int(max(1, exc.retry_after_s)))))
    context.set_trailing_metadata(tuple(trailers))
    await context.abort(wire_code(exc).grpc, exc.message)
