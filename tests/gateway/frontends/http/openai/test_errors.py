"""Errors of the OpenAI door: OpenAI's body, the one table's status, and the official client's
exceptions. Every error kind a /v1 request can meet is raised for real."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from gateway.errors import ErrorKind
from gateway.frontends.wire_codes import WIRE
from tests.conftest import MAX_REQUEST_BYTES, TEST_LIMITS, GatewayThread
from tests.models import CLASSIFIER, MINILM, MISSING_SOURCE, SHORT_POSITIONS

SMOL = "SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "Say hi"}]

# kind -> (verb, path, body, headers): one /v1 request that meets it
CASES: dict[ErrorKind, tuple[str, str, Any, dict[str, str]]] = {
    ErrorKind.INVALID_INPUT: ("POST", "/v1/embeddings", {"model": MINILM, "input": ""}, {}),
    ErrorKind.PAYLOAD_TOO_LARGE: (
        "POST",
        "/v1/embeddings",
        {"model": MINILM, "input": ["x"] * (TEST_LIMITS.max_inputs + 1)},
        {},
    ),
    ErrorKind.MODEL_NOT_FOUND: ("POST", "/v1/embeddings", {"model": "no-such-model", "input": "x"}, {}),
    ErrorKind.ROUTE_NOT_FOUND: ("POST", "/v1/no-such-route", {}, {}),
    ErrorKind.METHOD_NOT_ALLOWED: ("GET", "/v1/embeddings", None, {}),
    ErrorKind.TASK_NOT_SUPPORTED: ("POST", "/v1/embeddings", {"model": CLASSIFIER, "input": "x"}, {}),
    ErrorKind.DEADLINE_EXCEEDED: (
        "POST",
        "/v1/embeddings",
        {"model": MINILM, "input": "x"},
        {"x-request-timeout-ms": "0"},
    ),
    ErrorKind.UNAVAILABLE: ("POST", "/v1/embeddings", {"model": MISSING_SOURCE, "input": "x"}, {}),
    ErrorKind.INTERNAL: ("POST", "/v1/embeddings", {"model": SHORT_POSITIONS, "input": "word " * 40}, {}),
}
# OVERLOADED needs concurrency (below); CANCELLED has no reply; /v1 deploys nothing (ALREADY_EXISTS);
# UNAUTHENTICATED and PERMISSION_DENIED need API keys (tests/gateway/test_access.py, with the client)
NOT_BY_ONE_V1_REQUEST = {
    ErrorKind.OVERLOADED,
    ErrorKind.CANCELLED,
    ErrorKind.ALREADY_EXISTS,
    ErrorKind.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED,
}
TYPES = {
    ErrorKind.DEADLINE_EXCEEDED: "timeout_error",
    ErrorKind.UNAVAILABLE: "service_unavailable_error",
    ErrorKind.INTERNAL: "server_error",
}
CODES = {
    ErrorKind.MODEL_NOT_FOUND: "model_not_found",
    ErrorKind.TASK_NOT_SUPPORTED: "model_not_supported",
    ErrorKind.DEADLINE_EXCEEDED: "timeout",
    ErrorKind.PAYLOAD_TOO_LARGE: "request_too_large",
}


@pytest.fixture(scope="module")
def client(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway.gateway.addresses.http}/v1", api_key="dummy", max_retries=0, timeout=120
    ) as c:
        yield c


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in body["error"]["message"] and 'File "' not in body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_cases_cover_every_kind() -> None:
    assert set(CASES) | NOT_BY_ONE_V1_REQUEST == set(ErrorKind)


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.value)
def test_every_kind_in_openais_body_with_the_tables_status(http: httpx.Client, kind: ErrorKind) -> None:
    verb, path, body, headers = CASES[kind]
    response = http.request(verb, path, json=body, headers=headers)
    assert response.status_code == WIRE[kind].http, response.text
    error = _error(response)
    assert error["type"] == TYPES.get(kind, "invalid_request_error") and error["message"]
    if kind in CODES:
        assert error["code"] == CODES[kind]
    if kind is ErrorKind.INTERNAL:
        assert response.headers["x-request-id"] in error["message"]


def test_overload_is_429_in_openais_body(http: httpx.Client) -> None:
    """A partial batch is held up to 1 s for more rows and the queue holds two requests' rows:
    of twelve requests at once, the first two wait for the batch and later ones are shed."""
    texts = ["a sentence of several words for the encoder to chew on"] * TEST_LIMITS.max_inputs
    url = f"/management/models/{MINILM}/batching"
    # the change applies to the live batcher (it is not persisted): make sure the model has one
    assert http.post("/v1/embeddings", json={"model": MINILM, "input": "warm up"}).status_code == 200
    before = http.get(url).json()
    held = {"max_batch_size": 2 * len(texts), "max_queue_rows": 2 * len(texts), "max_queue_delay_ms": 1000}
    assert http.put(url, json=held).status_code == 200
    body = {"model": MINILM, "input": texts, "encoding_format": "base64"}
    try:
        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda _: http.post("/v1/embeddings", json=body), range(12)))
    finally:
        assert http.put(url, json=before).status_code == 200
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 429 in codes and set(codes) == {200, 429}, codes
    shed = next(r for r in responses if r.status_code == 429)
    assert shed.headers["retry-after"]
    error = _error(shed)
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


# -- through the official client ----------------------------------------------------------------
def test_unknown_models_are_not_found(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.completions.create(model="no-such-model", prompt="x", max_tokens=1),
        lambda: client.chat.completions.create(model="no-such-model", messages=HI, max_tokens=1),
        lambda: client.embeddings.create(model="no-such-model", input="x"),
        lambda: client.chat.completions.create(model=f"{SMOL}@2", messages=HI, max_tokens=1),
        lambda: client.embeddings.create(model="../etc/passwd", input="x"),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.code == "model_not_found" and err.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError, match="tuned adapter"):
        client.embeddings.create(model=f"{MINILM}@1", input="x")


def test_a_model_that_does_not_serve_the_task_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=MINILM, messages=HI, max_tokens=1)
    assert chat.value.code == "model_not_supported" and "text-generation" in chat.value.message
    with pytest.raises(openai.BadRequestError) as embed:
        client.embeddings.create(model=SMOL, input="x")
    assert embed.value.code == "model_not_supported"


UNSUPPORTED_CHAT: list[tuple[dict[str, Any], str]] = [
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1.0}, "frequency_penalty"),
    ({"logit_bias": {"42": 5}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"n": 17}, "n"),
    ({"temperature": 0.01}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["ok", ""]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role"),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]}]},
        "messages[0].tool_calls",
    ),
    ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0].name"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0]",
    ),
    ({"messages": []}, "messages"),
]


@pytest.mark.parametrize(("extra", "param"), UNSUPPORTED_CHAT, ids=[p for _, p in UNSUPPORTED_CHAT])
def test_chat_parameters_the_engine_cannot_honour_are_400_naming_them(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    request = {"model": SMOL, "messages": HI, "max_tokens": 1, **extra}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**request)
    assert err.value.param == param and err.value.type == "invalid_request_error", err.value.body


UNSUPPORTED_COMPLETION: list[tuple[dict[str, Any], str]] = [
    ({"logprobs": 1}, "logprobs"),
    ({"suffix": "end"}, "suffix"),
    ({"best_of": 3}, "best_of"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": ["a", "b"], "n": 9}, "n"),
    ({"seed": 2**64}, "seed"),
]


@pytest.mark.parametrize(
    ("extra", "param"), UNSUPPORTED_COMPLETION, ids=[p for _, p in UNSUPPORTED_COMPLETION]
)
def test_completion_parameters_the_engine_cannot_honour_are_400_naming_them(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    request = {"model": SMOL, "prompt": "x", "max_tokens": 1, **extra}
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**request)
    assert err.value.param == param, err.value.body


def test_embedding_inputs_and_dimensions_it_cannot_honour(client: openai.OpenAI) -> None:
    for request, param in (
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.embeddings.create(model=MINILM, **request)
        assert err.value.param == param, err.value.body


def test_unknown_and_unimplemented_fields_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model=SMOL, messages=HI, max_tokens=1, extra_body={"best_guess": 1})
    assert unknown.value.code == "unrecognized_request_argument" and unknown.value.param == "best_guess"
    with pytest.raises(openai.BadRequestError) as known:
        client.chat.completions.create(model=SMOL, messages=HI, max_tokens=1, reasoning_effort="low")
    assert known.value.code == "unsupported_parameter" and known.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": SMOL, "prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ({"model": SMOL, "prompt": "x", "max_tokens": 2.0}, "max_tokens"),
        ({"model": SMOL, "prompt": "x", "stop": 5}, "stop"),
        ({"model": SMOL, "prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x"}, "model"),
        ({"model": SMOL}, "prompt"),
        (
            {"model": SMOL, "prompt": "x", "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
    ],
)
def test_wrong_types_are_400_naming_the_field(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400
    error = _error(response)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[-1] in error["message"]


def test_bad_json_non_objects_and_oversized_bodies(http: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    for raw in (b"{not json", b"", b"[1, 2]", b'"text"'):
        response = http.post("/v1/chat/completions", content=raw, headers=headers)
        assert response.status_code == 400, raw
        assert _error(response)["type"] == "invalid_request_error"
    huge = http.post("/v1/embeddings", json={"model": MINILM, "input": "x" * (MAX_REQUEST_BYTES + 1)})
    assert huge.status_code == 413 and _error(huge)["code"] == "request_too_large"


def test_bad_deadline_header_and_a_passed_deadline(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="x-request-timeout-ms"):
        client.embeddings.create(model=MINILM, input="x", extra_headers={"x-request-timeout-ms": "soon"})
    with pytest.raises(openai.InternalServerError) as late:
        client.chat.completions.create(
            model=SMOL, messages=HI, max_tokens=4, extra_headers={"x-request-timeout-ms": "0"}
        )
    assert late.value.status_code == 504 and late.value.code == "timeout"


def test_a_stream_that_fails_before_output_answers_a_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=HI, max_tokens=2, stream=True)
    assert err.value.code == "model_not_found"


def test_the_server_still_serves_after_every_error(client: openai.OpenAI) -> None:
    assert len(client.embeddings.create(model=MINILM, input="still here").data) == 1
