"""The process-wide in-flight limit (--max-inflight) on a real gateway, real clients, both transports.

With a limit of 2 and two generation streams held open (one over REST, one over gRPC: in flight
until their last token), every further task request on any door is refused at once with
RESOURCE_EXHAUSTED / 429, retry-after and the door's own error body; health, /metrics and
management keep answering; when the streams end the gateway serves again. Also: grpcio's own
bound (--grpc-max-concurrent-rpcs), the HTTP listener's backlog, and the three settings' flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.settings import parse
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.models import MINILM

pytestmark = pytest.mark.timeout(600)
LIMIT = 2
PROMPT = "<|im_start|>user\nTell me a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
LONG = {"max_new_tokens": 200, "min_new_tokens": 200}  # a stream that stays open while we look
EMBED = {"model_id": MINILM, "inputs": "a sentence"}
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SLOW_LOAD = {"x-request-timeout-ms": "600000"}  # SmolLM2's first load may take minutes here


@pytest.fixture(scope="module")
def limited(store: Path) -> Iterator[GatewayThread]:
    settings = gateway_settings(store)
    settings = dataclasses.replace(
        settings,
        limits=dataclasses.replace(settings.limits, max_inflight=LIMIT),
        server=dataclasses.replace(settings.server, http_backlog=1234),
    )
    server = GatewayThread(settings)
    server.start()
    yield server
    server.stop()


class HeldUpload:
    """A REST task request admitted and held in flight: its headers and half its body sent."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        head = (
            f"POST /api/v1/task/embedding HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n"
        )
        self.sock.sendall(head.encode() + b'{"model_id": ')

    def close(self) -> None:
        self.sock.close()


