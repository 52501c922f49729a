"""The one error taxonomy of Taskgate, protocol-neutral.

Every failure a client can see is a ``TaskgateError`` subclass with a ``kind``. The core raises
them and knows no transport; the frontends map a kind onto the wire with the ONE table in
``gateway.frontends.wire_codes`` (gRPC status code and HTTP status). A failure that is not a
``TaskgateError`` is an internal error: the client gets INTERNAL / 500 with a request id, the
stack trace goes only to the log.
"""

from __future__ import annotations

import enum
import uuid


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
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    INTERNAL = "internal"


def new_request_id() -> str:
    return uuid.uuid4().hex


class TaskgateError(Exception):
    """Base of every client-visible error. ``message`` is safe to send to the client."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, retry_after_s: float | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.param = param  # the request field at fault, when one is (OpenAI's error "param")


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


class Unauthenticated(TaskgateError):
    """No API key, or one no tenant has (API keys are configured)."""

    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(TaskgateError):
    """The caller's tenant lacks the right the call needs, or may not touch what it names."""

    kind = ErrorKind.PERMISSION_DENIED


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
        Unauthenticated,
        PermissionDenied,
        InternalError,
    )
}


def internal(request_id: str) -> InternalError:
    return InternalError(f"internal error while serving the request; request id {request_id}")
