"""API keys on a real gateway started with a keys file (tests/gateway/access_keys.py), over both
transports: probes stay open; no key or a wrong key is UNAUTHENTICATED / 401 on every door; a key
without the right is PERMISSION_DENIED / 403 for management and tuning; the official openai client
sends its key; per-tenant limits refuse with RESOURCE_EXHAUSTED / 429 (requests in flight, across
both transports, and generation streams) and INVALID_ARGUMENT / 400 (max_new_tokens)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2_pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as v2_grpc

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread
from tests.gateway.access_keys import KEYS, WRONG_KEY, bearer, grpc_key, keyed_gateway_on
from tests.models import MINILM

PROMPT = "<|im_start|>user\nTell me a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
EMBED = {"model_id": MINILM, "inputs": "a sentence"}
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def keyed_gateway(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with keyed_gateway_on(store, tmp_path_factory.mktemp("keys")) as server:
        yield server


@pytest.fixture(scope="module")
def http(keyed_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def channel(keyed_gateway: GatewayThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(keyed_gateway.gateway.addresses.grpc) as chan:
        yield chan


def _message(body: dict[str, Any]) -> str:
    """The message of an error body: Caikit's, KServe v2's or OpenAI's."""
    if "details" in body:
        return str(body["details"])
    error = body["error"]
    return str(error["message"] if isinstance(error, dict) else error)


def _grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _embed_grpc(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> int:
    reply = nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
        nlp.EmbeddingTaskRequest(text="a sentence"), metadata=(("mm-model-id", MINILM), *metadata), timeout=60
    )
    return len(reply.result.data_npfloat32sequence.values)


def _raw(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...]) -> bytes:
    """An empty request message to ``method`` (bytes in, bytes out)."""
    return channel.unary_unary(method)(b"", metadata=metadata, timeout=60)  # type: ignore[no-any-return]


# -- probes -------------------------------------------------------------------------------------
def test_probes_and_metrics_answer_without_a_key(http: httpx.Client, channel: grpc.Channel) -> None:
    assert http.get("/health").text == "OK"
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/metrics").status_code == 200
    assert http.get(f"/v2/models/{MINILM}/ready").status_code in (200, 503)  # loaded or not: no key asked
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    v2 = v2_grpc.GRPCInferenceServiceStub(channel)
    assert v2.ServerLive(v2_pb.ServerLiveRequest(), timeout=30).live
    assert v2.ServerReady(v2_pb.ServerReadyRequest(), timeout=30).ready
    assert v2.ModelReady(v2_pb.ModelReadyRequest(name=MINILM), timeout=30) is not None


# -- authentication -----------------------------------------------------------------------------
@pytest.mark.parametrize("key", [None, WRONG_KEY], ids=["no-key", "wrong-key"])
def test_every_door_answers_401_without_a_valid_key(http: httpx.Client, key: str | None) -> None:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    expected = "an API key is required" if key is None else "the API key is not valid"
    caikit = http.post("/api/v1/task/embedding", json=EMBED, headers=headers)
    assert caikit.status_code == 401 and caikit.headers["www-authenticate"] == "Bearer"
    body = caikit.json()
    assert (
        body["code"] == 401 and expected in body["details"] and body["id"] == caikit.headers["x-request-id"]
    )
    v2 = http.post(f"/v2/models/{MINILM}/infer", json={"inputs": []}, headers=headers)
    assert v2.status_code == 401 and expected in v2.json()["error"]
    oai = http.post("/v1/embeddings", json={"model": MINILM, "input": "x"}, headers=headers)
    assert oai.status_code == 401 and oai.json()["error"]["code"] == "invalid_api_key"
    # authentication comes first: management, info, docs and unknown paths alike
    for verb, path in (("GET", "/management/models"), ("GET", "/info/models"), ("GET", "/openapi.json")):
        assert http.request(verb, path, headers=headers).status_code == 401, path
    assert http.post("/no/such/route", headers=headers).status_code == 401
    # a key in another scheme is no key
    basic = http.post(
        "/api/v1/task/embedding", json=EMBED, headers={"authorization": f"Basic {KEYS['beta']}"}
    )
    assert basic.status_code == 401


