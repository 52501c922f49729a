"""`taskgate kserve` hosting the MiniLM folder of the test store as a KServe predictor: a real
process on loopback ports, called with kserve's own REST and gRPC clients. Its vectors equal the
local OnnxEncoder's for the same texts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from runtimes.base import ThreadSettings, TokenizedBatch
from runtimes.onnx_encoder import OnnxEncoder
from tests.models import MINILM, minilm_source
from tests.served import ROOT, HostedKServe

NAME = "minilm"
TEXTS = ["A man is eating food.", "The new movie is awesome.", "ok"]


@pytest.fixture(scope="module")
def hosted(store: Path) -> Iterator[HostedKServe]:
    server = HostedKServe(NAME, store / MINILM)
    yield server
    assert server.stop() == 0, server.said  # SIGTERM stops it cleanly


@pytest.fixture(scope="module")
def local(store: Path) -> OnnxEncoder:
    encoder = OnnxEncoder(
        source=minilm_source(), work_dir=store / MINILM, options={}, threads=ThreadSettings()
    )
    encoder.load()
    return encoder


def _tensors(batch: TokenizedBatch) -> dict[str, np.ndarray]:
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "token_type_ids": batch.token_type_ids,
    }


def _request(tensors: dict[str, np.ndarray], binary: bool, **extra: object) -> InferRequest:
    inputs = []
    for name, array in tensors.items():
        tensor = InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "BYTES")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return InferRequest(NAME, inputs, **extra)  # type: ignore[arg-type]


def _texts(texts: list[str]) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in texts], dtype=np.object_)}


def test_metadata_describes_the_tensors(hosted: HostedKServe) -> None:
    metadata = httpx.get(f"{hosted.http}/v2/models/{NAME}", timeout=30).json()
    assert metadata["inputs"] == [
        {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "token_type_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    with grpc.insecure_channel(hosted.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME), timeout=30)
        assert stub.ModelReady(pb.ModelReadyRequest(name=NAME), timeout=30).ready
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.outputs] == [("embedding", "FP32", [-1, 384])]
    assert [t.name for t in reply.inputs] == ["input_ids", "attention_mask", "token_type_ids", "text"]


def test_servers_listen_on_loopback_only(hosted: HostedKServe) -> None:
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(hosted.process.pid).connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    ports = {int(hosted.http.rsplit(":", 1)[1]), int(hosted.grpc.rsplit(":", 1)[1])}
    assert {port for _, port in listening} == ports, listening
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_rest_client_tensors_equal_the_local_encoder(
    hosted: HostedKServe, local: OnnxEncoder, binary: bool
) -> None:
    batch = local.tokenize(TEXTS, None)
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as client:
        params = {"binary_data_output": True} if binary else None
        reply = await client.infer(hosted.http, _request(_tensors(batch), binary, parameters=params), NAME)
    vectors = reply.outputs[0].as_numpy()
    assert reply.outputs[0].name == "embedding" and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, local.run_batch(batch), atol=1e-5)


async def test_rest_client_text_equals_the_local_encoder(hosted: HostedKServe, local: OnnxEncoder) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as client:
        reply = await client.infer(hosted.http, _request(_texts(TEXTS), binary=False), NAME)
    np.testing.assert_allclose(
        reply.outputs[0].as_numpy(), local.run_batch(local.tokenize(TEXTS, None)), atol=1e-5
    )


@pytest.mark.parametrize("inputs", ["tensors", "text"])
async def test_grpc_client_equals_the_local_encoder(
    hosted: HostedKServe, local: OnnxEncoder, inputs: str
) -> None:
    batch = local.tokenize(TEXTS, None)
    tensors = _tensors(batch) if inputs == "tensors" else _texts(TEXTS)
    async with InferenceGRPCClient(hosted.grpc, timeout=60) as client:
        reply = await client.infer(_request(tensors, binary=True))
    np.testing.assert_allclose(reply.outputs[0].as_numpy(), local.run_batch(batch), atol=1e-5)


def test_attention_mask_and_token_types_may_be_left_out(hosted: HostedKServe, local: OnnxEncoder) -> None:
    batch = local.tokenize(["one text"], None)
    body = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, batch.input_ids.shape[1]],
                        "data": batch.input_ids.ravel().tolist()}]}  # fmt: skip
    reply = httpx.post(f"{hosted.http}/v2/models/{NAME}/infer", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    vector = np.array(reply.json()["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(vector, local.run_batch(batch)[0], atol=1e-5)


def _tensor(name: str, datatype: str, shape: list[int], data: list[object]) -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


BAD_REQUESTS = {
    "float ids": ([_tensor("input_ids", "FP32", [1, 2], [101.0, 102.0])], "must be INT64"),
    "one-dimensional ids": ([_tensor("input_ids", "INT64", [2], [101, 102])], "shape [rows, tokens]"),
    "unknown input": ([_tensor("pixels", "INT64", [1, 1], [1])], "unknown input 'pixels'"),
    "text and ids": (
        [_tensor("text", "BYTES", [1], ["hi"]), _tensor("input_ids", "INT64", [1, 2], [101, 102])],
        "not both",
    ),
    "mask shape": (
        [_tensor("input_ids", "INT64", [1, 2], [101, 102]), _tensor("attention_mask", "INT64", [1, 1], [1])],
        "attention_mask has shape [1, 1]",
    ),
    "empty mask row": (
        [_tensor("input_ids", "INT64", [1, 2], [1, 2]), _tensor("attention_mask", "INT64", [1, 2], [0, 0])],
        "no token",
    ),
    "negative ids": ([_tensor("input_ids", "INT64", [1, 2], [101, -5])], "negative"),
    "too long": ([_tensor("input_ids", "INT64", [1, 300], [101] * 300)], "1 to 256"),
    "over-long text": ([_tensor("text", "BYTES", [1], ["word " * 400])], "limit of 256 tokens"),
    "empty text": ([_tensor("text", "BYTES", [2], ["fine", " "])], "text[1] is empty"),
    "data not fitting the shape": ([_tensor("input_ids", "INT64", [2, 2], [1, 2, 3])], "cannot be read"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_tensors_are_400_with_a_clear_message(hosted: HostedKServe, case: str) -> None:
    inputs, message = BAD_REQUESTS[case]
    reply = httpx.post(f"{hosted.http}/v2/models/{NAME}/infer", json={"inputs": inputs}, timeout=60)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"] and "Traceback" not in reply.text, reply.text


async def test_bad_tensors_over_grpc_are_invalid_argument(hosted: HostedKServe) -> None:
    ids = InferInput("input_ids", [1, 2], "FP32")
    ids.set_data_from_numpy(np.array([[101.0, 102.0]], dtype=np.float32), binary_data=True)
    async with InferenceGRPCClient(hosted.grpc, timeout=60, retries=0) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.infer(InferRequest(NAME, [ids]))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be INT64" in str(failure.value.details())
    async with httpx.AsyncClient(timeout=60) as client:  # the model still answers afterwards
        body = {"inputs": [_tensor("text", "BYTES", [1], ["still here"])]}
        reply = await client.post(f"{hosted.http}/v2/models/{NAME}/infer", json=body)
    assert reply.status_code == 200


def test_a_folder_without_a_manifest_fails_with_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runtimes.kserve", "--model_dir", str(tmp_path), "--http_port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "manifest.json: cannot read manifest" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_flags_are_checked_before_anything_loads() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "kserve", "--http_port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--http_port must be within 1..65535" in result.stderr