class HeldStream:
    """A gRPC streaming call admitted and held in flight: a reflection stream whose requests wait."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.release = threading.Event()
        request = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

        def requests() -> Iterator[bytes]:
            yield request
            self.release.wait(60)

        self.call = channel.stream_stream(REFLECTION)(requests(), timeout=120)
        assert next(self.call)  # admitted: it answered the first request

    def close(self) -> None:
        self.release.set()
        assert list(self.call) == []


@contextlib.contextmanager
def held_in_flight(gateway: GatewayThread, channel: grpc.Channel) -> Iterator[None]:
    """LIMIT requests in flight for the block: a REST upload and a gRPC stream, both unfinished."""
    upload, stream = HeldUpload(gateway.gateway.addresses.http), HeldStream(channel)
    try:
        _until(lambda: gateway.gateway.drain.inflight == LIMIT)  # the gate admits at the headers
        yield
    finally:
        upload.close()
        stream.close()


def _embed_grpc(channel: grpc.Channel) -> Any:
    return nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
        nlp.EmbeddingTaskRequest(text="a sentence"), metadata=(("mm-model-id", MINILM),), timeout=60
    )


def _until(condition: Callable[[], bool]) -> None:
    """Places are taken and freed once the server sees a request arrive or end (not instantly)."""
    give_up = time.monotonic() + 60
    while not condition() and time.monotonic() < give_up:
        time.sleep(0.02)
    assert condition()


def test_past_the_limit_every_door_sheds_at_once_with_retry_after(limited: GatewayThread) -> None:
    addresses = limited.gateway.addresses
    with (
        httpx.Client(base_url=addresses.http, timeout=60) as http,
        grpc.insecure_channel(addresses.grpc) as channel,
    ):
        assert http.post("/api/v1/task/embedding", json=EMBED).status_code == 200  # loaded, served
        with held_in_flight(limited, channel):
            caikit = http.post("/api/v1/task/embedding", json=EMBED, headers={"x-request-id": "shed-1"})
            assert caikit.status_code == 429 and caikit.headers["retry-after"] == "1"
            assert caikit.json()["code"] == 429 and caikit.json()["id"] == "shed-1"
            assert f"the server has {LIMIT} requests in flight" in caikit.json()["details"]
            openai = http.post("/v1/embeddings", json={"model": MINILM, "input": "a sentence"})
            assert openai.status_code == 429 and openai.headers["retry-after"] == "1"
            assert openai.json()["error"]["type"]  # OpenAI's error body on its door
            v2 = http.post(
                f"/v2/models/{MINILM}/infer",
                json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]},
            )
            assert v2.status_code == 429 and "requests in flight" in v2.json()["error"]
            streamed = http.post(
                "/api/v1/task/server-streaming-text-generation",
                json={"model_id": SMOL, "inputs": PROMPT, "parameters": {"max_new_tokens": 4}},
            )
            assert streamed.status_code == 429 and streamed.headers["retry-after"] == "1"
            # a malformed body is not even read: the gate answers before parsing
            assert http.post("/api/v1/task/embedding", content=b"{not json").status_code == 429

            with pytest.raises(grpc.RpcError) as caught:
                _embed_grpc(channel)
            error: Any = caught.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(error.trailing_metadata() or ())
            assert trailers["retry-after"] == "1" and trailers["x-request-id"]
            with pytest.raises(grpc.RpcError) as streamed_grpc:
                list(
                    nlp_grpc.NlpServiceStub(channel).ServerStreamingTextGenerationTaskPredict(
                        nlp.ServerStreamingTextGenerationTaskRequest(text=PROMPT, max_new_tokens=4),
                        metadata=(("mm-model-id", SMOL),),
                        timeout=60,
                    )
                )
            assert streamed_grpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]

            # probes, metrics and management are counted, never refused
            assert http.get("/health").text == "OK"
            assert http.get("/v2/health/ready").status_code == 200
            assert "taskgate_" in http.get("/metrics").text
            assert http.get(f"/management/models/{MINILM}").status_code == 200
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert limited.gateway.drain.inflight == LIMIT  # the refusals held no place
        _until(lambda: limited.gateway.drain.inflight == 0)
        assert http.post("/api/v1/task/embedding", json=EMBED).status_code == 200
        assert len(_embed_grpc(channel).result.data_npfloat32sequence.values) == 384


def test_a_generation_stream_holds_its_place_until_its_last_token(limited: GatewayThread) -> None:
    """A REST generation stream is in flight until it ends: beside one held gRPC stream it fills
    the limit, a further request is shed, and once the stream ends it is served."""
    addresses = limited.gateway.addresses
    body = {"model_id": SMOL, "inputs": PROMPT, "parameters": LONG}
    with (
        httpx.Client(base_url=addresses.http, timeout=600) as http,
        grpc.insecure_channel(addresses.grpc) as channel,
    ):
        held = HeldStream(channel)
        try:
            with http.stream(
                "POST", "/api/v1/task/server-streaming-text-generation", json=body, headers=SLOW_LOAD
            ) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(lines).startswith("data:")  # the first token: admitted, running
                refused = http.post("/api/v1/task/embedding", json=EMBED)
                assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                tokens = sum(1 for line in lines if line.startswith("data:"))  # to the last token
                assert tokens > 0
            _until(lambda: limited.gateway.drain.inflight == 1)  # the held gRPC stream alone
            assert http.post("/api/v1/task/embedding", json=EMBED).status_code == 200
        finally:
            held.close()


def test_the_http_listener_has_the_backlog_set(limited: GatewayThread) -> None:
    port = limited.gateway.addresses.http.rsplit(":", 1)[1]
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    _, _, send_q, *_ = listing.split()  # a listening socket's Send-Q is its backlog
    assert int(send_q) == min(1234, int(Path("/proc/sys/net/core/somaxconn").read_text()))


def test_grpcios_own_bound_refuses_beyond_it_without_retry_after(store: Path) -> None:
    """--grpc-max-concurrent-rpcs: grpcio answers a call beyond it itself, before our
    interceptors, so the answer carries no retry-after (and it counts every call, health
    included): a backstop above --max-inflight only."""
    settings = gateway_settings(store)
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, grpc_max_concurrent_rpcs=1)
    )
    server = GatewayThread(settings)
    server.start()
    try:
        with grpc.insecure_channel(server.gateway.addresses.grpc) as channel:
            assert len(_embed_grpc(channel).result.data_npfloat32sequence.values) == 384
            held = HeldStream(channel)
            with pytest.raises(grpc.RpcError) as caught:  # the held stream is the one call allowed
                _embed_grpc(channel)
            error: Any = caught.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry-after" not in dict(error.trailing_metadata() or ())
            held.close()
            give_up = time.monotonic() + 60
            while True:  # grpcio frees the place once it has seen the cancel
                try:
                    assert len(_embed_grpc(channel).result.data_npfloat32sequence.values) == 384
                    break
                except grpc.RpcError:
                    if time.monotonic() > give_up:
                        raise
                    time.sleep(0.05)
    finally:
        server.stop()


def test_the_settings_have_flags_environment_variables_and_checks() -> None:
    flags = parse(["--max-inflight", "7", "--http-backlog", "99", "--grpc-max-concurrent-rpcs", "50"], {})
    assert (flags.limits.max_inflight, flags.server.http_backlog) == (7, 99)
    assert flags.server.grpc_max_concurrent_rpcs == 50
    env = parse([], {"TASKGATE_MAX_INFLIGHT": "0", "TASKGATE_HTTP_BACKLOG": "10"})
    assert (env.limits.max_inflight, env.server.http_backlog) == (0, 10)  # 0: no process-wide limit
    defaults = parse([], {})
    assert (defaults.limits.max_inflight, defaults.server.http_backlog) == (256, 4096)
    assert defaults.server.grpc_max_concurrent_rpcs == 0
    for argv, fragment in (
        (["--max-inflight", "-1"], "max_inflight must not be negative"),
        (["--http-backlog", "0"], "http_backlog must be within"),
        (["--grpc-max-concurrent-rpcs", "-2"], "grpc_max_concurrent_rpcs must not be negative"),
    ):
        with pytest.raises(ValueError, match=fragment):
            parse(argv, {})
