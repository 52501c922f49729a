"""KServe's Open Inference Protocol v2 over REST, end to end on a real socket with the real models
and real clients: kserve's InferenceRESTClient, tritonclient's HTTP client, and raw httpx for
what no client would send. Results must equal the Caikit routes' for the same model."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from gateway import __version__
from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from tests.conftest import GatewayThread
from tests.gateway.test_batching import metric
from tests.models import CLASSIFIER, CLASSIFIER_LABELS, MINILM

TEXTS = ["the cat sat on the mat", "markets fell sharply today", "a wonderful sunny day"]
PROMPT = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"
HEADER = "Inference-Header-Content-Length"


def caikit_vectors(http: httpx.Client, texts: list[str]) -> np.ndarray:
    body = {"model_id": MINILM, "inputs": texts}
    response = http.post("/api/v1/task/embedding-tasks", json=body)
    assert response.status_code == 200, response.text
    return np.array([v["data"]["values"] for v in response.json()["results"]["vectors"]])


def v2_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """A v2 error: the status, KServe's ``{"error": message}`` body, the message naming the fault."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return str(body["error"])


def text_input(texts: list[str], name: str = "text", binary: bool = False) -> InferInput:
    tensor = InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary)
    return tensor


@pytest.fixture
async def ahttp(gateway: GatewayThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.gateway.addresses.http, timeout=300) as client:
        yield client


@pytest.fixture
async def client() -> AsyncIterator[InferenceRESTClient]:
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=300, retries=0))
    yield rest
    await rest.close()


def test_server_metadata_and_health(http: httpx.Client) -> None:
    assert http.get("/v2").json() == {
        "name": "taskgate",
        "version": __version__,
        "extensions": ["model_repository_extension", "binary_tensor_data"],
    }
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}


def test_openapi_describes_the_v2_routes(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    body = paths["/v2/models/{model_name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["schema"]["required"]) == {"inputs"} and "$ref" not in json.dumps(body)
    assert {
        "/v2",
        "/v2/health/live",
        "/v2/models/{model_name}/ready",
        "/v2/repository/models/{model_name}/load",
    } <= set(paths)


async def test_kserve_client_health(client: InferenceRESTClient, gateway: GatewayThread) -> None:
    base = gateway.gateway.addresses.http
    assert await client.is_server_live(base) and await client.is_server_ready(base)


def test_models_and_their_metadata(http: httpx.Client) -> None:
    assert {MINILM, CLASSIFIER, SMOL} <= set(http.get("/v2/models").json()["models"])
    embed = http.get(f"/v2/models/{MINILM}").json()
    assert embed == {
        "name": MINILM,
        "versions": ["1"],
        "platform": "taskgate",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, -1]}],
    }
    assert http.get(f"/v2/models/{MINILM}/versions/1").json() == embed
    classifier = http.get(f"/v2/models/{CLASSIFIER}").json()
    assert [(o["name"], o["datatype"]) for o in classifier["outputs"]] == [
        ("label", "BYTES"),
        ("score", "FP32"),
    ]
    generation = http.get(f"/v2/models/{SMOL}").json()
    assert generation["inputs"] == [{"name": "text_input", "datatype": "BYTES", "shape": [1]}]
    assert generation["outputs"] == [{"name": "text_output", "datatype": "BYTES", "shape": [1]}]
    v2_error(http.get("/v2/models/no-such-model"), 404, "no-such-model")
    v2_error(http.get(f"/v2/models/{MINILM}/versions/7"), 404, "version '7'")


