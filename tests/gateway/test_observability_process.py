"""``taskgate serve --log-format json --log-payloads 1`` as a user runs it: every log line the
process writes is one JSON object (uvicorn's included), and each request's access line carries
its id, timings and, with payloads switched on, what was asked and answered."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.models import MINILM
from tests.served import ServedProcess

pytestmark = pytest.mark.timeout(300)
PRINTED = ("Taskgate serving", "Taskgate stopping", "Taskgate stopped")  # the CLI's own print()s
TEXT_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")


def test_json_logs_with_payloads_from_a_real_process(store: Path) -> None:
    served = ServedProcess(
        ["--model-store", str(store), "--log-format", "json", "--log-payloads", "1"], env={}
    )
    try:
        reply = httpx.post(
            f"{served.http}/api/v1/task/embedding",
            json={"model_id": MINILM, "inputs": "payload over rest"},
            headers={"x-request-id": "proc-http-1"},
            timeout=120,
        )
        assert reply.status_code == 200
        with grpc.insecure_channel(served.grpc) as channel:
            nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="payload over grpc"),
                metadata=(("mm-model-id", MINILM), ("x-request-id", "proc-grpc-1")),
                timeout=120,
            )
    finally:
        assert served.stop() == 0
    lines = [line.strip() for line in served.output if line.strip()]
    logged = [line for line in lines if not line.startswith(PRINTED)]
    assert logged and not [line for line in logged if TEXT_LOG_LINE.match(line)]
    parsed = [json.loads(line) for line in logged if line.startswith("{")]
    assert any(entry["logger"].startswith("uvicorn") for entry in parsed)
    access = {entry["request_id"]: entry for entry in parsed if entry["logger"] == "taskgate.access"}
    rest, rpc = access["proc-http-1"], access["proc-grpc-1"]
    assert rest["code"] == "OK" and rest["status"] == 200 and rest["model"] == MINILM
    assert "payload over rest" in rest["request_payload"] and '"result"' in rest["response_payload"]
    assert rpc["code"] == "OK" and rpc["protocol"] == "grpc"
    assert "payload over grpc" in rpc["request_payload"] and "result" in rpc["response_payload"]
