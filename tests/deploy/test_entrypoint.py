"""The image's entrypoint run as the tuning overlay's "minilm" pod runs it, then that overlay's
tuning Job, on this machine: the command from the Dockerfile, the environment from the Dockerfile
and the rendered ServingRuntime (KServe's template filled, INFERENCE_SERVICE_NAME set as KServe
sets it), the volumes from the rendered manifests as folders: the shared PersistentVolumeClaim,
/mnt/models (its models/minilm, the real MiniLM folder, which nothing may write into), the store
(an emptyDir) with the claim's adapters/ mounted at <store>/.adapters. Only what a pod has and a
test machine has not is changed: the container's paths map to temporary folders, 0.0.0.0 to
127.0.0.1, the ports to free ones. The probes, a task call on each door, a bad request, a tuning
Job's adapter served without a restart, and a clean SIGTERM are checked over real sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.wire import caikit_runtime_nlp_pb2 as nlp_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.deploy import kube
from tests.deploy.dockerfile import entrypoint, image_env
from tests.deploy.test_single_model import snapshot
from tests.models import minilm_source

NAME = "minilm"  # the InferenceService: KServe fills {{.Name}} and INFERENCE_SERVICE_NAME with it
ADAPTER = "support-topics"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Pod:
    """Container paths -> this machine's folders, and the container's ports -> free ones."""

    root: Path
    paths: dict[str, Path] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    def local(self, value: str) -> str:
        """A container's value (a path, an address) as it is on this machine."""
        if value == "0.0.0.0":  # noqa: S104 - the pod's bind address, never used here
            return "127.0.0.1"
        if value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        for container, local in sorted(self.paths.items(), key=lambda item: -len(item[0])):
            if value == container or value.startswith(container + "/"):
                return str(local) + value[len(container) :]
        return value

    def folder(self, container: str) -> Path:
        path = self.root / container.strip("/").replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        self.paths[container] = path
        return path


@dataclass
class Serving:
    process: subprocess.Popen[str]
    http: httpx.Client
    grpc_address: str
    pod: Pod
    model_dir: Path
    store: Path
    objects: list[dict[str, Any]]
    log: Path


def fill(value: str) -> str:
    return value.replace("{{.Name}}", NAME)


def environment(pod: Pod, container: dict[str, Any]) -> dict[str, str]:
    """A container's process environment: this machine's basics, the image's ENV, the container's env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    for name, value in image_env().items():
        if name == "PATH":  # the image's venv is this machine's
            value = value.replace("/opt/taskgate/bin", str(Path(sys.executable).parent))
            env[name] = value.replace("$PATH", os.environ["PATH"])
        else:
            env[name] = pod.local(value)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = pod.local(fill(item["value"]))
    return env


def executable(name: str, env: dict[str, str]) -> str:
    """A command as the container's PATH finds it (the image's venv is this machine's)."""
    found = shutil.which(name, path=env["PATH"])
    assert found == str(Path(sys.executable).parent / name), found
    return found