async def test_embeddings_equal_the_caikit_route(
    client: InferenceRESTClient, gateway: GatewayThread, http: httpx.Client
) -> None:
    expected = caikit_vectors(http, TEXTS)
    base = gateway.gateway.addresses.http
    plain = await client.infer(base, InferRequest(MINILM, [text_input(TEXTS)]), model_name=MINILM)
    out = plain.outputs[0]
    assert (out.name, out.datatype, out.shape) == ("embedding", "FP32", [3, 384])
    assert np.allclose(out.as_numpy(), expected, atol=1e-5)
    assert plain.parameters["input_token_count"] > len(TEXTS)
    # binary both ways: raw BYTES in, raw FP32 out (Inference-Header-Content-Length)
    request = InferRequest(MINILM, [text_input(TEXTS, binary=True)], parameters={"binary_data_output": True})
    seen: dict[str, str] = {}
    binary = await client.infer(base, request, model_name=MINILM, response_headers=seen)
    assert seen["content-type"] == "application/octet-stream" and int(seen[HEADER.lower()]) > 0
    assert np.allclose(binary.outputs[0].as_numpy(), expected, atol=1e-5)


async def test_kserve_client_sees_the_error_table(
    client: InferenceRESTClient, gateway: GatewayThread
) -> None:
    base = gateway.gateway.addresses.http
    floats = InferInput("text", [2], "FP32", data=[1.0, 2.0])
    for request, model, status, fragment in (
        (InferRequest("no-such-model", [text_input(TEXTS)]), "no-such-model", 404, "no-such-model"),
        (InferRequest(MINILM, [floats]), MINILM, 400, "input 'text' must have datatype BYTES"),
        (InferRequest(MINILM, [text_input(TEXTS, name="txt")]), MINILM, 400, "'txt'"),
    ):
        with pytest.raises(httpx.HTTPStatusError) as err:
            await client.infer(base, request, model_name=model)
        v2_error(err.value.response, status, fragment)


async def test_classification(
    client: InferenceRESTClient, gateway: GatewayThread, ahttp: httpx.AsyncClient
) -> None:
    request = InferRequest(CLASSIFIER, [text_input(TEXTS)], request_outputs=[RequestedOutput("label")])
    labels = await client.infer(gateway.gateway.addresses.http, request, model_name=CLASSIFIER)
    assert [o.name for o in labels.outputs] == ["label"]  # only what was asked for
    both = await client.infer(
        gateway.gateway.addresses.http, InferRequest(CLASSIFIER, [text_input(TEXTS)]), model_name=CLASSIFIER
    )
    by_name = {o.name: o for o in both.outputs}
    for index, text in enumerate(TEXTS):
        body = {"model_id": CLASSIFIER, "inputs": text}
        top = (await ahttp.post("/api/v1/task/text-classification", json=body)).json()["results"][0]
        assert by_name["label"].data[index] == top["label"] == labels.outputs[0].data[index]
        assert by_name["label"].data[index] in CLASSIFIER_LABELS
        assert by_name["score"].data[index] == pytest.approx(top["score"], abs=1e-5)


@pytest.mark.timeout(600)  # the first generation request may load (and on a fresh clone export) SmolLM2
async def test_generation(
    client: InferenceRESTClient, gateway: GatewayThread, ahttp: httpx.AsyncClient
) -> None:
    tensor = InferInput("text_input", [1], "BYTES", data=[PROMPT])
    request = InferRequest(SMOL, [tensor], parameters={"max_new_tokens": 8})
    result = await client.infer(gateway.gateway.addresses.http, request, model_name=SMOL)
    caikit_body = {"model_id": SMOL, "inputs": PROMPT, "parameters": {"max_new_tokens": 8}}
    caikit = (await ahttp.post("/api/v1/task/text-generation", json=caikit_body)).json()
    assert result.outputs[0].name == "text_output" and result.outputs[0].data == [caikit["generated_text"]]
    assert result.parameters["finish_reason"] == caikit["finish_reason"]
    assert result.parameters["generated_tokens"] == caikit["generated_tokens"]
    # a sampling parameter without decoding_method samples; the seed makes it repeatable
    sampled = {"max_tokens": 6, "temperature": 0.9, "seed": 7, "stop_sequences": '["\\n"]'}
    body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Once upon"]}]}
    first, second = [
        (await ahttp.post(f"/v2/models/{SMOL}/infer", json={**body, "parameters": sampled})).json()
        for _ in range(2)
    ]
    assert first["outputs"] == second["outputs"] and first["parameters"]["seed"] == "7"
    v2_error(
        await ahttp.post(f"/v2/models/{SMOL}/infer", json={**body, "parameters": {"top_q": 1}}),
        400,
        "top_q",
    )


