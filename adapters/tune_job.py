"""``taskgate k8s tune-job SPEC.json --name ADAPTER``: the Kubernetes objects that run a tuning
spec as a Job, printed as YAML for ``kubectl apply -f -``. The same SPEC.json runs locally
(``taskgate tune SPEC.json --output DIR --model-store STORE``).

    taskgate k8s tune-job spec.json --name support-topics | kubectl apply -f -

Two objects: a ConfigMap holding the spec (and the JSONL files it names by a relative path) and a
Job on the shared PersistentVolumeClaim (deploy/storage: ``models/<id>/`` base models,
``adapters/`` the adapter store the serving runtimes mount):

1. init container ``tune``: ``taskgate tune`` into the pod's own scratch folder. A run that fails
   or is stopped writes nothing, and the Job fails before anything is published.
2. container ``publish``: ``taskgate adapters publish`` into ``adapters/`` on the claim: the next
   version of ADAPTER, atomically. Serving runtimes that mount that adapter store serve it on the
   next request that names it, with no restart.

In the cluster spec the base model (a model id, as locally) is read from ``models/<id>`` on the
claim, and recorded under that id, so the id must be the serving model's (the InferenceService's
name). Data files named by an absolute path must already be in the pod (on the claim).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_IMAGE = "ghcr.io/taskgate/taskgate:0.1.0"
DEFAULT_CLAIM = "taskgate-shared"
SHARED = PurePosixPath("/mnt/shared")  # the claim, in the pod
SPEC_DIR = PurePosixPath("/etc/taskgate/tuning")  # the ConfigMap, in the pod
OUTPUT = PurePosixPath("/work/adapter")  # the tune container's output, the publish container's input
DATA_FIELDS = ("train", "train_path", "validation", "validation_path")
LOCAL_FIELDS = {  # spec fields that name this machine's paths: the cluster spec cannot keep them
    "base_model_path": "name the base model by its id (base_model); the Job reads it from models/<id>",
    "model_store": "the Job reads base models from models/<id> on the claim",
    "output_dir": "the Job writes the adapter itself and publishes it",
}
TMP = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
MAX_CONFIGMAP_BYTES = 1_000_000  # Kubernetes refuses objects over 1 MiB
LABELS = {"app.kubernetes.io/part-of": "taskgate", "app.kubernetes.io/component": "tuning"}
SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="k8s_command", required=True)
    job = kinds.add_parser("tune-job", help="print the Kubernetes Job (and its ConfigMap) for a tuning spec")
    job.add_argument("spec", type=Path, help="the tuning spec (JSON), as `taskgate tune` reads it")
    job.add_argument("--name", required=True, help="the adapter to publish (requests use name or name@N)")
    job.add_argument("--job-name", help="the Job's name (default: tune-<name>)")
    job.add_argument("--image", default=DEFAULT_IMAGE, help=f"the Taskgate image (default {DEFAULT_IMAGE})")
    job.add_argument(
        "--claim", default=DEFAULT_CLAIM, help=f"the shared PersistentVolumeClaim (default {DEFAULT_CLAIM})"
    )
    job.add_argument("--cpus", type=int, default=2, help="CPUs of the tuning container (= torch threads)")
    job.add_argument("--memory", default="8Gi", help="memory limit of the tuning container")


def job_name_for(adapter: str) -> str:
    """A DNS-1123 name from an adapter name (lower case, '-' for anything else, <= 63 chars)."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"tune-{adapter}".lower()).strip("-")
    return name[:63].rstrip("-")


def render(
    spec_path: Path,
    *,
    adapter: str,
    image: str = DEFAULT_IMAGE,
    claim: str = DEFAULT_CLAIM,
    cpus: int = 2,
    memory: str = "8Gi",
    job_name: str | None = None,
) -> list[dict[str, Any]]:
    """The ConfigMap and the Job; ValueError says what in the spec cannot run on a cluster."""
    from adapters.store import check_adapter_name
    from gateway.models.store import is_model_id

    check_adapter_name(adapter)
    if not 1 <= cpus <= 256:
        raise ValueError(f"--cpus must be within 1..256, got {cpus}")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the spec {spec_path}: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{spec_path}: the spec must be a JSON object")
    for key, why in LOCAL_FIELDS.items():
        if spec.get(key) is not None:
            raise ValueError(f"spec field {key!r} names a local path: {why}")
    base = spec.get("base_model")
    if not isinstance(base, str) or not is_model_id(base):
        raise ValueError(
            f"spec field 'base_model' must be a model id (the serving model's name), got {base!r}"
        )
    name = job_name or job_name_for(adapter)
    spec = {**spec, "base_model": str(SHARED / "models" / base)}
    files = _data_files(spec, spec_path.parent)
    data = {"spec.json": json.dumps(spec, indent=2) + "\n"}
    items = [{"key": "spec.json", "path": "spec.json"}]
    for index, (relative, text) in enumerate(sorted(files.items())):
        key = f"data-{index}-{re.sub(r'[^A-Za-z0-9._-]', '-', PurePosixPath(relative).name)}"
        data[key] = text
        items.append({"key": key, "path": relative})
    size = sum(len(key) + len(value.encode()) for key, value in data.items())
    if size > MAX_CONFIGMAP_BYTES:
        raise ValueError(
            f"the spec and its data files take {size} bytes, more than a ConfigMap holds; put the "
            f"data on the claim and name it by an absolute path under {SHARED}"
        )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-spec", "labels": dict(LABELS)},
        "data": data,
    }
    return [config_map, _job(name, adapter, image, claim, cpus, memory, items)]


