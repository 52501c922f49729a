"""Model management over real sockets: Caikit deploy / undeploy (gRPC and REST), our
ModelControl, and the ModelMesh runtime SPI on a unix socket, with a real small model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.settings import ServerSettings, Settings
from gateway.wire import caikit_data_model_common_file_pb2 as file_pb2
from gateway.wire import caikit_data_model_runtime_models_pb2 as models_pb2
from gateway.wire import caikit_runtime_models_pb2_grpc as models_grpc
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import modelmesh_model_runtime_pb2 as mmesh
from gateway.wire import modelmesh_model_runtime_pb2_grpc as mmesh_grpc
from gateway.wire import taskgate_management_pb2 as control
from gateway.wire import taskgate_management_pb2_grpc as control_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.models import CLASSIFIER, MINILM, SOURCES, build_tiny_encoder

TINY_SOURCE = SOURCES / "tiny-32-3"


def _files(source: Path) -> list[tuple[str, bytes]]:
    build_tiny_encoder(source, hidden=32, seed=3)
    return [(p.name, p.read_bytes()) for p in sorted(source.iterdir()) if p.is_file()]


def _embed(channel: grpc.Channel, model_id: str) -> int:
    stub = nlp_grpc.NlpServiceStub(channel)
    reply = stub.EmbeddingTaskPredict(
        nlp.EmbeddingTaskRequest(text="deployed"), metadata=(("mm-model-id", model_id),), timeout=120
    )
    return len(reply.result.data_npfloat32sequence.values)


def test_caikit_deploy_and_undeploy_over_grpc(channel: grpc.Channel, store: Path) -> None:
    stub = models_grpc.ModelManagementStub(channel)
    files = [file_pb2.File(filename=name, data=data) for name, data in _files(TINY_SOURCE)]
    info = stub.DeployModel(models_pb2.DeployModelRequest(model_id="deployed-grpc", model_files=files))
    assert info.name == "deployed-grpc" and info.module_id == "onnx-encoder"
    assert (store / "deployed-grpc" / "manifest.json").is_file()
    assert _embed(channel, "deployed-grpc") == 32
    undeployed = stub.UndeployModel(models_pb2.UndeployModelRequest(model_id="deployed-grpc"))
    assert undeployed.model_id == "deployed-grpc"
    assert not (store / "deployed-grpc").exists()
    with pytest.raises(grpc.RpcError) as gone:
        _embed(channel, "deployed-grpc")
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as again:
        stub.UndeployModel(models_pb2.UndeployModelRequest(model_id="deployed-grpc"))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


def test_caikit_deploy_and_undeploy_over_rest(http: httpx.Client, channel: grpc.Channel, store: Path) -> None:
    files = [{"filename": n, "data": base64.b64encode(d).decode()} for n, d in _files(TINY_SOURCE)]
    deployed = http.post("/management/models", json={"model_id": "deployed-rest", "model_files": files})
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["name"] == "deployed-rest"
    assert _embed(channel, "deployed-rest") == 32
    assert (
        http.post("/management/models", json={"model_id": "deployed-rest", "model_files": files}).status_code
        == 409
    )
    removed = http.delete("/management/models", params={"model_id": "deployed-rest"})
    assert removed.status_code == 200 and removed.json() == {"model_id": "deployed-rest"}
    assert not (store / "deployed-rest").exists()
    assert http.delete("/management/models", params={"model_id": "deployed-rest"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"model_id": "x1", "model_files": [{"filename": "../escape", "data": "e30="}]},
            "invalid model file",
        ),
        ({"model_id": "x2", "model_files": [{"filename": "/abs", "data": "e30="}]}, "invalid model file"),
        ({"model_id": "x3", "model_files": [{"filename": "config.json", "data": "@@@"}]}, "base64"),
        ({"model_id": "x4", "model_files": []}, "at least one file"),
        ({"model_id": "../x", "model_files": [{"filename": "a", "data": "e30="}]}, "invalid model id"),
        ({"model_id": "x5", "model_files": [{"filename": "notes.txt", "data": "e30="}]}, "config.json"),
    ],
)
def test_bad_deploys_are_refused_and_leave_nothing(
    http: httpx.Client, store: Path, body: dict, fragment: str
) -> None:
    response = http.post("/management/models", json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["details"]
    assert not (store / body["model_id"]).exists()
    assert not list(store.glob(".deploy-*"))


def test_model_control_over_grpc_and_rest(channel: grpc.Channel, http: httpx.Client) -> None:
    stub = control_grpc.ModelControlStub(channel)
    listed = {m.model_id: m for m in stub.ListModels(control.ListModelsRequest()).models}
    assert {MINILM, CLASSIFIER} <= set(listed)
    loaded = stub.LoadModel(control.ModelRequest(model_id=CLASSIFIER))
    assert loaded.state == control.LOADED and loaded.size_bytes > 0
    pinned = stub.PinModel(control.PinRequest(model_id=CLASSIFIER, pinned=True))
    assert pinned.pinned
    assert http.get(f"/management/models/{CLASSIFIER}").json()["pinned"] is True
    assert http.put(f"/management/models/{CLASSIFIER}/pin", json={"pinned": False}).json()["pinned"] is False
    unloaded = stub.UnloadModel(control.ModelRequest(model_id=CLASSIFIER))
    assert unloaded.state == control.NOT_LOADED
    assert http.post(f"/management/models/{CLASSIFIER}/load").json()["state"] == "LOADED"
    assert http.post(f"/management/models/{CLASSIFIER}/unload").json()["state"] == "NOT_LOADED"
    batching = stub.GetBatching(control.ModelRequest(model_id=MINILM))
    updated = stub.UpdateBatching(control.UpdateBatchingRequest(model_id=MINILM, max_queue_delay_ms=1.5))
    assert updated.max_queue_delay_ms == 1.5 and updated.max_batch_size == batching.max_batch_size
    stub.UpdateBatching(
        control.UpdateBatchingRequest(model_id=MINILM, max_queue_delay_ms=batching.max_queue_delay_ms)
    )
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetModel(control.ModelRequest(model_id="no-such-model"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert http.get("/management/models/no-such-model").status_code == 404


def test_metrics_report_the_multiplexer(http: httpx.Client, channel: grpc.Channel) -> None:
    _embed(channel, MINILM)
    text = http.get("/metrics").text
    for name in (
        "taskgate_model_cache_total",
        "taskgate_model_load_seconds_count",
        "taskgate_model_load_wait_seconds_count",
        "taskgate_models_loaded ",
        "taskgate_models_loaded_bytes",
    ):
        assert name in text, name
    assert f'taskgate_model_cache_total{{model="{MINILM}",result="hit"}}' in text


@pytest.fixture
def modelmesh_gateway(store: Path, tmp_path: Path) -> Iterator[tuple[GatewayThread, str]]:
    base = gateway_settings(store)
    socket = f"unix:{tmp_path}/mmesh.sock"
    settings = Settings(
        model_store=tmp_path / "store",
        server=ServerSettings(
            host="127.0.0.1",
            grpc_port=0,
            http_port=0,
            modelmesh_endpoint=socket,
            modelmesh_models_dir=str(SOURCES),
        ),
        runtime=base.runtime,
        limits=base.limits,
    )
    server = GatewayThread(settings)
    server.start()
    yield server, socket
    server.stop()


def test_modelmesh_runtime_spi_on_a_unix_socket(modelmesh_gateway: tuple[GatewayThread, str]) -> None:
    server, socket = modelmesh_gateway
    build_tiny_encoder(TINY_SOURCE, hidden=32, seed=3)
    with grpc.insecure_channel(socket) as channel:
        spi = mmesh_grpc.ModelRuntimeStub(channel)
        status = spi.runtimeStatus(mmesh.RuntimeStatusRequest())
        assert status.status == mmesh.RuntimeStatusResponse.READY
        assert status.capacityInBytes > 0 and status.maxLoadingConcurrency >= 1 and status.allowAnyMethod
        predicted = spi.predictModelSize(
            mmesh.PredictModelSizeRequest(modelId="mm-a", modelPath=str(TINY_SOURCE))
        )
        assert predicted.sizeInBytes > 0
        loaded = spi.loadModel(
            mmesh.LoadModelRequest(
                modelId="mm-a__isvc-1", modelType="onnx-encoder", modelPath=str(TINY_SOURCE)
            ),
            timeout=300,
        )
        # loadModel answers once the model is loaded, with the size the registry holds for it
        status = httpx.get(f"{server.gateway.addresses.http}/management/models/mm-a__isvc-1", timeout=30)
        assert status.json()["state"] == "LOADED"
        assert loaded.sizeInBytes > 0 and status.json()["size_bytes"] == loaded.sizeInBytes
        assert spi.modelSize(mmesh.ModelSizeRequest(modelId="mm-a__isvc-1")).sizeInBytes == loaded.sizeInBytes
        assert _embed(channel, "mm-a__isvc-1") == 32  # inference on the same endpoint, by mm-model-id
        spi.unloadModel(mmesh.UnloadModelRequest(modelId="mm-a__isvc-1"))
        with pytest.raises(grpc.RpcError) as gone:
            _embed(channel, "mm-a__isvc-1")
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        for outside in ("/no/such/path", "/", "/etc", "../..", f"{SOURCES}/../..", str(SOURCES / "nope")):
            with pytest.raises(grpc.RpcError) as bad:
                spi.loadModel(mmesh.LoadModelRequest(modelId="mm-b", modelPath=outside))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, outside
            with pytest.raises(grpc.RpcError) as bad:
                spi.predictModelSize(mmesh.PredictModelSizeRequest(modelId="mm-b", modelPath=outside))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, outside