def test_tritonclient_http_json_and_binary(gateway: GatewayThread, http: httpx.Client) -> None:
    expected = caikit_vectors(http, TEXTS)
    url = gateway.gateway.addresses.http.removeprefix("http://")
    triton = triton_http.InferenceServerClient(url=url, network_timeout=300)
    try:
        assert triton.is_server_live() and triton.is_server_ready()
        assert triton.get_model_metadata(MINILM)["outputs"][0]["name"] == "embedding"
        for binary in (False, True):
            tensor = triton_http.InferInput("text", [len(TEXTS)], "BYTES")
            tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=binary)
            wanted = triton_http.InferRequestedOutput("embedding", binary_data=binary)
            result = triton.infer(MINILM, [tensor], outputs=[wanted])
            assert np.allclose(result.as_numpy("embedding"), expected, atol=1e-5), binary
        with pytest.raises(InferenceServerException) as err:
            triton.infer("no-such-model", [tensor])
        assert err.value.status() == "404" and "no-such-model" in err.value.message()
    finally:
        triton.close()


def test_repository_load_unload_and_readiness(gateway: GatewayThread, http: httpx.Client) -> None:
    url = gateway.gateway.addresses.http.removeprefix("http://")
    triton = triton_http.InferenceServerClient(url=url, network_timeout=300)
    try:
        triton.load_model(CLASSIFIER)
        assert triton.is_model_ready(CLASSIFIER)
        assert http.get(f"/v2/models/{CLASSIFIER}/ready").json() == {"name": CLASSIFIER, "ready": True}
        unloaded = http.post(f"/v2/repository/models/{CLASSIFIER}/unload")
        assert unloaded.json() == {"name": CLASSIFIER, "unload": True}
        assert not triton.is_model_ready(CLASSIFIER)
        v2_error(http.get(f"/v2/models/{CLASSIFIER}/versions/1/ready"), 503, "not loaded")
        assert CLASSIFIER in http.get("/v2/models").json()["models"]  # unloaded, not undeployed
        loaded = http.post(f"/v2/repository/models/{CLASSIFIER}/load")
        assert loaded.json() == {"name": CLASSIFIER, "load": True}
        assert triton.is_model_ready(CLASSIFIER)
        v2_error(http.post("/v2/repository/models/no-such-model/load"), 404, "no-such-model")
        v2_error(http.get("/v2/models/no-such-model/ready"), 404, "no-such-model")
    finally:
        triton.close()


async def test_concurrent_v2_requests_share_batches(
    gateway: GatewayThread, http: httpx.Client, ahttp: httpx.AsyncClient
) -> None:
    texts = [f"v2 row {i} about {'cats' if i % 2 else 'the weather'}" for i in range(32)]
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["warm up"]}]}
    assert (await ahttp.post(f"/v2/models/{MINILM}/infer", json=body)).status_code == 200
    batches_before = metric(http, "taskgate_batch_size_count", model=MINILM)
    rows_before = metric(http, "taskgate_batch_size_sum", model=MINILM)
    one = body["inputs"][0]
    replies = await asyncio.gather(
        *(ahttp.post(f"/v2/models/{MINILM}/infer", json={"inputs": [{**one, "data": [t]}]}) for t in texts)
    )
    assert [r.status_code for r in replies] == [200] * len(texts)
    batches = metric(http, "taskgate_batch_size_count", model=MINILM) - batches_before
    rows = metric(http, "taskgate_batch_size_sum", model=MINILM) - rows_before
    assert rows == len(texts)
    assert batches < rows, f"{len(texts)} concurrent v2 requests ran in {batches} batches: none shared"
    vectors = np.array([r.json()["outputs"][0]["data"] for r in replies])
    assert np.allclose(vectors, caikit_vectors(http, texts), atol=1e-5)


