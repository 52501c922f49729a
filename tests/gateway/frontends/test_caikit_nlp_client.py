"""The real caikit-nlp-client (PyPI) generates text through Taskgate over gRPC and HTTP.

The client pins old grpcio-reflection and requests, so it lives in its own venv, built once under
.cache/ (guarded by a file lock and a marker naming the pinned version). It runs
tests/clients/caikit_nlp_client_check.py against the session gateway; the answers must match what
Taskgate's own stubs return for the same requests. An install that fails fails the test: a client
we cannot run proves nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread
from tests.models import CACHE, ROOT

CLIENT = "caikit-nlp-client==0.0.8"  # the latest release on PyPI
VENV = CACHE / "venv-caikit-nlp-client"
SCRIPT = ROOT / "tests" / "clients" / "caikit_nlp_client_check.py"
INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S = 300
META = (("mm-model-id", SMOL),)
PROMPT = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"
HEAVY = {"torch", "tensorflow", "jax", "caikit", "caikit-nlp", "transformers"}
# the first test builds the client's venv, loads SmolLM2 (exporting it on a fresh clone) and runs
# the client, each under its own limit
pytestmark = pytest.mark.timeout(120 + INSTALL_TIMEOUT_S + 300 + RUN_TIMEOUT_S)


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _run(command: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=_clean_env(), check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: no result in {timeout:.0f} s ({exc.cmd})")
    if done.returncode:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")


def client_python() -> Path:
    """The venv's python with the pinned client installed; built once, safe under concurrent runs."""
    python = VENV / "bin" / "python"
    marker = VENV / "installed.txt"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / f"{VENV.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.is_file() and marker.is_file() and marker.read_text() == CLIENT:
            return python
        interpreter = shutil.which("python3.11")
        if interpreter is None:
            pytest.fail("python3.11 is not on PATH: cannot build the caikit-nlp-client venv")
        shutil.rmtree(VENV, ignore_errors=True)
        started = time.monotonic()
        _run([interpreter, "-m", "venv", str(VENV)], "python3.11 -m venv", 120)
        _run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", CLIENT],
            f"pip install {CLIENT} (into {VENV})",
            INSTALL_TIMEOUT_S,
        )
        marker.write_text(CLIENT)
        print(f"installed {CLIENT} in {time.monotonic() - started:.1f} s")
        return python


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> nlp_grpc.NlpServiceStub:
    return nlp_grpc.NlpServiceStub(channel)


def _generate(stub: nlp_grpc.NlpServiceStub, **params: Any) -> str:
    request = nlp.TextGenerationTaskRequest(text=PROMPT, **params)
    return str(stub.TextGenerationTaskPredict(request, metadata=META, timeout=300).generated_text)


@pytest.fixture(scope="module")
def report(gateway: GatewayThread, stub: nlp_grpc.NlpServiceStub) -> dict[str, Any]:
    python = client_python()
    _generate(stub, max_new_tokens=1)  # load the model before the client's 60 s HTTP timeout runs
    host, port = gateway.gateway.addresses.grpc.rsplit(":", 1)
    command = [
        str(python),
        str(SCRIPT),
        *("--grpc-host", host, "--grpc-port", port, "--http-url", gateway.gateway.addresses.http),
        *("--model-id", SMOL, "--prompt", PROMPT),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_clean_env(), check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the caikit-nlp-client check gave no result in {RUN_TIMEOUT_S} s")
    if done.returncode:
        pytest.fail(f"the caikit-nlp-client check failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the check printed no JSON report:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return result


def value(outcome: dict[str, Any], what: str) -> Any:
    """The call's result, or a failure naming the client's exception and where it came from."""
    if "error" not in outcome:
        return outcome["value"]
    pytest.fail(f"caikit-nlp-client {what} raised {outcome['error']}\n{outcome['traceback']}")


def transport(report: dict[str, Any], name: str) -> dict[str, Any]:
    section: dict[str, Any] = report[name]
    if "connect" in section:
        value(section["connect"], f"{name} client set-up (server reflection)")
    return section


def test_the_client_venv_is_light(report: dict[str, Any]) -> None:
    versions = report["versions"]
    assert versions["caikit-nlp-client"] == CLIENT.split("==")[1]
    assert not HEAVY & set(versions), f"the client venv pulled {sorted(HEAVY & set(versions))}"


@pytest.mark.parametrize("name", ["grpc", "http"])
def test_generate_text_matches_taskgates_own_stubs(
    report: dict[str, Any], stub: nlp_grpc.NlpServiceStub, name: str
) -> None:
    text = value(transport(report, name)["greedy"], f"{name} generate_text")
    assert isinstance(text, str) and text.strip()
    assert text == _generate(stub, max_new_tokens=report["max_new_tokens"])


def test_grpc_and_http_agree(report: dict[str, Any]) -> None:
    grpc_text = value(transport(report, "grpc")["greedy"], "grpc generate_text")
    http_text = value(transport(report, "http")["greedy"], "http generate_text")
    assert grpc_text == http_text


@pytest.mark.parametrize("name", ["grpc", "http"])
def test_generate_text_stream_concatenates_to_the_unary_text(report: dict[str, Any], name: str) -> None:
    section = transport(report, name)
    chunks = value(section["stream"], f"{name} generate_text_stream")
    assert isinstance(chunks, list) and len(chunks) > 1, chunks
    assert "".join(chunks) == value(section["greedy"], f"{name} generate_text")


@pytest.mark.parametrize("name", ["grpc", "http"])
def test_sampling_with_a_seed_repeats_and_matches_the_stubs(
    report: dict[str, Any], stub: nlp_grpc.NlpServiceStub, name: str
) -> None:
    first, second = (
        value(outcome, f"{name} generate_text(decoding_method=SAMPLING)")
        for outcome in transport(report, name)["sampled"]
    )
    assert first.strip() and first == second
    assert first == _generate(stub, max_new_tokens=report["max_new_tokens"], **report["sampling"])


@pytest.mark.parametrize("name", ["grpc", "http"])
@pytest.mark.parametrize("call", ["unknown_model", "unknown_model_stream"])
def test_server_errors_reach_the_caller_as_runtime_errors(
    report: dict[str, Any], name: str, call: str
) -> None:
    """The client's contract: RuntimeError(<the server's details>). Its HTTP stream reader expects
    caikit's shape, an error as a plain ``data: {"details", "code", "id"}`` event."""
    outcome = transport(report, name)[call]
    assert "error" in outcome, f"{name} {call} returned {outcome['value']!r}"
    assert outcome["error"].startswith("RuntimeError: ") and report["unknown_model"] in outcome["error"], (
        f"{name} {call}: {outcome['error']}\n{outcome['traceback']}"
    )


@pytest.mark.parametrize("name", ["grpc", "http"])
def test_get_text_generation_parameters_lists_the_generation_knobs(report: dict[str, Any], name: str) -> None:
    parameters = value(transport(report, name)["parameters"], f"{name} get_text_generation_parameters")
    assert {"max_new_tokens", "min_new_tokens", "decoding_method", "seed", "stop_sequences"} <= set(
        parameters
    )