def wait_for(http: httpx.Client, path: str, process: subprocess.Popen[str], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, f"taskgate serve exited {process.returncode}:\n{log.read_text()}"
        try:
            response = http.get(path)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{path} did not answer 200 in 240 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    objects = kube.kustomize("overlays/tuning")
    runtime = kube.find(objects, "ServingRuntime", "taskgate")
    container = runtime["spec"]["containers"][0]
    model = kube.find(objects, "InferenceService", NAME)["spec"]["predictor"]["model"]
    pod = Pod(tmp_path_factory.mktemp("pod"))
    shared = pod.folder("/mnt/shared")  # the claim (the tuning Job mounts it here)
    claim, _, sub_path = model["storageUri"].removeprefix("pvc://").partition("/")
    assert claim == kube.find(objects, "PersistentVolumeClaim")["metadata"]["name"]
    model_dir = shared / sub_path
    shutil.copytree(minilm_source(), model_dir)  # what you put on the claim (deploy/README.md)
    for path in (model_dir, *model_dir.rglob("*")):  # mounted read-only (root ignores the bits:
        path.chmod(path.stat().st_mode & ~0o222)  # test_nothing_is_written... compares the files)
    pod.paths["/mnt/models"] = model_dir  # pvc:// storageUri: KServe mounts the sub-path there
    for mount in container["volumeMounts"]:
        pod.folder(mount["mountPath"])  # the runtime's emptyDirs
    for mount in model["volumeMounts"]:  # the claim's adapters/ inside the store emptyDir
        (shared / mount["subPath"]).mkdir()
        Path(pod.local(mount["mountPath"])).symlink_to(shared / mount["subPath"])
    ports = [p["containerPort"] for p in container["ports"]]
    pod.ports = {port: free_port() for port in ports}
    env = environment(pod, container)
    env["INFERENCE_SERVICE_NAME"] = NAME  # what KServe (>= 0.17) adds to every predictor container
    assert container["command"] == entrypoint()
    command = [executable(entrypoint()[0], env), *entrypoint()[1:]]
    log = pod.root / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, env=env, cwd=pod.root, stdout=output, stderr=subprocess.STDOUT, text=True
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{pod.ports[8080]}", timeout=120)
    try:
        wait_for(http, container["startupProbe"]["httpGet"]["path"], process, log)
        yield Serving(
            process,
            http,
            f"127.0.0.1:{pod.ports[8085]}",
            pod,
            model_dir,
            Path(env["TASKGATE_MODEL_STORE"]),
            objects,
            log,
        )
    finally:
        http.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.returncode == 0, log.read_text()


def test_the_probes_of_the_manifest_answer(serving: Serving) -> None:
    container = kube.find(serving.objects, "ServingRuntime", "taskgate")["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert serving.pod.local(str(get["port"])) == str(serving.pod.ports[8080])
        response = serving.http.get(fill(get["path"]))
        assert response.status_code == 200, (probe, response.text)
    with grpc.insecure_channel(serving.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert serving.http.get(f"/v2/models/{NAME}-other/ready").status_code == 404


def test_the_model_answers_under_the_inference_services_name_on_every_door(serving: Serving) -> None:
    text = "The storage initializer put me here."
    rest = serving.http.post("/api/v1/task/embedding", json={"model_id": NAME, "inputs": text})
    assert rest.status_code == 200, rest.text
    values = rest.json()["result"]["data"]["values"]
    assert len(values) == 384
    with grpc.insecure_channel(serving.grpc_address) as channel:
        reply = nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
            nlp_pb2.EmbeddingTaskRequest(text=text), metadata=[("mm-model-id", NAME)], timeout=60
        )
    assert list(reply.result.data_npfloat32sequence.values) == pytest.approx(values, abs=1e-5)
    v2 = serving.http.post(
        f"/v2/models/{NAME}/infer",
        json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]},
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == pytest.approx(values, abs=1e-5)
    openai = serving.http.post("/v1/embeddings", json={"model": NAME, "input": text})
    assert openai.status_code == 200 and openai.json()["data"][0]["embedding"] == pytest.approx(
        values, abs=1e-5
    )
    assert [m["id"] for m in serving.http.get("/v1/models").json()["data"]] == [NAME]


def test_bad_requests_get_the_tables_codes(serving: Serving) -> None:
    missing = serving.http.post(
        "/api/v1/task/embedding", json={"model_id": "all-MiniLM-L6-v2", "inputs": "x"}
    )
    assert missing.status_code == 404 and "all-MiniLM-L6-v2" in missing.json()["details"]
    wrong_task = serving.http.post("/api/v1/task/text-generation", json={"model_id": NAME, "inputs": "x"})
    assert wrong_task.status_code == 400 and "text-generation" in wrong_task.json()["details"]
    with grpc.insecure_channel(serving.grpc_address) as channel, pytest.raises(grpc.RpcError) as caught:
        nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
            nlp_pb2.EmbeddingTaskRequest(text="x"), metadata=[("mm-model-id", "nope")], timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_nothing_is_written_into_the_model_folder(serving: Serving) -> None:
    assert snapshot(serving.model_dir) == snapshot(minilm_source())  # a copy, still byte for byte
    entry = serving.store / NAME
    assert json.loads((entry / "manifest.json").read_text())["runtime"] == "onnx-encoder"
    assert (entry / "onnx-feature-extraction" / "model.onnx").is_file()  # the export: in the store


def test_a_tuning_jobs_adapter_is_served_by_the_running_pod(serving: Serving) -> None:
    job = kube.find(serving.objects, "Job")
    pod_spec = job["spec"]["template"]["spec"]
    pod = job_pod(serving, job)
    outputs = [run_container(pod, c, job) for c in (*pod_spec["initContainers"], *pod_spec["containers"])]
    assert outputs[-1].startswith(f"published {ADAPTER}@1 (base model {NAME}, classifier)")

    # the running pod, never told: the next request naming the adapter finds it
    def classify(model_id: str, text: str) -> dict[str, float]:
        response = serving.http.post(
            "/api/v1/task/text-classification", json={"model_id": model_id, "inputs": text}
        )
        assert response.status_code == 200, response.text
        return {r["label"]: r["score"] for r in response.json()["results"]}

    billing = classify(ADAPTER, "Please refund the double charge on my last invoice.")
    technical = classify(ADAPTER, "The app crashes with error 500 whenever I upload a file.")
    assert set(billing) == set(technical) == {"billing", "technical"}
    assert max(billing, key=billing.__getitem__) == "billing"
    assert max(technical, key=technical.__getitem__) == "technical"

    # a second version (its labels renamed) published the same way: the name serves it at once
    relabeled = pod.root / "relabeled"
    shutil.copytree(Path(pod.local("/work/adapter")), relabeled)
    for name in ("labels.json", "tuning.json"):
        data = json.loads((relabeled / name).read_text())
        data["labels"] = [label.upper() for label in data["labels"]]
        (relabeled / name).write_text(json.dumps(data))
    pod.paths["/work/adapter"] = relabeled
    assert run_container(pod, pod_spec["containers"][0], job).startswith(f"published {ADAPTER}@2")
    assert set(classify(ADAPTER, "Where is my receipt?")) == {"BILLING", "TECHNICAL"}
    assert set(classify(f"{ADAPTER}@1", "Where is my receipt?")) == {"billing", "technical"}
    version = json.loads(
        (Path(pod.local("/mnt/shared")) / "adapters" / ADAPTER / "v1" / "adapter.json").read_text()
    )
    assert version["job_id"] == job["metadata"]["name"] and version["base_model"] == NAME


def job_pod(serving: Serving, job: dict[str, Any]) -> Pod:
    """The Job's volumes as folders: its ConfigMap's items, emptyDirs, and the claim, which is the
    folder the serving pod's model and adapter store come from."""
    pod = Pod(serving.pod.root / "job", dict(serving.pod.paths))
    spec = job["spec"]["template"]["spec"]
    mounts = [m for c in (*spec["initContainers"], *spec["containers"]) for m in c["volumeMounts"]]
    claim = kube.find(serving.objects, "PersistentVolumeClaim")["metadata"]["name"]
    for volume in spec["volumes"]:
        (path,) = {m["mountPath"] for m in mounts if m["name"] == volume["name"]}
        if "configMap" in volume:
            config_map = kube.find(serving.objects, "ConfigMap", volume["configMap"]["name"])
            folder = pod.folder(path)
            for item in volume["configMap"]["items"]:
                text = config_map["data"][item["key"]]
                if item["path"] == "spec.json":  # the container paths it names (base_model)
                    spec_data = json.loads(text)
                    text = json.dumps(
                        {k: pod.local(v) if isinstance(v, str) else v for k, v in spec_data.items()}
                    )
                (folder / item["path"]).write_text(text)
        elif "emptyDir" in volume:
            pod.folder(path)
        else:
            assert volume["persistentVolumeClaim"]["claimName"] == claim and path in pod.paths
    return pod


def run_container(pod: Pod, container: dict[str, Any], job: dict[str, Any]) -> str:
    """One container of the Job, its command and arguments as Kubernetes runs them; its output."""
    env = environment(pod, container)
    env["JOB_NAME"] = job["metadata"]["name"]  # the downward API: the Job's pods carry its name
    args = [pod.local(arg.replace("$(JOB_NAME)", env["JOB_NAME"])) for arg in container["args"]]
    command = [executable(container["command"][0], env), *container["command"][1:], *args]
    result = subprocess.run(
        command, env=env, cwd=pod.root, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout
