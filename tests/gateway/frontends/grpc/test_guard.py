"""The guard in front of every gRPC method: per-method size limits, malformed messages and unknown
methods answered from the one error table (grpcio alone answered UNKNOWN with the parser's
exception text, and let every method take deploy-sized messages)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gateway.errors import ErrorKind
from gateway.frontends.grpc.guard import DEPLOY_METHOD, RequestGuard
from gateway.frontends.wire_codes import WIRE
from gateway.wire import caikit_data_model_common_file_pb2 as file_pb2
from gateway.wire import caikit_data_model_runtime_models_pb2 as models_pb2
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from tests.conftest import MAX_REQUEST_BYTES
from tests.models import MINILM
from tests.wire_bytes import varint

META = (("mm-model-id", MINILM), ("x-request-id", "guard-test"))
EMBED = "/caikit.runtime.Nlp.NlpService/EmbeddingTaskPredict"
STREAM = "/caikit.runtime.Nlp.NlpService/ServerStreamingTextGenerationTaskPredict"
REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
MALFORMED = b"\x0a\x05\xff\xfe\xfd\xfc\xfb"  # field 1, a string of invalid UTF-8


def _raw_call(channel: grpc.Channel, path: str, payload: bytes, kind: str = "unary") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        if kind == "unary":
            channel.unary_unary(path)(payload, metadata=META, timeout=30)
        elif kind == "server-stream":
            list(channel.unary_stream(path)(payload, metadata=META, timeout=30))
        else:
            list(channel.stream_stream(path)(iter([payload]), metadata=META, timeout=30))
    return err.value


@pytest.mark.parametrize(
    ("path", "kind", "message_type"),
    [
        (EMBED, "unary", "caikit.runtime.Nlp.EmbeddingTaskRequest"),
        (STREAM, "server-stream", "caikit.runtime.Nlp.ServerStreamingTextGenerationTaskRequest"),
        (REFLECT, "bidi", "grpc.reflection.v1alpha.ServerReflectionRequest"),
        ("/grpc.health.v1.Health/Check", "unary", "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_malformed_messages_are_invalid_argument(
    channel: grpc.Channel, path: str, kind: str, message_type: str
) -> None:
    error = _raw_call(channel, path, MALFORMED, kind)
    assert error.code() == WIRE[ErrorKind.INVALID_INPUT].grpc
    assert error.details() == f"malformed {message_type} message"
    assert dict(error.trailing_metadata() or ())["x-request-id"] == "guard-test"


@pytest.mark.parametrize(("path", "kind"), [(EMBED, "unary"), (STREAM, "server-stream"), (REFLECT, "bidi")])
def test_messages_over_the_request_limit_are_refused(channel: grpc.Channel, path: str, kind: str) -> None:
    payload = b"\x7a" + varint(MAX_REQUEST_BYTES) + b"x" * MAX_REQUEST_BYTES  # parses: an unknown field
    error = _raw_call(channel, path, payload, kind)
    assert error.code() == WIRE[ErrorKind.PAYLOAD_TOO_LARGE].grpc
    assert error.details() == f"request message is larger than {MAX_REQUEST_BYTES} bytes"


def test_deploys_have_their_own_larger_limit(channel: grpc.Channel) -> None:
    big = file_pb2.File(filename="weights.bin", data=b"\0" * (2 * MAX_REQUEST_BYTES))
    request = models_pb2.DeployModelRequest(model_id=MINILM, model_files=[big])
    error = _raw_call(channel, DEPLOY_METHOD, request.SerializeToString())
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS  # parsed and handled, not refused for size


def test_unknown_methods_answer_from_the_table(channel: grpc.Channel) -> None:
    for kind in ("unary", "server-stream", "bidi"):
        error = _raw_call(channel, "/no.such.Service/Method", b"", kind)
        assert error.code() == WIRE[ErrorKind.ROUTE_NOT_FOUND].grpc == grpc.StatusCode.UNIMPLEMENTED
        assert "/no.such.Service/Method" in error.details()


def test_valid_calls_still_work_through_the_guard(channel: grpc.Channel) -> None:
    reply = channel.unary_unary(EMBED)(nlp.EmbeddingTaskRequest(text="hi").SerializeToString(), metadata=META)
    assert len(reply) > 384 * 4  # an EmbeddingResult of 384 floats
    check = channel.unary_unary("/grpc.health.v1.Health/Check")(
        health_pb2.HealthCheckRequest().SerializeToString()
    )
    assert health_pb2.HealthCheckResponse.FromString(check).status == health_pb2.HealthCheckResponse.SERVING


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _echo(request: Any, context: Any) -> Any:
    return request


def test_the_guard_wraps_each_method_once_and_never_caches_unknown_names() -> None:
    resolved: list[str] = []
    handler = grpc.unary_unary_rpc_method_handler(_echo, nlp.EmbeddingTaskRequest.FromString)

    async def continuation(details: Any) -> Any:
        resolved.append(details.method)
        return handler if details.method in (EMBED, DEPLOY_METHOD) else None

    guard = RequestGuard(1000, {DEPLOY_METHOD: 5000})

    async def run() -> None:
        first = await guard.intercept_service(continuation, _Details(EMBED))
        assert await guard.intercept_service(continuation, _Details(EMBED)) is first
        assert first.request_deserializer is None  # the guard parses, inside its own behaviour
        for name in ("/a/b", "/a/c", "/a/b"):
            unknown = await guard.intercept_service(continuation, _Details(name))
            assert unknown.request_streaming and unknown.response_streaming
        await guard.intercept_service(continuation, _Details(DEPLOY_METHOD))

    asyncio.run(run())
    assert resolved == [EMBED, "/a/b", "/a/c", "/a/b", DEPLOY_METHOD]
    assert set(guard._guarded) == {EMBED, DEPLOY_METHOD}
    assert guard.limit(DEPLOY_METHOD) == 5000 and guard.limit(EMBED) == 1000