# -- bad input: the one table's status, KServe's error body, the tensor named; never a 5xx -------


def _text(data: list, shape: list | None = None, datatype: str = "BYTES", name: str = "text") -> dict:
    return {
        "name": name,
        "shape": [len(data)] if shape is None else shape,
        "datatype": datatype,
        "data": data,
    }


BAD_JSON = {
    "fp32-for-bytes": (
        {"inputs": [_text([1.0, 2.0], datatype="FP32")]},
        400,
        "input 'text' must have datatype BYTES",
    ),
    "unknown-input": ({"inputs": [_text(["a"], name="txt")]}, 400, "input 'txt' is not an input of model"),
    "missing-input": ({"inputs": []}, 400, "input 'text' is missing"),
    "twice": ({"inputs": [_text(["a"]), _text(["b"])]}, 400, "given twice"),
    "count-mismatch": (
        {"inputs": [_text(["a", "b", "c"], shape=[2])]},
        400,
        "holds 3 elements; its shape [2]",
    ),
    "negative-shape": ({"inputs": [_text(["a"], shape=[-1])]}, 400, "non-negative"),
    "huge-shape": ({"inputs": [_text(["a"], shape=[2**40])]}, 400, "needs 1099511627776"),
    "rank": ({"inputs": [_text(["a"], shape=[1, 1])]}, 400, "takes [-1]"),
    "not-a-string": ({"inputs": [_text([7])]}, 400, "input 'text' element 0 must be a string"),
    "empty-text": ({"inputs": [_text([" "])]}, 400, "'text' is empty"),
    "too-many-rows": ({"inputs": [_text(["x"] * 65)]}, 413, "at most 64"),
    "unknown-output": (
        {"inputs": [_text(["a"])], "outputs": [{"name": "vector"}]},
        400,
        "no output 'vector'",
    ),
    "unknown-parameter": ({"inputs": [_text(["a"])], "parameters": {"foo": 1}}, 400, "no parameter 'foo'"),
    "mistyped-parameter": (
        {"inputs": [_text(["a"])], "parameters": {"truncate_input_tokens": "many"}},
        400,
        "truncate_input_tokens must be an integer",
    ),
    "no-inputs-field": ({"id": "x"}, 400, "inputs"),
    "data-not-a-list": (
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": "a"}]},
        400,
        "data",
    ),
}


@pytest.mark.parametrize("case", list(BAD_JSON), ids=list(BAD_JSON))
def test_bad_json_requests(http: httpx.Client, case: str) -> None:
    body, status, fragment = BAD_JSON[case]
    v2_error(http.post(f"/v2/models/{MINILM}/infer", json=body), status, fragment)


def test_bad_requests_of_other_kinds(http: httpx.Client) -> None:
    ok = {"inputs": [_text(["a"])]}
    v2_error(http.post("/v2/models/no-such-model/infer", json=ok), 404, "no-such-model")
    v2_error(http.post(f"/v2/models/{MINILM}/versions/2/infer", json=ok), 404, "version '2'")
    v2_error(http.post(f"/v2/models/{MINILM}/infer", content=b"{not json"), 400, "invalid inference request")
    gzip = {"content-encoding": "gzip"}
    v2_error(http.post(f"/v2/models/{MINILM}/infer", json=ok, headers=gzip), 400, "Content-Encoding")
    expired = {"x-request-timeout-ms": "0"}
    v2_error(http.post(f"/v2/models/{MINILM}/infer", json=ok, headers=expired), 504, "deadline")
    v2_error(http.get(f"/v2/models/{MINILM}/infer"), 405, "GET")
    v2_error(http.get("/v2/no-such-route"), 404, "no route")
    prompt = {"inputs": [_text(["a", "b"], name="text_input")]}
    v2_error(http.post(f"/v2/models/{SMOL}/infer", json=prompt), 400, "takes [1]")
    both = {"inputs": [_text(["a"], name="text_input")], "parameters": {"max_tokens": 2, "max_new_tokens": 2}}
    v2_error(http.post(f"/v2/models/{SMOL}/infer", json=both), 400, "not both")
    surrogate = b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}'
    v2_error(http.post(f"/v2/models/{MINILM}/infer", content=surrogate), 400, "")


