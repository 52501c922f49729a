"""Observability on a real gateway, real clients: request metrics and the latency split move
under traffic over both transports, label values stay bounded, request ids and traceparent
come back, one access line per request (JSON-formattable, no payloads by default)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.ops.log_format import JsonFormatter
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.models import MINILM

Labels = dict[str, str]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
GEN_PROMPT = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"


def scrape(http: httpx.Client) -> tuple[str, Samples]:
    text = http.get("/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def scrape_when(http: httpx.Client, ready: Callable[[Samples], bool]) -> tuple[str, Samples]:
    """A scrape once ``ready`` holds: an HTTP request's record is finished just after its last
    byte is sent, so the client may be a moment ahead of the metrics (polled, never timed)."""
    for _ in range(100):
        text, samples = scrape(http)
        if ready(samples):
            return text, samples
        time.sleep(0.05)
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(model: str, task: str, protocol: str, door: str, code: str, adapter: str = "") -> Labels:
    return {
        "model": model,
        "adapter": adapter,
        "task": task,
        "protocol": protocol,
        "door": door,
        "code": code,
    }


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> nlp_grpc.NlpServiceStub:
    return nlp_grpc.NlpServiceStub(channel)


def test_requests_and_the_latency_split_move_over_both_transports(
    http: httpx.Client, stub: nlp_grpc.NlpServiceStub
) -> None:
    http.post("/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "warm up"}).raise_for_status()
    _, before = scrape(http)
    reply = http.post("/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "hello world"})
    assert reply.status_code == 200
    stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text="hello"), metadata=(("mm-model-id", MINILM),))
    v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
    assert http.post(f"/v2/models/{MINILM}/infer", json=v2).status_code == 200
    v2_ok = requests(MINILM, "embedding", "http", "kserve_v2", "OK")
    _, after = scrape_when(
        http,
        lambda now: (
            value(now, "taskgate_requests_total", **v2_ok) > value(before, "taskgate_requests_total", **v2_ok)
        ),
    )

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "taskgate_requests_total"
    assert moved(total, **requests(MINILM, "embedding", "http", "caikit", "OK")) == 1
    assert moved(total, **requests(MINILM, "embedding", "grpc", "caikit", "OK")) == 1
    assert moved(total, **requests(MINILM, "embedding", "http", "kserve_v2", "OK")) == 1
    split = {"model": MINILM, "task": "embedding"}
    for name in ("seconds", "queue_seconds", "model_seconds", "overhead_seconds"):
        assert moved(f"taskgate_request_{name}_count", **split) == 3, name
    assert moved("taskgate_request_model_seconds_sum", **split) > 0
    assert moved("taskgate_request_seconds_sum", **split) >= moved(
        "taskgate_request_model_seconds_sum", **split
    )


def test_errors_are_counted_by_code_and_an_unknown_model_is_never_a_label(
    http: httpx.Client, stub: nlp_grpc.NlpServiceStub, channel: grpc.Channel
) -> None:
    _, before = scrape(http)
    stranger = "no-such-model-7f3a"
    assert http.post("/api/v1/task/embedding", json={"model_id": stranger, "inputs": "x"}).status_code == 404
    with pytest.raises(grpc.RpcError) as refused:
        stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text="x"), metadata=(("mm-model-id", stranger),))
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert http.post("/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "  "}).status_code == 400
    assert http.post("/api/v1/task/no-such-task", json={}).status_code == 404
    with pytest.raises(grpc.RpcError) as unknown:
        method = channel.unary_unary("/no.such.Service7f3a/Method")  # bytes in, bytes out
        method(b"", metadata=(("x-request-id", "unknown-method-1"),))
    assert unknown.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert dict(unknown.value.trailing_metadata())["x-request-id"] == "unknown-method-1"
    no_route = requests("", "", "http", "caikit", "UNIMPLEMENTED")
    no_method = requests("", "", "grpc", "other", "UNIMPLEMENTED")
    total = "taskgate_requests_total"
    # each door closes its record after the answer is sent: wait until both have counted
    text, after = scrape_when(
        http,
        lambda now: all(
            value(now, total, **labels) > value(before, total, **labels) for labels in (no_route, no_method)
        ),
    )

    def moved(**labels: str) -> float:
        return value(after, "taskgate_requests_total", **labels) - value(
            before, "taskgate_requests_total", **labels
        )

    assert moved(**requests("unknown", "embedding", "http", "caikit", "NOT_FOUND")) == 1
    assert moved(**requests("unknown", "embedding", "grpc", "caikit", "NOT_FOUND")) == 1
    # refused before the model was resolved: "unknown" too (validation runs first)
    assert moved(**requests("unknown", "embedding", "http", "caikit", "INVALID_ARGUMENT")) == 1
    assert moved(**requests("", "", "http", "caikit", "UNIMPLEMENTED")) == 1  # no such route
    assert moved(**requests("", "", "grpc", "other", "UNIMPLEMENTED")) == 1  # no such gRPC method
    assert stranger not in text and "no-such-task" not in text and "Service7f3a" not in text


@pytest.mark.timeout(600)  # the first generation request may load (on a fresh clone: export) SmolLM2
def test_generation_tokens_time_to_first_token_and_gaps_move(
    http: httpx.Client, stub: nlp_grpc.NlpServiceStub
) -> None:
    meta = (("mm-model-id", SMOL),)
    # loads SmolLM2 first (a fresh store exports it: minutes on a busy machine), within its deadline
    stub.TextGenerationTaskPredict(
        nlp.TextGenerationTaskRequest(text=GEN_PROMPT, max_new_tokens=2), metadata=meta, timeout=540
    )
    _, before = scrape(http)
    unary = stub.TextGenerationTaskPredict(
        nlp.TextGenerationTaskRequest(text=GEN_PROMPT, max_new_tokens=12), metadata=meta, timeout=300
    )
    body = {"model_id": SMOL, "inputs": GEN_PROMPT, "parameters": {"max_new_tokens": 10}}
    streamed = 0
    with http.stream("POST", "/api/v1/task/server-streaming-text-generation", json=body) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                streamed = json.loads(line[6:])["details"]["generated_tokens"]
    stream = stub.ServerStreamingTextGenerationTaskPredict(
        nlp.ServerStreamingTextGenerationTaskRequest(text=GEN_PROMPT, max_new_tokens=8),
        metadata=(*meta, ("x-request-id", "grpc-stream-1")),
        timeout=300,
    )
    chunks = list(stream)
    assert dict(stream.trailing_metadata())["x-request-id"] == "grpc-stream-1"  # a stream, on success
    ttft = "taskgate_time_to_first_token_seconds_count"
    _, after = scrape_when(
        http, lambda now: value(now, ttft, model=SMOL) >= value(before, ttft, model=SMOL) + 3
    )

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    grpc_streamed = chunks[-1].details.generated_tokens
    tokens = unary.generated_tokens + streamed + grpc_streamed
    assert unary.generated_tokens > 1 and streamed > 1 and grpc_streamed > 1
    assert moved("taskgate_generated_tokens_total", model=SMOL) == tokens
    assert moved("taskgate_time_to_first_token_seconds_count", model=SMOL) == 3
    assert moved("taskgate_inter_token_seconds_count", model=SMOL) == tokens - 3  # gaps: n - 1 each
    assert moved("taskgate_inter_token_seconds_sum", model=SMOL) > 0
    split = {"model": SMOL, "task": "text-generation"}
    assert moved("taskgate_request_model_seconds_count", **split) == 3
    assert moved("taskgate_request_model_seconds_sum", **split) > 0
    total = "taskgate_requests_total"
    assert moved(total, **requests(SMOL, "text-generation", "grpc", "caikit", "OK")) == 2
    assert moved(total, **requests(SMOL, "text-generation", "http", "caikit", "OK")) == 1
    assert ("taskgate_generation_sequences_running", (("model", SMOL),)) in after
    assert value(after, "taskgate_generation_sequences_waiting", model=SMOL) == 0


def test_request_ids_come_back_given_or_made_over_both_transports(
    http: httpx.Client, stub: nlp_grpc.NlpServiceStub
) -> None:
    ok = http.post(
        "/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "hi"}, headers={"x-request-id": "req-1"}
    )
    assert ok.status_code == 200 and ok.headers.get_list("x-request-id") == ["req-1"]
    failed = http.post(
        "/api/v1/task/embedding", json={"model_id": "nope", "inputs": "hi"}, headers={"x-request-id": "req-2"}
    )
    assert failed.status_code == 404 and failed.headers.get_list("x-request-id") == ["req-2"]
    assert failed.json()["id"] == "req-2"
    made = http.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    too_long = http.get("/health", headers={"x-request-id": "a" * 129}).headers["x-request-id"]
    assert too_long != "a" * 129 and re.fullmatch(r"[0-9a-f]{32}", too_long)

    meta = (("mm-model-id", MINILM), ("x-request-id", "grpc-req-1"))
    _, call = stub.EmbeddingTaskPredict.with_call(nlp.EmbeddingTaskRequest(text="hi"), metadata=meta)
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-req-1"
    _, call = stub.EmbeddingTaskPredict.with_call(nlp.EmbeddingTaskRequest(text="hi"), metadata=meta[:1])
    assert re.fullmatch(r"[0-9a-f]{32}", dict(call.trailing_metadata())["x-request-id"])
    with pytest.raises(grpc.RpcError) as refused:
        stub.EmbeddingTaskPredict(
            nlp.EmbeddingTaskRequest(text=" "),
            metadata=(("mm-model-id", MINILM), ("x-request-id", "grpc-req-2")),
        )
    assert dict(refused.value.trailing_metadata())["x-request-id"] == "grpc-req-2"


def test_a_valid_traceparent_is_echoed_and_an_invalid_one_dropped(
    http: httpx.Client, stub: nlp_grpc.NlpServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"model_id": MINILM, "inputs": "hi"}
    with caplog.at_level(logging.INFO, logger="taskgate.access"):
        echoed = http.post("/api/v1/task/embedding", json=body, headers={"traceparent": TRACEPARENT})
        line = _access_fields(caplog, echoed.headers["x-request-id"])
    assert echoed.headers["traceparent"] == TRACEPARENT
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and line["traceparent"] == TRACEPARENT
    zero_trace = "00-" + "0" * 32 + "-00f067aa0ba902b7-01"
    for bad in (zero_trace, TRACEPARENT.upper(), TRACEPARENT + "-extra", "hello"):
        reply = http.post("/api/v1/task/embedding", json=body, headers={"traceparent": bad})
        assert reply.status_code == 200 and "traceparent" not in reply.headers

    meta = (("mm-model-id", MINILM), ("traceparent", TRACEPARENT))
    _, call = stub.EmbeddingTaskPredict.with_call(nlp.EmbeddingTaskRequest(text="hi"), metadata=meta)
    assert dict(call.trailing_metadata())["traceparent"] == TRACEPARENT
    with pytest.raises(grpc.RpcError) as refused:
        stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text=" "), metadata=meta)
    assert dict(refused.value.trailing_metadata())["traceparent"] == TRACEPARENT
    _, call = stub.EmbeddingTaskPredict.with_call(
        nlp.EmbeddingTaskRequest(text="hi"), metadata=(("mm-model-id", MINILM), ("traceparent", zero_trace))
    )
    assert "traceparent" not in dict(call.trailing_metadata())


def test_one_access_line_per_request_as_json_without_payloads(
    http: httpx.Client, stub: nlp_grpc.NlpServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "the quick secret prompt"
    with caplog.at_level(logging.INFO, logger="taskgate.access"):
        http.post(
            "/api/v1/task/embedding",
            json={"model_id": MINILM, "inputs": secret},
            headers={"x-request-id": "log-http-1"},
        ).raise_for_status()
        stub.EmbeddingTaskPredict(
            nlp.EmbeddingTaskRequest(text=secret),
            metadata=(("mm-model-id", MINILM), ("x-request-id", "log-grpc-1")),
        )
        rest = _access_fields(caplog, "log-http-1")
    assert rest["protocol"] == "http" and rest["door"] == "caikit" and rest["code"] == "OK"
    assert rest["status"] == 200 and rest["method"] == "POST /api/v1/task/embedding"
    assert rest["task"] == "embedding" and rest["model"] == MINILM
    assert rest["total_ms"] >= rest["model_ms"] > 0 and rest["queue_ms"] >= 0
    rpc = _access_fields(caplog, "log-grpc-1")
    assert (
        rpc["protocol"] == "grpc" and rpc["method"] == "/caikit.runtime.Nlp.NlpService/EmbeddingTaskPredict"
    )
    assert rpc["code"] == "OK" and rpc["model"] == MINILM and "status" not in rpc
    for record in caplog.records:
        assert secret not in JsonFormatter().format(record) and secret not in record.getMessage()


def _access_fields(caplog: pytest.LogCaptureFixture, request_id: str) -> dict[str, object]:
    """The JSON form of the one access line of ``request_id`` (parsed back)."""
    for _ in range(100):  # an HTTP request's line is logged just after its last byte went out
        lines = [
            json.loads(JsonFormatter().format(r))
            for r in caplog.records
            if r.name == "taskgate.access" and getattr(r, "access", {}).get("request_id") == request_id
        ]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1, lines
    assert lines[0]["logger"] == "taskgate.access" and lines[0]["level"] == "INFO"
    return lines[0]
