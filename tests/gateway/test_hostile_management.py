"""Paths and ids a client sends, tried as a hostile client would, over both transports: every
path is confined to the store before a file is read, a refused deploy leaves nothing behind,
and unknown ids never grow the server's state or its metrics."""

from __future__ import annotations

import base64
import json
import threading
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
from tests.conftest import GatewayThread, gateway_settings
from tests.models import SOURCES, build_tiny_encoder, minilm_source

TINY = SOURCES / "tiny-32-5"
TRANSPORTS = ("grpc", "rest")


def _tiny_files() -> list[tuple[str, bytes]]:
    build_tiny_encoder(TINY, hidden=32, seed=5)
    return [(p.name, p.read_bytes()) for p in sorted(TINY.iterdir()) if p.is_file()]


class Deployer:
    """Caikit's DeployModel over one transport; answers (HTTP-like status, details)."""

    def __init__(self, transport: str, http: httpx.Client, channel: grpc.Channel) -> None:
        self.transport = transport
        self.http = http
        self.stub = models_grpc.ModelManagementStub(channel)

    def deploy(self, model_id: str, files: list[tuple[str, bytes]]) -> tuple[int, str]:
        if self.transport == "rest":
            body = {
                "model_id": model_id,
                "model_files": [{"filename": n, "data": base64.b64encode(d).decode()} for n, d in files],
            }
            response = self.http.post("/management/models", json=body)
            return response.status_code, response.text
        request = models_pb2.DeployModelRequest(
            model_id=model_id, model_files=[file_pb2.File(filename=n, data=d) for n, d in files]
        )
        try:
            self.stub.DeployModel(request, timeout=120)
        except grpc.RpcError as exc:
            codes = {
                grpc.StatusCode.INVALID_ARGUMENT: 400,
                grpc.StatusCode.ALREADY_EXISTS: 409,
                grpc.StatusCode.NOT_FOUND: 404,
            }
            return codes.get(exc.code(), 500), exc.details() or ""
        return 200, ""

    def undeploy(self, model_id: str) -> None:
        self.http.delete("/management/models", params={"model_id": model_id})


@pytest.fixture(params=TRANSPORTS)
def deployer(request: pytest.FixtureRequest, http: httpx.Client, channel: grpc.Channel) -> Deployer:
    return Deployer(request.param, http, channel)


def _store_is_clean(store: Path, model_id: str) -> None:
    leftovers = [p.name for p in store.iterdir() if p.name.startswith((".deploy-", ".undeploy-"))]
    assert not leftovers, leftovers
    if "\x00" not in model_id and "/" not in model_id and model_id not in ("", ".", ".."):
        assert not (store / model_id).exists()


def _manifest(source: str) -> tuple[str, bytes]:
    data = {"tasks": ["embedding"], "runtime": "onnx-encoder", "source": source}
    return ("manifest.json", json.dumps(data).encode())


OUTSIDE_SOURCES = ["/", "file:///etc", "../..", "..", "../../..", "files/../../..", "file:///", "/etc/passwd"]


@pytest.mark.parametrize("source", OUTSIDE_SOURCES)
def test_a_deployed_manifest_cannot_point_outside_its_folder(
    deployer: Deployer, http: httpx.Client, store: Path, source: str
) -> None:
    model_id = f"escape-{deployer.transport}"
    status, details = deployer.deploy(model_id, [_manifest(source), *_tiny_files()])
    assert status == 400, details
    assert "outside" in details or "source" in details
    _store_is_clean(store, model_id)
    assert http.get("/info/models").status_code == 200


BAD_FILE_NAMES = ["../x", "/abs", "a\x00b", ".", "./x", "a/./b", "a//b", "x\n", "dir/", "a\\b", "", "..."]


@pytest.mark.parametrize("filename", BAD_FILE_NAMES[:-1])
def test_unsafe_file_names_are_refused(deployer: Deployer, store: Path, filename: str) -> None:
    model_id = f"names-{deployer.transport}"
    status, details = deployer.deploy(model_id, [(filename, b"{}"), *_tiny_files()])
    assert status == 400, details
    assert "file name" in details
    _store_is_clean(store, model_id)


@pytest.mark.parametrize(
    "names",
    [["config.json", "config.json"], ["a", "a/b"], ["sub/x", "sub"]],
    ids=["twice", "file-and-folder", "folder-and-file"],
)
def test_colliding_file_names_are_refused(deployer: Deployer, store: Path, names: list[str]) -> None:
    model_id = f"collide-{deployer.transport}"
    status, details = deployer.deploy(model_id, [(n, b"{}") for n in names] + _tiny_files()[:1])
    assert status == 400, details
    _store_is_clean(store, model_id)


BAD_IDS = ["abc\n", "a\x00b", ".", "..", "x" * 200, "../x", "a/b", " lead", "é"]


@pytest.mark.parametrize("model_id", BAD_IDS)
def test_unsafe_model_ids_are_refused(deployer: Deployer, store: Path, model_id: str) -> None:
    status, details = deployer.deploy(model_id, _tiny_files())
    assert status == 400, details
    assert "model id" in details
    _store_is_clean(store, model_id)


