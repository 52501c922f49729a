"""Forced unloads under traffic (undeploy, a folder leaving the store, ModelMesh's unloadModel):
requests in flight finish or end UNAVAILABLE with a reason; a running batch is never cut into
INTERNAL errors. Real gateways on loopback, real clients."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.settings import RegistrySettings, ServerSettings, Settings
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import modelmesh_model_runtime_pb2 as mmesh
from gateway.wire import modelmesh_model_runtime_pb2_grpc as mmesh_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.models import SOURCES, _write_manifest, build_tiny_encoder

TINY = SOURCES / "tiny-32-6"
SMOL_COPY = "smol-copy"
PROMPT = "<|im_start|>user\nTell me a story<|im_end|>\n<|im_start|>assistant\n"
pytestmark = pytest.mark.timeout(600)


def _gateway(store: Path, tmp: Path, drain_timeout_s: float) -> GatewayThread:
    """A gateway on its own store: a tiny encoder and a hard-linked copy of SmolLM2's folder
    (its cached export comes along, so nothing is exported again)."""
    own = tmp / "store"
    own.mkdir()
    _write_manifest(own, "tiny", ["embedding"], build_tiny_encoder(TINY, hidden=32, seed=6), {})
    shutil.copytree(store / DEFAULT_GENERATION_MODEL, own / SMOL_COPY, copy_function=os.link)
    manifest = own / SMOL_COPY / "manifest.json"
    manifest.unlink()  # a hard link to the session store's manifest: write a new file
    data = json.loads((store / DEFAULT_GENERATION_MODEL / "manifest.json").read_text())
    manifest.write_text(json.dumps({**data, "id": SMOL_COPY}))
    base = gateway_settings(store)
    settings = Settings(
        model_store=own,
        server=ServerSettings(host="127.0.0.1", grpc_port=0, http_port=0, modelmesh_models_dir=str(SOURCES)),
        runtime=base.runtime,
        limits=base.limits,
        registry=RegistrySettings(drain_timeout_s=drain_timeout_s),
    )
    server = GatewayThread(settings)
    server.start()
    return server


@pytest.fixture
def patient(store: Path, tmp_path: Path) -> Iterator[GatewayThread]:
    server = _gateway(store, tmp_path, drain_timeout_s=30)
    yield server
    server.stop()


@pytest.fixture
def impatient(store: Path, tmp_path: Path) -> Iterator[GatewayThread]:
    server = _gateway(store, tmp_path, drain_timeout_s=0.3)
    yield server
    server.stop()


def _traffic(channel: grpc.Channel, model_id: str, stop: threading.Event, codes: Counter[str]) -> None:
    stub = nlp_grpc.NlpServiceStub(channel)
    while not stop.is_set():
        try:
            stub.EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="traffic " * 20),
                metadata=(("mm-model-id", model_id),),
                timeout=60,
            )
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1


def _remove_under_traffic(server: GatewayThread, model_id: str, remove: Callable[[], None]) -> Counter[str]:
    codes: Counter[str] = Counter()
    stop = threading.Event()
    with grpc.insecure_channel(server.gateway.addresses.grpc) as channel:
        threads = [threading.Thread(target=_traffic, args=(channel, model_id, stop, codes)) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while codes["OK"] < 50:  # the model is loaded and busy
            assert time.monotonic() < deadline and not set(codes) - {"OK"}, codes
            time.sleep(0.01)
        remove()
        seen = sum(codes.values())
        while sum(codes.values()) < seen + 30:  # requests keep coming after the removal
            time.sleep(0.01)
        stop.set()
        for thread in threads:
            thread.join()
    return codes


def test_undeploy_under_traffic_drains(patient: GatewayThread) -> None:
    def undeploy() -> None:
        with httpx.Client(base_url=patient.gateway.addresses.http, timeout=60) as client:
            assert client.delete("/management/models", params={"model_id": "tiny"}).status_code == 200

    codes = _remove_under_traffic(patient, "tiny", undeploy)
    assert set(codes) <= {"OK", "NOT_FOUND", "UNAVAILABLE"}, codes
    assert codes["NOT_FOUND"] > 0  # after the undeploy, the model is gone


def test_a_folder_leaving_the_store_under_traffic_drains(patient: GatewayThread) -> None:
    folder = patient.gateway.registry.store.root / "tiny"
    codes = _remove_under_traffic(patient, "tiny", lambda: shutil.rmtree(folder))
    assert set(codes) <= {"OK", "NOT_FOUND", "UNAVAILABLE"}, codes


def test_modelmesh_unload_under_traffic_drains(patient: GatewayThread) -> None:
    with grpc.insecure_channel(patient.gateway.addresses.grpc) as channel:
        spi = mmesh_grpc.ModelRuntimeStub(channel)
        spi.loadModel(
            mmesh.LoadModelRequest(modelId="mm-tiny", modelType="onnx-encoder", modelPath=str(TINY))
        )

        def unload() -> None:
            spi.unloadModel(mmesh.UnloadModelRequest(modelId="mm-tiny"), timeout=60)

        codes = _remove_under_traffic(patient, "mm-tiny", unload)
    assert set(codes) <= {"OK", "NOT_FOUND", "UNAVAILABLE"}, codes


def _stream_while_undeploying(server: GatewayThread) -> tuple[list[dict], int]:
    """Stream 40 tokens over REST; undeploy the model after the first chunk."""
    body = {
        "model_id": SMOL_COPY,
        "inputs": PROMPT,
        "parameters": {"max_new_tokens": 40, "min_new_tokens": 40},
    }
    events: list[dict] = []
    undeployed: list[int] = []
    with httpx.Client(base_url=server.gateway.addresses.http, timeout=300) as client:
        undeployer = threading.Thread(
            target=lambda: undeployed.append(
                client.delete("/management/models", params={"model_id": SMOL_COPY}).status_code
            )
        )
        with client.stream("POST", "/api/v1/task/server-streaming-text-generation", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == 1:
                        undeployer.start()
        undeployer.join()
    return events, undeployed[0]


def test_a_stream_in_flight_finishes_before_its_model_is_undeployed(patient: GatewayThread) -> None:
    events, undeployed = _stream_while_undeploying(patient)
    assert undeployed == 200
    assert events[-1]["details"]["finish_reason"] == "MAX_TOKENS", events[-1]
    assert events[-1]["details"]["generated_tokens"] == 40


def test_a_stream_past_the_drain_timeout_ends_unavailable(impatient: GatewayThread) -> None:
    events, undeployed = _stream_while_undeploying(impatient)
    assert undeployed == 200
    assert events[-1].get("code") == 503, events[-1]  # an SSE error event, not a cut connection
    assert "unload" in events[-1]["details"] or "shutting down" in events[-1]["details"]
