"""The ONE table mapping the core's error kinds onto the wire: a gRPC status code and an HTTP
status per kind. Every frontend looks codes up here and never chooses one itself; a parametrized
test raises every kind over both transports."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway.errors import ErrorKind, TaskgateError


@dataclass(frozen=True)
class WireCode:
    grpc: grpc.StatusCode
    http: int


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
    ErrorKind.UNAUTHENTICATED: WireCode(grpc.StatusCode.UNAUTHENTICATED, 401),
    ErrorKind.PERMISSION_DENIED: WireCode(grpc.StatusCode.PERMISSION_DENIED, 403),
    ErrorKind.INTERNAL: WireCode(grpc.StatusCode.INTERNAL, 500),
}


def wire_code(error: TaskgateError) -> WireCode:
    return WIRE[error.kind]


# HTTP status -> gRPC status name, read backwards off the table (the first kind with that status:
# 404 is MODEL_NOT_FOUND's NOT_FOUND), for answers that carry a status but no error kind
_GRPC_NAME_BY_HTTP = {code.http: code.grpc.name for code in reversed(WIRE.values())}


def grpc_name_for_http(status: int) -> str | None:
    """The table's gRPC status name for an HTTP error status (None: the table has no such status)."""
    return _GRPC_NAME_BY_HTTP.get(status)
