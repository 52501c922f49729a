"""`taskgate serve` as a user runs it: a real process, real sockets, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx

from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.models import MINILM

ROOT = Path(__file__).resolve().parents[2]


def test_init_store_then_serve_then_stop(tmp_path: Path, store: Path) -> None:
    env = {**os.environ, "TASKGATE_MODEL_STORE": str(tmp_path / "store")}
    init = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "init-store"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    manifest = tmp_path / "store" / MINILM / "manifest.json"
    assert manifest.is_file()
    # reuse the test store's cached export so the process does not export again
    env["TASKGATE_MODEL_STORE"] = str(store)
    env["TASKGATE_GRPC_PORT"] = "0"
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--http-port", "0", "--preload", MINILM],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        _use_the_gateway(process)


def _use_the_gateway(process: subprocess.Popen[str]) -> None:
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "Taskgate serving" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "taskgate exited before serving"
        match = re.search(r"gRPC (127\.0\.0\.1:\d+)\s+HTTP (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        grpc_address, http_address = match.groups()
        response = httpx.post(
            f"{http_address}/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "hi"}, timeout=60
        )
        assert response.status_code == 200
        with grpc.insecure_channel(grpc_address) as channel:
            stub = nlp_grpc.NlpServiceStub(channel)
            reply = stub.EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="hi"), metadata=(("mm-model-id", MINILM),), timeout=60
            )
        assert len(reply.result.data_npfloat32sequence.values) == 384
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serving_an_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    env = {**os.environ, "TASKGATE_MODEL_STORE": str(tmp_path / "empty"), "TASKGATE_GRPC_PORT": "0"}
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--http-port", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            lines = []
            while not any("Taskgate serving" in line for line in lines):
                lines.append(process.stdout.readline())
                assert lines[-1] or process.poll() is None, "taskgate exited before serving"
            said = "".join(lines)
            assert "holds no models" in said and "taskgate init-store" in said, said
            assert "Warning" not in said and "Traceback" not in said, said
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
