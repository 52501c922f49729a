"""OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``, for the /v1 door.

The HTTP status still comes from the one table (``wire_codes``); this only names the error the
way OpenAI clients expect: ``type`` and ``code`` strings per error kind, and ``param`` (the
request field at fault) when the error names one (``TaskgateError.param``); ``OpenAIParamError``
also carries OpenAI's own ``code`` (e.g. ``unsupported_value``).
"""

from __future__ import annotations

from gateway.errors import ErrorKind, InvalidInput, TaskgateError
from gateway.frontends.http.common import Json
from gateway.frontends.http.errors import safe_message

INVALID_REQUEST = "invalid_request_error"

# kind -> (OpenAI's error type, its code)
_NAMES: dict[ErrorKind, tuple[str, str]] = {
    ErrorKind.INVALID_INPUT: (INVALID_REQUEST, "invalid_value"),
    ErrorKind.PAYLOAD_TOO_LARGE: (INVALID_REQUEST, "request_too_large"),
    ErrorKind.MODEL_NOT_FOUND: (INVALID_REQUEST, "model_not_found"),
    ErrorKind.ROUTE_NOT_FOUND: (INVALID_REQUEST, "unknown_url"),
    ErrorKind.METHOD_NOT_ALLOWED: (INVALID_REQUEST, "method_not_allowed"),
    ErrorKind.ALREADY_EXISTS: (INVALID_REQUEST, "already_exists"),
    ErrorKind.TASK_NOT_SUPPORTED: (INVALID_REQUEST, "model_not_supported"),
    ErrorKind.OVERLOADED: ("rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.DEADLINE_EXCEEDED: ("timeout_error", "timeout"),
    ErrorKind.UNAVAILABLE: ("service_unavailable_error", "service_unavailable"),
    ErrorKind.CANCELLED: (INVALID_REQUEST, "request_cancelled"),
    ErrorKind.UNAUTHENTICATED: (INVALID_REQUEST, "invalid_api_key"),
    ErrorKind.PERMISSION_DENIED: (INVALID_REQUEST, "insufficient_permissions"),
    ErrorKind.INTERNAL: ("server_error", "internal_error"),
}


class OpenAIParamError(InvalidInput):
    """Bad input in one request field: a 400 whose body names the field (``param``)."""

    def __init__(self, message: str, *, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message, param=param)
        self.code = code


def unsupported(param: str, what: str) -> OpenAIParamError:
    """A parameter (or value) this server cannot honour: refused, never silently ignored."""
    return OpenAIParamError(f"{what} is not supported by this server", param=param, code="unsupported_value")


def openai_error_body(error: TaskgateError, request_id: str) -> Json:
    kind_type, kind_code = _NAMES.get(error.kind, ("server_error", "internal_error"))
    code = error.code if isinstance(error, OpenAIParamError) else kind_code
    return {"error": {"message": safe_message(error), "type": kind_type, "param": error.param, "code": code}}