@pytest.mark.parametrize("model_id", BAD_IDS)
def test_unsafe_ids_in_task_requests_are_invalid_argument(
    http: httpx.Client, channel: grpc.Channel, model_id: str
) -> None:
    response = http.post("/api/v1/task/embedding", json={"model_id": model_id, "inputs": "x"})
    assert response.status_code == 400, response.text
    if "\x00" in model_id or "\n" in model_id or not model_id.isascii():
        return  # not a valid gRPC metadata value: the client refuses to send it
    stub = nlp_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text="x"), metadata=(("mm-model-id", model_id),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_manifest_with_bad_settings_is_refused_at_deploy(deployer: Deployer, store: Path) -> None:
    model_id = f"settings-{deployer.transport}"
    data = {
        "tasks": ["embedding"],
        "runtime": "onnx-encoder",
        "source": "files",
        "settings": {"batching": {"max_batch_size": "8"}},
    }
    files = [("manifest.json", json.dumps(data).encode()), *[(f"files/{n}", d) for n, d in _tiny_files()]]
    status, details = deployer.deploy(model_id, files)
    assert status == 400 and "max_batch_size" in details, details
    _store_is_clean(store, model_id)
    data["settings"] = {}
    files[0] = ("manifest.json", json.dumps(data).encode())
    status, details = deployer.deploy(model_id, files)
    assert status == 200, details
    deployer.undeploy(model_id)


def test_concurrent_deploys_of_one_id_one_wins(deployer: Deployer, store: Path) -> None:
    model_id = f"race-{deployer.transport}"
    files = _tiny_files()
    results: list[int] = []
    start = threading.Barrier(4)

    def deploy() -> None:
        start.wait()
        results.append(deployer.deploy(model_id, files)[0])

    threads = [threading.Thread(target=deploy) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(results) == [200, 409, 409, 409], results
    finally:
        deployer.undeploy(model_id)
    _store_is_clean(store, model_id)


def test_unknown_model_ids_leave_no_state_or_metric_series(
    http: httpx.Client, channel: grpc.Channel, gateway: GatewayThread
) -> None:
    before = http.get("/metrics").text
    stub = nlp_grpc.NlpServiceStub(channel)
    for index in range(150):
        model_id = f"unknown-{index}"
        response = http.post("/api/v1/task/embedding", json={"model_id": model_id, "inputs": "x"})
        assert response.status_code == 404
        with pytest.raises(grpc.RpcError) as missing:
            stub.EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="x"), metadata=(("mm-model-id", f"{model_id}-g"),)
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert http.get(f"/management/models/{model_id}").status_code == 404
    after = http.get("/metrics").text
    assert "unknown-" not in after
    assert len(after) - len(before) < 2000  # counters move; no series were added
    registry = gateway.gateway.registry
    known = set(registry.store.model_ids())
    assert set(registry._misses) <= known and set(registry._failed) <= known


@pytest.fixture
def relative_store_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Path
) -> Iterator[GatewayThread]:
    monkeypatch.chdir(tmp_path)  # the store is ./model-store, as `make run` has it
    base = gateway_settings(store)
    settings = Settings(
        model_store=Path("model-store"),
        server=ServerSettings(host="127.0.0.1", grpc_port=0, http_port=0, max_deploy_bytes=512 << 20),
        runtime=base.runtime,
        limits=base.limits,
    )
    server = GatewayThread(settings)
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(600)
def test_a_bare_hugging_face_folder_deploys_into_a_relative_store(
    relative_store_gateway: GatewayThread, tmp_path: Path
) -> None:
    """Caikit DeployModel over REST with the MiniLM folder's files and no manifest."""
    source = minilm_source()
    files = [
        {"filename": str(p.relative_to(source)), "data": base64.b64encode(p.read_bytes()).decode()}
        for p in sorted(source.rglob("*"))
        if p.is_file() and p.suffix != ".md"
    ]
    addresses = relative_store_gateway.gateway.addresses
    with httpx.Client(base_url=addresses.http, timeout=300) as client:
        deployed = client.post("/management/models", json={"model_id": "minilm-copy", "model_files": files})
        assert deployed.status_code == 200, deployed.text
        assert (tmp_path / "model-store" / "minilm-copy" / "manifest.json").is_file()
        embedded = client.post(
            "/api/v1/task/embedding",
            json={"model_id": "minilm-copy", "inputs": "hello"},
            headers={"x-request-timeout-ms": "300000"},
        )
        assert embedded.status_code == 200, embedded.text
        assert len(embedded.json()["result"]["data"]["values"]) == 384
        info = {m["name"]: m for m in client.get("/info/models").json()["models"]}
        path = info["minilm-copy"]["model_path"]
        assert path == str(tmp_path / "model-store" / "minilm-copy")  # a plain path, as Caikit gives
        assert client.delete("/management/models", params={"model_id": "minilm-copy"}).status_code == 200
    assert not (tmp_path / "model-store" / "minilm-copy").exists()