def elements(*items: bytes) -> bytes:
    """BYTES tensor data in binary form: each element's 4-byte little-endian length, then it."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def binary_body(shape: list[int], data: bytes, datatype: str = "BYTES", size: int | None = None) -> bytes:
    params = {"binary_data_size": len(data) if size is None else size}
    meta = {"name": "text", "shape": shape, "datatype": datatype, "parameters": params}
    return json.dumps({"inputs": [meta]}).encode() + data


def _header_length(body: bytes) -> str:
    return str(body.index(b"}]}") + 3)


BAD_BINARY = {
    "length-not-a-number": (binary_body([1], elements(b"a")), "abc", "must be a whole number"),
    "length-past-the-body": (binary_body([1], elements(b"a")), "99999", "the body has"),
    "length-zero": (binary_body([1], elements(b"a")), "0", "the body has"),
    "length-inside-the-json": (binary_body([1], elements(b"a")), "5", "not a JSON object"),
    "truncated-body": (binary_body([1], elements(b"abc"), size=100), None, "runs past the end"),
    "trailing-bytes": (binary_body([1], elements(b"a")) + b"extra", None, "5 bytes follow"),
    "prefix-past-the-end": (binary_body([1], struct.pack("<I", 1000) + b"abc"), None, "declares 1000 bytes"),
    "truncated-prefix": (binary_body([1], b"\x01\x00"), None, "truncated length prefix"),
    "fewer-elements": (binary_body([2], elements(b"a")), None, "holds 1 BYTES elements; its shape needs 2"),
    "more-elements": (binary_body([1], elements(b"a", b"b")), None, "more than the 1"),
    "bad-utf8": (binary_body([1], elements(b"\xff\xfe")), None, "not valid UTF-8"),
    "fp32-for-bytes": (
        binary_body([2], np.ones(2, np.float32).tobytes(), "FP32"),
        None,
        "must have datatype BYTES",
    ),
    "fp32-short": (binary_body([2], b"\x00" * 7, "FP32"), None, "do not fill its shape"),
    "negative-shape": (binary_body([-1], elements(b"a")), None, "non-negative"),
    "huge-shape": (
        binary_body([2**62, 2**62], np.ones(2, np.float32).tobytes(), "FP32"),
        None,
        "fill its shape",
    ),
    "unknown-datatype": (binary_body([1], elements(b"a"), "STRING"), None, "unknown datatype"),
    "lone-surrogate": (
        b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}',
        None,
        "surrogate",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BINARY), ids=list(BAD_BINARY))
def test_hostile_binary_requests(http: httpx.Client, case: str) -> None:
    body, length, fragment = BAD_BINARY[case]
    headers = {HEADER: length if length is not None else _header_length(body)}
    v2_error(http.post(f"/v2/models/{MINILM}/infer", content=body, headers=headers), 400, fragment)


def test_still_serving_after_hostile_requests(http: httpx.Client) -> None:
    body = binary_body([2], elements("héllo".encode(), b"world"))
    reply = http.post(f"/v2/models/{MINILM}/infer", content=body, headers={HEADER: _header_length(body)})
    assert reply.status_code == 200, reply.text
    assert np.allclose(
        reply.json()["outputs"][0]["data"], caikit_vectors(http, ["héllo", "world"]).ravel(), atol=1e-5
    )
