"""`taskgate serve` as a user runs it: a real process, real sockets, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx

from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.models import MINILM
from tests.served import ROOT, ServedProcess


def test_init_store_then_serve_then_stop(tmp_path: Path, store: Path) -> None:
    env = {**os.environ, "TASKGATE_MODEL_STORE": str(tmp_path / "store")}
    init = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "init-store"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    manifest = tmp_path / "store" / MINILM / "manifest.json"
    assert manifest.is_file()
    # reuse the test store's cached export so the process does not export again
    served = ServedProcess(["--preload", MINILM], {"TASKGATE_MODEL_STORE": str(store)})
    try:
        response = httpx.post(
            f"{served.http}/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "hi"}, timeout=60
        )
        assert response.status_code == 200
        with grpc.insecure_channel(served.grpc) as channel:
            stub = nlp_grpc.NlpServiceStub(channel)
            reply = stub.EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="hi"), metadata=(("mm-model-id", MINILM),), timeout=60
            )
        assert len(reply.result.data_npfloat32sequence.values) == 384
    finally:
        assert served.stop() == 0


def test_serving_an_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    served = ServedProcess([], {"TASKGATE_MODEL_STORE": str(tmp_path / "empty")})
    said = served.said
    assert served.stop() == 0  # a SIGTERM right after the "serving" line stops it cleanly
    assert "holds no models" in said and "taskgate init-store" in said, said
    assert "Warning" not in said and "Traceback" not in said, said