def _data_files(spec: dict[str, Any], folder: Path) -> dict[str, str]:
    """Relative JSONL paths of the spec -> their text (they ride in the ConfigMap)."""
    files: dict[str, str] = {}
    for key in DATA_FIELDS:
        value = spec.get(key)
        if not isinstance(value, str):
            continue  # records inline (or absent): they ride in spec.json
        path = PurePosixPath(value)
        if path.is_absolute():
            if SHARED not in path.parents:
                print(f"note: {key} {value} must exist in the pod (put it on the claim, under {SHARED})",
                      file=sys.stderr)  # fmt: skip
            continue
        if ".." in path.parts:
            raise ValueError(f"spec field {key!r}: {value!r} leaves the spec's folder; use a path inside it")
        try:
            files[str(path)] = (folder / path).read_text()
        except (OSError, ValueError) as exc:
            raise ValueError(f"spec field {key!r}: cannot read {folder / path}: {exc}") from None
    return files


def _job(
    name: str, adapter: str, image: str, claim: str, cpus: int, memory: str, items: list[dict[str, str]]
) -> dict[str, Any]:
    labels = {**LABELS, "taskgate.io/adapter": adapter[:63].rstrip("._-")}
    tune = {
        "name": "tune",
        "image": image,
        "command": ["taskgate", "tune"],
        "args": [str(SPEC_DIR / "spec.json"), "--output", str(OUTPUT), "--threads", str(cpus)],
        "env": [{"name": "HF_HOME", "value": f"{TMP}/hf"}],
        "resources": {
            "requests": {"cpu": str(cpus), "memory": memory},
            "limits": {"cpu": str(cpus), "memory": memory},
        },
        "securityContext": SECURITY,
        "volumeMounts": [
            {"name": "spec", "mountPath": str(SPEC_DIR), "readOnly": True},
            # writable: a GGUF base model is converted once, beside it, for every later run
            {"name": "shared", "mountPath": str(SHARED)},
            {"name": "work", "mountPath": str(OUTPUT.parent)},
            {"name": "tmp", "mountPath": TMP},
        ],
    }
    publish = {
        "name": "publish",
        "image": image,
        "command": ["taskgate", "adapters", "publish"],
        "args": [
            *(str(OUTPUT), "--name", adapter, "--adapter-store", str(SHARED / "adapters")),
            *("--job-id", "$(JOB_NAME)"),
        ],
        "env": [
            {
                "name": "JOB_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
            }
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": SECURITY,
        "volumeMounts": [
            {"name": "shared", "mountPath": str(SHARED)},
            {"name": "work", "mountPath": str(OUTPUT.parent), "readOnly": True},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a failed run is looked at, not repeated
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [tune],
                    "containers": [publish],
                    "volumes": [
                        {"name": "spec", "configMap": {"name": f"{name}-spec", "items": items}},
                        {"name": "shared", "persistentVolumeClaim": {"claimName": claim}},
                        {"name": "work", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def run(args: argparse.Namespace) -> int:
    import yaml

    try:
        objects = render(
            args.spec,
            adapter=args.name,
            image=args.image,
            claim=args.claim,
            cpus=args.cpus,
            memory=args.memory,
            job_name=args.job_name,
        )
    except ValueError as exc:
        print(f"taskgate k8s tune-job: error: {exc}", file=sys.stderr, flush=True)
        return 2

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a shared dict is written out each time, never as a YAML alias

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None  # files in the ConfigMap read as files
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    sys.stdout.write(yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, width=100))
    return 0
