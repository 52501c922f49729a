"""The one error taxonomy of Taskgate and the ONE table mapping it onto the wire.

Every failure a client can see is a ``TaskgateError`` subclass. Frontends never choose codes
themselves: they look the error's ``kind`` up in ``WIRE`` to get the gRPC status code and the
HTTP status. A failure that is not a ``TaskgateError`` is an internal error: the client gets
INTERNAL / 500 with a request id, the stack trace goes only to the log.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

import grpc


class ErrorKind(enum.Enum):
    INVALID_INPUT = "invalid_input"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MODEL_NOT_FOUND = "model_not_found"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    ALREADY_EXISTS = "already_exists"
    TASK_NOT_SUPPORTED = "task_not_supported"
    OVERLOADED = "overloaded"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


@dataclass(frozen=True)
class WireCode:
    grpc: grpc.StatusCode
    http: int


# The single table. A parametrized test raises every kind over both transports.
WIRE: dict[ErrorKind, WireCode] = {
    ErrorKind.INVALID_INPUT: WireCode(grpc.StatusCode.INVALID_ARGUMENT, 400),
    ErrorKind.PAYLOAD_TOO_LARGE: WireCode(grpc.StatusCode.INVALID_ARGUMENT, 413),
    ErrorKind.MODEL_NOT_FOUND: WireCode(grpc.StatusCode.NOT_FOUND, 404),
    # No such endpoint: an HTTP path nothing serves, or a gRPC method no service has (gRPC's own
    # code for that is UNIMPLEMENTED, and clients rely on it: grpcurl falls back from reflection
    # v1 to v1alpha on it). A known path with the wrong HTTP verb is 405; gRPC has no verbs.
    ErrorKind.ROUTE_NOT_FOUND: WireCode(grpc.StatusCode.UNIMPLEMENTED, 404),
    ErrorKind.METHOD_NOT_ALLOWED: WireCode(grpc.StatusCode.UNIMPLEMENTED, 405),
    ErrorKind.ALREADY_EXISTS: WireCode(grpc.StatusCode.ALREADY_EXISTS, 409),
    ErrorKind.TASK_NOT_SUPPORTED: WireCode(grpc.StatusCode.INVALID_ARGUMENT, 400),
    ErrorKind.OVERLOADED: WireCode(grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    ErrorKind.DEADLINE_EXCEEDED: WireCode(grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    ErrorKind.UNAVAILABLE: WireCode(grpc.StatusCode.UNAVAILABLE, 503),
    ErrorKind.CANCELLED: WireCode(grpc.StatusCode.CANCELLED, 499),
    ErrorKind.INTERNAL: WireCode(grpc.StatusCode.INTERNAL, 500),
}


def new_request_id() -> str:
    return uuid.uuid4().hex


class TaskgateError(Exception):
    """Base of every client-visible error. ``message`` is safe to send to the client."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def wire(self) -> WireCode:
        return WIRE[self.kind]


class InvalidInput(TaskgateError):
    kind = ErrorKind.INVALID_INPUT


class PayloadTooLarge(TaskgateError):
    kind = ErrorKind.PAYLOAD_TOO_LARGE


class ModelNotFound(TaskgateError):
    kind = ErrorKind.MODEL_NOT_FOUND


class RouteNotFound(TaskgateError):
    kind = ErrorKind.ROUTE_NOT_FOUND


class MethodNotAllowed(TaskgateError):
    kind = ErrorKind.METHOD_NOT_ALLOWED


class AlreadyExists(TaskgateError):
    kind = ErrorKind.ALREADY_EXISTS


class TaskNotSupported(TaskgateError):
    kind = ErrorKind.TASK_NOT_SUPPORTED


class Overloaded(TaskgateError):
    kind = ErrorKind.OVERLOADED


class DeadlineExceeded(TaskgateError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class Unavailable(TaskgateError):
    kind = ErrorKind.UNAVAILABLE


class Cancelled(TaskgateError):
    kind = ErrorKind.CANCELLED


class InternalError(TaskgateError):
    """A failure inside a runtime; the message names the request id, never the trace."""

    kind = ErrorKind.INTERNAL


ERROR_CLASSES: dict[ErrorKind, type[TaskgateError]] = {
    cls.kind: cls
    for cls in (
        InvalidInput,
        PayloadTooLarge,
        ModelNotFound,
        RouteNotFound,
        MethodNotAllowed,
        AlreadyExists,
        TaskNotSupported,
        Overloaded,
        DeadlineExceeded,
        Unavailable,
        Cancelled,
        InternalError,
    )
}


def internal(request_id: str) -> InternalError:
    return InternalError(f"internal error while serving the request; request id {request_id}")