@pytest.mark.parametrize("key", [None, WRONG_KEY], ids=["no-key", "wrong-key"])
def test_every_grpc_service_answers_unauthenticated_without_a_valid_key(
    channel: grpc.Channel, key: str | None
) -> None:
    metadata: tuple[tuple[str, str], ...] = () if key is None else (("authorization", f"Bearer {key}"),)
    error = _grpc_error(lambda: _embed_grpc(channel, metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "API key" in (error.details() or "") and dict(error.trailing_metadata() or ())["x-request-id"]
    stream = nlp_grpc.NlpServiceStub(channel).ServerStreamingTextGenerationTaskPredict(
        nlp.ServerStreamingTextGenerationTaskRequest(text="hi", max_new_tokens=2),
        metadata=(("mm-model-id", SMOL), *metadata),
        timeout=60,
    )
    assert _grpc_error(lambda: list(stream)).code() == grpc.StatusCode.UNAUTHENTICATED
    for method in (
        "/inference.GRPCInferenceService/ModelInfer",
        "/taskgate.management.v1.ModelControl/ListModels",
        "/taskgate.tuning.Tuning/ListJobs",
        "/caikit.runtime.Nlp.NlpService/NoSuchMethod",
    ):
        assert (
            _grpc_error(lambda m=method: _raw(channel, m, metadata)).code() == grpc.StatusCode.UNAUTHENTICATED
        )
    reflection = channel.stream_stream(REFLECTION)(iter([b""]), metadata=metadata, timeout=60)
    assert _grpc_error(lambda: list(reflection)).code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_valid_key_serves_over_both_transports_in_either_header(
    http: httpx.Client, channel: grpc.Channel
) -> None:
    for headers in (bearer("beta"), {"authorization": f"bearer {KEYS['beta']}"}, {"x-api-key": KEYS["beta"]}):
        response = http.post("/api/v1/task/embedding", json=EMBED, headers=headers)
        assert response.status_code == 200, response.text
        assert len(response.json()["result"]["data"]["values"]) == 384
    assert _embed_grpc(channel, grpc_key("beta")) == 384
    assert _embed_grpc(channel, (("x-api-key", KEYS["beta"]),)) == 384


# -- rights -------------------------------------------------------------------------------------
HTTP_MANAGE = (
    ("GET", "/management/models", None),
    ("PUT", f"/management/models/{MINILM}/batching", {"max_batch_size": 8}),
    ("POST", f"/v2/repository/models/{MINILM}/load", None),
    ("GET", "/management/adapters", None),
)
HTTP_TUNE = (
    ("POST", "/api/v1/TextGenerationTaskPeftPromptTuningTrain", {}),
    ("GET", "/management/trainings?training_id=x", None),
    ("GET", "/v1/fine_tuning/jobs", None),
    ("GET", "/v1/files/file-0123456789abcdef01234567", None),
)
GRPC_MANAGE = (
    "/taskgate.management.v1.ModelControl/ListModels",
    "/caikit.runtime.models.ModelManagement/DeployModel",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/mmesh.ModelRuntime/runtimeStatus",
    "/taskgate.tuning.Tuning/ListAdapters",
)
GRPC_TUNE = (
    "/taskgate.tuning.Tuning/ListJobs",
    "/caikit.runtime.training.TrainingManagement/GetTrainingStatus",
    "/caikit.runtime.Nlp.NlpTrainingService/TextGenerationTaskPeftPromptTuningTrain",
)


def test_management_and_tuning_need_their_rights_over_rest(http: httpx.Client) -> None:
    for tenant, refused in (("beta", HTTP_MANAGE + HTTP_TUNE), ("acme", HTTP_MANAGE)):
        for verb, path, body in refused:
            response = http.request(verb, path, json=body, headers=bearer(tenant))
            assert response.status_code == 403, (tenant, path, response.text)
            assert f"tenant {tenant!r} lacks the" in _message(response.json()), response.text
    oai = http.get("/v1/fine_tuning/jobs", headers=bearer("beta")).json()["error"]
    assert oai["code"] == "insufficient_permissions" and "'tune' right" in oai["message"]
    # with the right, the same routes answer
    assert http.get("/management/models", headers=bearer("ops")).status_code == 200
    assert http.get("/v1/fine_tuning/jobs", headers=bearer("acme")).status_code == 200
    assert http.get("/management/trainings?training_id=nope", headers=bearer("acme")).status_code not in (
        401,
        403,
    )


def test_management_and_tuning_need_their_rights_over_grpc(channel: grpc.Channel) -> None:
    for tenant, refused in (("beta", GRPC_MANAGE + GRPC_TUNE), ("acme", GRPC_MANAGE)):
        for method in refused:
            error = _grpc_error(lambda m=method, t=tenant: _raw(channel, m, grpc_key(t)))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (tenant, method, error.details())
            assert f"tenant {tenant!r} lacks the" in (error.details() or "")
    assert _raw(channel, "/taskgate.management.v1.ModelControl/ListModels", grpc_key("ops"))
    assert _raw(channel, "/taskgate.tuning.Tuning/ListJobs", grpc_key("acme")) is not None


def test_the_official_openai_client_sends_its_key(keyed_gateway: GatewayThread) -> None:
    base = f"{keyed_gateway.gateway.addresses.http}/v1"
    with openai.OpenAI(base_url=base, api_key=KEYS["beta"], max_retries=0, timeout=120) as client:
        vector = client.embeddings.create(model=MINILM, input="a sentence").data[0].embedding
        assert len(vector) == 384
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.fine_tuning.jobs.list()
        assert "'tune' right" in str(denied.value)
    with openai.OpenAI(base_url=base, api_key=WRONG_KEY, max_retries=0, timeout=120) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.embeddings.create(model=MINILM, input="a sentence")
        assert refused.value.status_code == 401 and "not valid" in str(refused.value)
    with openai.OpenAI(base_url=base, api_key=KEYS["acme"], max_retries=0, timeout=120) as client:
        with pytest.raises(openai.BadRequestError) as capped:
            client.completions.create(model=SMOL, prompt="Hi", max_tokens=17)
        assert "tenant 'acme' may ask for (16)" in str(capped.value)


# -- per-tenant limits --------------------------------------------------------------------------
def test_max_new_tokens_is_capped_per_tenant(http: httpx.Client, channel: grpc.Channel) -> None:
    body = {"model_id": SMOL, "inputs": PROMPT, "parameters": {"max_new_tokens": 17}}
    for route in ("text-generation", "server-streaming-text-generation"):
        refused = http.post(f"/api/v1/task/{route}", json=body, headers=bearer("acme"))
        assert refused.status_code == 400, refused.text
        assert "max_new_tokens 17 is more than tenant 'acme' may ask for (16)" in refused.text
    stub = nlp_grpc.NlpServiceStub(channel)
    meta = (("mm-model-id", SMOL), *grpc_key("acme"))
    error = _grpc_error(
        lambda: stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text=PROMPT, max_new_tokens=17), metadata=meta, timeout=120
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "tenant 'acme'" in (error.details() or "")
    stream = stub.ServerStreamingTextGenerationTaskPredict(
        nlp.ServerStreamingTextGenerationTaskRequest(text=PROMPT, max_new_tokens=17),
        metadata=meta,
        timeout=120,
    )
    assert _grpc_error(lambda: list(stream)).code() == grpc.StatusCode.INVALID_ARGUMENT
    # within the tenant's cap it generates; another tenant has no such cap
    within = {**body, "parameters": {"max_new_tokens": 16, "min_new_tokens": 16}}
    out = http.post("/api/v1/task/text-generation", json=within, headers=bearer("acme"))
    assert out.status_code == 200 and out.json()["generated_tokens"] == 16
    other = {**body, "parameters": {"max_new_tokens": 17, "min_new_tokens": 17}}
    out = http.post("/api/v1/task/text-generation", json=other, headers=bearer("beta"))
    assert out.status_code == 200 and out.json()["generated_tokens"] == 17


class HeldUpload:
    """A REST request admitted and held in flight: its headers and half its body sent."""

    def __init__(self, base_url: str, tenant: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        head = (
            f"POST /api/v1/task/embedding HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {KEYS[tenant]}\r\ncontent-length: 100\r\n\r\n"
        )
        self.sock.sendall(head.encode() + b'{"model_id": ')

    def close(self) -> None:
        self.sock.close()


class HeldStream:
    """A gRPC call admitted and held in flight: a reflection stream whose requests wait."""

    def __init__(self, channel: grpc.Channel, tenant: str) -> None:
        self.release = threading.Event()
        request = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

        def requests() -> Iterator[bytes]:
            yield request
            self.release.wait(60)

        self.call = channel.stream_stream(REFLECTION)(requests(), metadata=grpc_key(tenant), timeout=120)
        assert next(self.call)  # admitted: it answered the first request

    def close(self) -> None:
        self.release.set()
        assert list(self.call) == []


def _until_admitted(http: httpx.Client, tenant: str) -> httpx.Response:
    """The held request's place is freed once the server sees it end (not instantly)."""
    give_up = time.monotonic() + 30
    while True:
        response = http.post("/api/v1/task/embedding", json=EMBED, headers=bearer(tenant))
        if response.status_code != 429 or time.monotonic() > give_up:
            return response
        time.sleep(0.05)


@pytest.mark.parametrize("held_by", ["rest", "grpc"])
def test_requests_in_flight_are_limited_per_tenant_across_transports(
    http: httpx.Client, channel: grpc.Channel, keyed_gateway: GatewayThread, held_by: str
) -> None:
    held: HeldUpload | HeldStream = (
        HeldUpload(keyed_gateway.gateway.addresses.http, "acme")
        if held_by == "rest"
        else HeldStream(channel, "acme")
    )
    try:
        give_up = time.monotonic() + 30  # the gate admits at the headers: wait until it has
        while keyed_gateway.gateway.admission.inflight("acme") == 0 and time.monotonic() < give_up:
            time.sleep(0.01)
        refused = http.post("/api/v1/task/embedding", json=EMBED, headers=bearer("acme"))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "tenant 'acme' already has 1 requests in flight" in refused.json()["details"]
        error = _grpc_error(lambda: _embed_grpc(channel, grpc_key("acme")))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(error.trailing_metadata() or ())["retry-after"] == "1"
        # the limit is the tenant's: another tenant is served meanwhile
        assert http.post("/api/v1/task/embedding", json=EMBED, headers=bearer("beta")).status_code == 200
    finally:
        held.close()
    assert _until_admitted(http, "acme").status_code == 200
    assert _embed_grpc(channel, grpc_key("acme")) == 384


def test_generation_streams_are_limited_per_tenant(http: httpx.Client, channel: grpc.Channel) -> None:
    stub = nlp_grpc.NlpServiceStub(channel)
    meta = (("mm-model-id", SMOL), *grpc_key("beta"))
    long = nlp.ServerStreamingTextGenerationTaskRequest(text=PROMPT, max_new_tokens=1000, min_new_tokens=1000)
    first = stub.ServerStreamingTextGenerationTaskPredict(long, metadata=meta, timeout=300)
    try:
        assert next(first).details.input_token_count > 0  # the stream is open
        body = {"model_id": SMOL, "inputs": PROMPT, "parameters": {"max_new_tokens": 4}}
        refused = http.post(
            "/api/v1/task/server-streaming-text-generation", json=body, headers=bearer("beta")
        )
        assert refused.status_code == 429, refused.text
        assert (
            "tenant 'beta' already has 1 generation streams open" in json.loads(refused.text[5:])["details"]
        )
        second = stub.ServerStreamingTextGenerationTaskPredict(long, metadata=meta, timeout=300)
        assert _grpc_error(lambda: list(second)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # a unary generation is no stream; another tenant streams meanwhile
        unary = http.post("/api/v1/task/text-generation", json=body, headers=bearer("beta"))
        assert unary.status_code == 200, unary.text
        other = http.post("/api/v1/task/server-streaming-text-generation", json=body, headers=bearer("gamma"))
        assert other.status_code == 200 and '"generated_text"' in other.text
    finally:
        first.cancel()
    give_up = time.monotonic() + 30
    while True:  # the cancelled stream's place is freed once the server sees the cancel
        again = http.post("/api/v1/task/server-streaming-text-generation", json=body, headers=bearer("beta"))
        if again.status_code != 429 or time.monotonic() > give_up:
            break
        time.sleep(0.05)
    assert again.status_code == 200 and '"generated_text"' in again.text
