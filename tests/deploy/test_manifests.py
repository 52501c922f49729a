"""deploy/: every kustomization rendered by a real kustomize and every object validated against
the real schemas (Kubernetes 1.37 for core kinds, KServe's CRDs for KServe's), then what the
manifests tell Taskgate checked against the code that reads it (settings, ports, endpoints,
manifests, the tuning Job)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters import tune_job
from gateway import settings
from gateway.models.model_settings import check_settings
from gateway.models.store import ModelManifest
from runtimes.remote_v2 import RemoteOptions
from tests.deploy import kube

OVERLAYS = ("raw", "serverless", "cluster-runtime", "modelmesh", "gateway", "tuning")
NAME = "minilm"  # what KServe puts for {{.Name}}: the InferenceService's name


def fill(value: str) -> str:
    return value.replace("{{.Name}}", NAME)


def serve_settings(container: dict[str, Any]) -> settings.Settings:
    """The settings `taskgate serve` resolves from a container's environment (KServe's template filled)."""
    assert container["command"] == ["taskgate", "serve"]
    assert not container.get("args"), "settings come from the environment only"
    return settings.parse([], environ={k: fill(v) for k, v in kube.env_of(container).items()})


def test_every_overlay_is_there() -> None:
    assert {f"overlays/{name}" for name in OVERLAYS} <= set(kube.kustomizations())


@pytest.mark.parametrize("kustomization", kube.kustomizations())
def test_every_object_is_valid_against_its_schema(kustomization: str) -> None:
    objects = kube.kustomize(kustomization)
    assert objects
    errors = [error for obj in objects for error in kube.validation_errors(obj)]
    assert errors == []


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"].get("template", {}).get("spec", obj["spec"])
    container: dict[str, Any] = spec["containers"][0]
    return container


MUTATIONS = [  # (kind, what a typo does to it, what the validation says)
    ("ServingRuntime", lambda o: _container(o).update(envv=[]), "'envv' was unexpected"),
    ("ServingRuntime", lambda o: o["spec"].update(multiModel="yes"), "is not of type 'boolean'"),
    (
        "InferenceService",
        lambda o: o["spec"]["predictor"]["model"].update(storageURI="s3://x"),
        "'storageURI'",
    ),
    ("Deployment", lambda o: o["spec"].update(replica=2), "'replica' was unexpected"),
    (
        "Deployment",
        lambda o: _container(o)["ports"][0].update(containerPort="8080"),
        "is not of type 'integer'",
    ),
    ("HorizontalPodAutoscaler", lambda o: o["spec"].update(minReplicas="two"), "is not of type"),
    ("PersistentVolumeClaim", lambda o: o["metadata"].update(name="Not_A_Name"), "not a DNS-1123 label"),
]


@pytest.mark.parametrize(("kind", "mutate", "message"), MUTATIONS)
def test_the_validation_refuses_what_a_cluster_refuses(kind: str, mutate: Any, message: str) -> None:
    obj = copy.deepcopy(kube.find(kube.kustomize("overlays/gateway"), kind))
    mutate(obj)
    errors = kube.validation_errors(obj)
    assert len(errors) == 1 and message in errors[0], errors


def test_the_serving_runtime_serves_one_model_on_its_declared_ports() -> None:
    runtime = kube.find(kube.kustomize("base"), "ServingRuntime", "taskgate")
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"  # the container KServe merges the predictor into
    assert set(kube.env_of(container)) - {"HF_HOME"} <= kube.setting_env_names()
    config = serve_settings(container)
    assert config.single_model is not None
    assert (config.single_model.model_dir, config.single_model.name) == (Path("/mnt/models"), NAME)
    assert config.preload == (NAME,)  # loaded before the ports open
    assert config.server.host == "0.0.0.0"  # noqa: S104 - the pod's port must be reachable
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http1": config.server.http_port, "grpc": config.server.grpc_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == config.server.http_port
    assert fill(container["readinessProbe"]["httpGet"]["path"]) == f"/v2/models/{NAME}/ready"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(config.model_store) in mounts  # writable although the root filesystem is not
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]


def test_the_cluster_runtime_is_the_same_runtime() -> None:
    (cluster,) = kube.kustomize("overlays/cluster-runtime")
    runtime = kube.find(kube.kustomize("base"), "ServingRuntime", "taskgate")
    assert cluster["kind"] == "ClusterServingRuntime" and cluster["spec"] == runtime["spec"]


@pytest.mark.parametrize(("overlay", "mode"), [("raw", "RawDeployment"), ("serverless", "Serverless")])
def test_inference_services_name_a_runtime_that_serves_their_format(overlay: str, mode: str) -> None:
    objects = kube.kustomize(f"overlays/{overlay}")
    runtime = kube.find(objects, "ServingRuntime", "taskgate")
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    services = [o for o in objects if o["kind"] == "InferenceService"]
    assert {s["metadata"]["name"] for s in services} == {"minilm", "smollm2"}
    for service in services:
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == "taskgate"
        assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
        assert model["storageUri"].startswith("hf://")
        for item in model.get("env", []):  # per-model settings are settings too
            assert item["name"] in kube.setting_env_names()
        if "TASKGATE_MODEL_SETTINGS" in kube.env_of(model):
            check_settings("onnx-causal-lm", json.loads(kube.env_of(model)["TASKGATE_MODEL_SETTINGS"]))
    if overlay == "serverless":  # Knative routes one port per container
        assert [p["name"] for p in runtime["spec"]["containers"][0]["ports"]] == ["http1"]


def test_the_modelmesh_runtime_answers_on_its_endpoints() -> None:
    objects = kube.kustomize("overlays/modelmesh")
    runtime = kube.find(objects, "ServingRuntime", "taskgate-modelmesh")
    spec = runtime["spec"]
    assert spec["multiModel"] is True
    config = serve_settings(spec["containers"][0])
    assert config.single_model is None
    assert spec["grpcEndpoint"] == config.server.modelmesh_endpoint == "port:8085"
    assert spec["grpcDataEndpoint"] == f"port:{config.server.grpc_port}"
    assert config.server.host == "127.0.0.1"  # ModelMesh's container calls it inside the pod
    assert 8080 not in (config.server.http_port, config.server.grpc_port)  # ModelMesh's own port
    assert config.server.modelmesh_models_dir == "/models"  # where ModelMesh's puller writes
    service = kube.find(objects, "InferenceService")
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "ModelMesh"
    assert service["spec"]["predictor"]["model"]["runtime"] == "taskgate-modelmesh"


def test_the_gateway_fronts_the_remote_runtime_it_names(tmp_path: Path) -> None:
    objects = kube.kustomize("overlays/gateway")
    deployment = kube.find(objects, "Deployment", "taskgate-gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = serve_settings(container)
    (models,) = [o for o in objects if o["metadata"]["name"].startswith("taskgate-gateway-models")]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"] if m["name"] != "models"}
    mounted = {m["subPath"]: m["mountPath"] for m in container["volumeMounts"] if m["name"] == "models"}
    assert volumes["models"]["configMap"]["name"] == models["metadata"]["name"]
    service = kube.find(objects, "InferenceService", "minilm-tensors")
    claim = kube.find(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == claim
    shared_path = mounts["shared"]["mountPath"]
    ids = []
    for key, text in models["data"].items():
        model_id = key.removesuffix(".json")
        ids.append(model_id)
        assert mounted[key] == f"{config.model_store}/{model_id}/manifest.json"
        manifest = ModelManifest.parse(json.loads(text), tmp_path / model_id, model_id)
        check_settings(manifest.runtime, manifest.settings)
        remote = RemoteOptions.parse(manifest.settings)
        assert remote.url == f"http://{service['metadata']['name']}-predictor"  # KServe's Service
        assert remote.model_name == service["metadata"]["name"]  # {{.Name}} of the tensor runtime
        assert manifest.source.is_relative_to(shared_path)  # the tokenizer, on the shared volume
        model = service["spec"]["predictor"]["model"]
        assert model["storageUri"] == f"pvc://{claim}/{manifest.source.relative_to(shared_path)}"
    assert config.preload == tuple(ids)
    tensors = kube.find(objects, "ServingRuntime", "taskgate-tensors")
    assert service["spec"]["predictor"]["model"]["runtime"] == "taskgate-tensors"
    args = tensors["spec"]["containers"][0]["args"]
    assert "--host=0.0.0.0" in args and "--model_name={{.Name}}" in args
    encoder = kube.find(objects, "ConfigMap", "taskgate-tensors-encoder")
    manifest = ModelManifest.parse(json.loads(encoder["data"]["manifest.json"]), tmp_path, "encoder")
    assert (manifest.runtime, manifest.source) == ("onnx-encoder", Path("/mnt/models"))
    hpa = kube.find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.server.http_port, "grpc": config.server.grpc_port}


def test_the_tuning_job_is_what_taskgate_renders_and_serving_reads_its_output() -> None:
    overlay = kube.DEPLOY / "overlays" / "tuning"
    rendered = tune_job.render(overlay / "spec.json", adapter="support-topics")
    assert list(yaml.safe_load_all((overlay / "job.yaml").read_text())) == rendered, (
        "deploy/overlays/tuning/job.yaml is stale: run the command in its first line"
    )
    objects = kube.kustomize("overlays/tuning")
    job = kube.find(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == "shared"
    }
    (tune,), (publish,) = pod["initContainers"], pod["containers"]
    assert tune["command"] == ["taskgate", "tune"]
    assert publish["command"] == ["taskgate", "adapters", "publish"]
    shared = next(m for m in publish["volumeMounts"] if m["name"] in claims)
    store = publish["args"][publish["args"].index("--adapter-store") + 1]
    assert store == f"{shared['mountPath']}/adapters" and not shared.get("readOnly")
    spec = json.loads(kube.find(objects, "ConfigMap")["data"]["spec.json"])
    assert spec["base_model"] == f"{shared['mountPath']}/models/minilm"
    # the InferenceService serving it reads the same model and mounts that adapter store
    service = kube.find(objects, "InferenceService", "minilm")
    runtime = kube.find(objects, "ServingRuntime", "taskgate")
    model_store = serve_settings(runtime["spec"]["containers"][0]).model_store
    model = service["spec"]["predictor"]["model"]
    claim = claims[shared["name"]]
    assert model["storageUri"] == f"pvc://{claim}/models/minilm"
    (mount,) = model["volumeMounts"]
    volume = next(v for v in service["spec"]["predictor"]["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert mount["mountPath"] == f"{model_store}/.adapters"  # the gateway's adapter store
    assert (mount["subPath"], mount["readOnly"]) == ("adapters", True)
