"""Generation has limits: a server cap on max_new_tokens, prompt + output within the model's
context, and the default timeout, over both transports with the real SmolLM2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.settings import RequestLimits, Settings
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread, gateway_settings

META = (("mm-model-id", SMOL),)
PROMPT = "<|im_start|>user\nTell me a long story<|im_end|>\n<|im_start|>assistant\n"
pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("tokens", [100_000_000, 2049])
def test_max_new_tokens_over_the_server_cap_is_refused(
    http: httpx.Client, channel: grpc.Channel, tokens: int
) -> None:
    body = {"model_id": SMOL, "inputs": PROMPT, "parameters": {"max_new_tokens": tokens}}
    for route in ("text-generation", "server-streaming-text-generation"):
        response = http.post(f"/api/v1/task/{route}", json=body)
        assert response.status_code == 400, response.text
        assert "max_new_tokens" in response.text
    stub = nlp_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.RpcError) as unary:
        stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text=PROMPT, max_new_tokens=tokens), metadata=META, timeout=60
        )
    assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as streamed:
        request = nlp.ServerStreamingTextGenerationTaskRequest(text=PROMPT, max_new_tokens=tokens)
        list(stub.ServerStreamingTextGenerationTaskPredict(request, metadata=META, timeout=60))
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def short_timeout(store: Path) -> Iterator[GatewayThread]:
    base = gateway_settings(store)
    limits = RequestLimits(
        max_inputs=base.limits.max_inputs,
        max_text_chars=base.limits.max_text_chars,
        default_timeout_s=1.5,
        max_new_tokens=8000,
    )
    server = GatewayThread(
        Settings(model_store=store, server=base.server, runtime=base.runtime, limits=limits, preload=(SMOL,))
    )
    server.start()
    yield server
    server.stop()


def test_prompt_and_output_must_fit_the_context(short_timeout: GatewayThread) -> None:
    with httpx.Client(base_url=short_timeout.gateway.addresses.http, timeout=60) as client:
        body = {"model_id": SMOL, "inputs": "word " * 700, "parameters": {"max_new_tokens": 7900}}
        response = client.post("/api/v1/task/text-generation", json=body)
    assert response.status_code == 400 and "context" in response.json()["details"], response.text


def test_the_default_timeout_applies_to_generation(short_timeout: GatewayThread) -> None:
    """No deadline from the client: the server's default ends it, with the text made so far."""
    long = {"max_new_tokens": 3000, "min_new_tokens": 3000}
    with httpx.Client(base_url=short_timeout.gateway.addresses.http, timeout=120) as client:
        unary = client.post(
            "/api/v1/task/text-generation", json={"model_id": SMOL, "inputs": PROMPT, "parameters": long}
        )
        assert unary.status_code == 200, unary.text
        result = unary.json()
        assert result["finish_reason"] == "TIME_LIMIT" and 0 < result["generated_tokens"] < 3000
        body = {"model_id": SMOL, "inputs": PROMPT, "parameters": long}
        with client.stream("POST", "/api/v1/task/server-streaming-text-generation", json=body) as stream:
            events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1]["details"]["finish_reason"] == "TIME_LIMIT"
    assert events[-1]["details"]["generated_tokens"] < 3000
    with grpc.insecure_channel(short_timeout.gateway.addresses.grpc) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        request = nlp.TextGenerationTaskRequest(text=PROMPT, max_new_tokens=3000, min_new_tokens=3000)
        reply = stub.TextGenerationTaskPredict(request, metadata=META)  # no gRPC deadline either
    assert reply.generated_tokens < 3000
