"""KServe's Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService), end to end on a
real socket with the real models: kserve's InferenceGRPCClient, kserve's generated stub for the
calls the client lacks and for raw messages, and tritonclient.grpc in a process of its own (it
cannot share one with kserve). Results must equal the Caikit routes' for the same model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.infer_type import RequestedOutput, serialize_byte_tensor

from gateway import __version__
from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from tests.conftest import GatewayThread
from tests.gateway.frontends.test_kserve_v2 import TEXTS, caikit_vectors
from tests.models import CLASSIFIER, CLASSIFIER_LABELS, MINILM, ROOT

SERVICE = "inference.GRPCInferenceService"
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
async def client(gateway: GatewayThread) -> AsyncIterator[InferenceGRPCClient]:
    v2 = InferenceGRPCClient(gateway.gateway.addresses.grpc, timeout=300, retries=2)  # the least it takes
    yield v2
    await v2.close()


def raw_bytes(*texts: str) -> bytes:
    return bytes(serialize_byte_tensor(np.array(texts, dtype=np.object_)).item())


def text_tensor(
    count: int, name: str = "text", datatype: str = "BYTES"
) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=[count])


def refused(
    stub_call: grpc.UnaryUnaryMultiCallable, request: object, code: grpc.StatusCode, *words: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub_call(request, timeout=60)
    assert err.value.code() == code, err.value.details()
    for word in words:
        assert word in (err.value.details() or ""), err.value.details()


def test_server_and_model_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert (server.name, server.version) == ("taskgate", __version__)
    assert list(server.extensions) == ["model_repository_extension", "binary_tensor_data"]
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=MINILM, version="1"))
    assert (meta.name, list(meta.versions), meta.platform) == (MINILM, ["1"], "taskgate")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("embedding", "FP32", [-1, -1])]
    generation = stub.ModelMetadata(pb.ModelMetadataRequest(name=SMOL))
    assert [t.name for t in generation.inputs] == ["text_input"]
    not_found = grpc.StatusCode.NOT_FOUND
    refused(stub.ModelMetadata, pb.ModelMetadataRequest(name="no-such-model"), not_found, "no-such-model")
    refused(stub.ModelMetadata, pb.ModelMetadataRequest(name=MINILM, version="7"), not_found, "version '7'")


def test_reflection_and_health_name_the_service(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    listed = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=30)))
    assert SERVICE in {s.name for s in listed.list_services_response.service}
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_embeddings_contents_and_raw_equal_the_caikit_route(
    client: InferenceGRPCClient, http: httpx.Client
) -> None:
    expected = caikit_vectors(http, TEXTS)
    for binary in (False, True):  # contents.bytes_contents, then raw_input_contents
        tensor = InferInput("text", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=binary)
        result = await client.infer(InferRequest(MINILM, [tensor]))
        out = result.outputs[0]
        assert (out.name, out.datatype, out.shape) == ("embedding", "FP32", [3, 384])
        assert np.allclose(out.as_numpy(), expected, atol=1e-5), binary


async def test_kserve_client_sees_the_error_table(client: InferenceGRPCClient) -> None:
    floats = InferInput("text", [2], "FP32", data=[1.0, 2.0])
    for request, code, fragment in (
        (InferRequest("no-such-model", [floats]), grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (
            InferRequest(MINILM, [floats]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'text' must have datatype BYTES",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.infer(request)
        assert err.value.code() == code and fragment in (err.value.details() or "")


def test_outputs_are_raw_exactly_when_inputs_were(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    contents = text_tensor(2)
    contents.contents.bytes_contents.extend([b"one", b"two"])
    plain = stub.ModelInfer(
        pb.ModelInferRequest(model_name=MINILM, inputs=[contents], id="req-1"), timeout=60
    )
    assert plain.id == "req-1" and plain.model_version == "1"
    assert len(plain.outputs[0].contents.fp32_contents) == 2 * 384 and not plain.raw_output_contents
    raw = stub.ModelInfer(
        pb.ModelInferRequest(
            model_name=MINILM, inputs=[text_tensor(2)], raw_input_contents=[raw_bytes("one", "two")]
        ),
        timeout=60,
    )
    vectors = np.frombuffer(raw.raw_output_contents[0], dtype=np.float32).reshape(2, 384)
    assert np.allclose(vectors.ravel(), plain.outputs[0].contents.fp32_contents, atol=1e-6)


def caikit_top_labels(http: httpx.Client, texts: list[str]) -> list[dict]:
    body = [{"model_id": CLASSIFIER, "inputs": text} for text in texts]
    return [http.post("/api/v1/task/text-classification", json=b).json()["results"][0] for b in body]


async def test_classification(client: InferenceGRPCClient, http: httpx.Client) -> None:
    expected = caikit_top_labels(http, TEXTS)
    tensor = InferInput("text", [len(TEXTS)], "BYTES", data=TEXTS)
    request = InferRequest(
        CLASSIFIER, [tensor], request_outputs=[RequestedOutput("label"), RequestedOutput("score")]
    )
    result = await client.infer(request)
    labels, scores = (o.data for o in result.outputs)
    for label, score, best in zip(labels, scores, expected, strict=True):
        assert label.decode() == best["label"] and best["label"] in CLASSIFIER_LABELS
        assert score == pytest.approx(best["score"], abs=1e-5)


@pytest.mark.timeout(600)  # the first generation request may load (and on a fresh clone export) SmolLM2
def test_generation_with_parameters(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    prompt = text_tensor(1, "text_input")
    prompt.contents.bytes_contents.append(PROMPT.encode())
    params = {  # InferParameter has no float: a float rides as a string
        "max_new_tokens": pb.InferParameter(int64_param=6),
        "temperature": pb.InferParameter(string_param="0.9"),
        "seed": pb.InferParameter(int64_param=11),
    }
    request = pb.ModelInferRequest(model_name=SMOL, inputs=[prompt], parameters=params)
    first, second = (stub.ModelInfer(request, timeout=300) for _ in range(2))
    assert first.outputs[0].name == "text_output" and first.outputs[0].contents.bytes_contents[0]
    assert first.outputs[0].contents.bytes_contents == second.outputs[0].contents.bytes_contents
    assert first.parameters["seed"].string_param == "11"
    assert 0 < first.parameters["generated_tokens"].int64_param <= 6
    bad = pb.ModelInferRequest(
        model_name=SMOL, inputs=[prompt], parameters={"temperature": pb.InferParameter(string_param="hot")}
    )
    refused(stub.ModelInfer, bad, grpc.StatusCode.INVALID_ARGUMENT, "temperature must be a number")


async def test_repository_load_unload_and_readiness(
    stub: pb_grpc.GRPCInferenceServiceStub, client: InferenceGRPCClient
) -> None:
    loaded = stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=CLASSIFIER), timeout=300)
    assert (loaded.model_name, loaded.isLoaded) == (CLASSIFIER, True)
    assert await client.is_model_ready(CLASSIFIER)
    unloaded = stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=CLASSIFIER), timeout=60)
    assert (unloaded.model_name, unloaded.isUnloaded) == (CLASSIFIER, True)
    assert not stub.ModelReady(pb.ModelReadyRequest(name=CLASSIFIER)).ready
    assert await client.is_server_live() and await client.is_server_ready()
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=CLASSIFIER), timeout=300)
    assert stub.ModelReady(pb.ModelReadyRequest(name=CLASSIFIER, version="1")).ready
    refused(
        stub.ModelReady,
        pb.ModelReadyRequest(name="no-such-model"),
        grpc.StatusCode.NOT_FOUND,
        "no-such-model",
    )
    refused(
        stub.RepositoryModelUnload,
        pb.RepositoryModelUnloadRequest(model_name="no-such-model"),
        grpc.StatusCode.NOT_FOUND,
    )


def _infer(inputs: list, raw: list[bytes] | None = None, **fields: object) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name=MINILM, inputs=inputs, raw_input_contents=raw or [], **fields)


def _with_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, *texts: bytes
) -> pb.ModelInferRequest.InferInputTensor:
    tensor.contents.bytes_contents.extend(texts)
    return tensor


BAD = {
    "unknown-model": (
        pb.ModelInferRequest(model_name="no-such-model", inputs=[_with_contents(text_tensor(1), b"a")]),
        grpc.StatusCode.NOT_FOUND,
        "no-such-model",
    ),
    "other-version": (
        _infer([_with_contents(text_tensor(1), b"a")], model_version="3"),
        grpc.StatusCode.NOT_FOUND,
        "version '3'",
    ),
    "fp32-for-bytes": (
        _infer([text_tensor(2, datatype="FP32")], [np.ones(2, np.float32).tobytes()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text' must have datatype BYTES",
    ),
    "unknown-datatype": (
        _infer([text_tensor(1, datatype="STRING")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text' has an unknown datatype 'STRING'",
    ),
    "wrong-name": (
        _infer([_with_contents(text_tensor(1, "txt"), b"a")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'txt'",
    ),
    "count-mismatch": (
        _infer([_with_contents(text_tensor(3), b"a")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "holds 1 elements; its shape [3]",
    ),
    "negative-shape": (
        _infer([text_tensor(-1)], [raw_bytes("a")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "non-negative",
    ),
    "prefix-past-the-end": (
        _infer([text_tensor(1)], [b"\xe8\x03\x00\x00abc"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "declares 1000 bytes but only 3 remain",
    ),
    "bad-utf8": (
        _infer([text_tensor(1)], [raw_bytes("a")[:4] + b"\xff"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UTF-8",
    ),
    "raw-count": (
        _infer([text_tensor(1), text_tensor(1, "other")], [raw_bytes("a")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents",
    ),
    "contents-and-raw": (
        _infer([_with_contents(text_tensor(1), b"a")], [raw_bytes("a")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "both contents and raw_input_contents",
    ),
    "unknown-output": (
        _infer(
            [_with_contents(text_tensor(1), b"a")],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="x")],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no output 'x'",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_requests(stub: pb_grpc.GRPCInferenceServiceStub, case: str) -> None:
    request, code, fragment = BAD[case]
    refused(stub.ModelInfer, request, code, fragment)


def test_deadline_and_malformed_bytes(channel: grpc.Channel, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = _infer([_with_contents(text_tensor(1), b"a")])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=0.0001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{SERVICE}/ModelInfer")(b"\x0a\x05\xff\xfe\xfd\xfc\xfb", timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.ModelInfer(request, timeout=60).outputs[0].name == "embedding"  # still serving


def test_tritonclient_grpc_in_its_own_process(gateway: GatewayThread, http: httpx.Client) -> None:
    script = ROOT / "tests" / "clients" / "triton_grpc_check.py"
    run = subprocess.run(
        [sys.executable, str(script), gateway.gateway.addresses.grpc, MINILM, CLASSIFIER],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["server"]["name"] == "taskgate"
    assert report["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": ["-1", "-1"]}]
    assert np.allclose(report["embedding"], caikit_vectors(http, report["texts"]), atol=1e-5)
    assert set(report["labels"]) <= set(CLASSIFIER_LABELS) and len(report["labels"]) == 2
    assert report["errors"]["unknown-model"]["status"] == "StatusCode.NOT_FOUND"
    wrong = report["errors"]["wrong-input"]
    assert wrong["status"] == "StatusCode.INVALID_ARGUMENT" and "'txt'" in wrong["message"]
