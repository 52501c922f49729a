"""Graceful shutdown as Kubernetes drives it: a real ``taskgate serve`` process, real clients
mid-stream, SIGTERM. Readiness goes false at once and new work is refused (503 / UNAVAILABLE)
while streams in flight finish; a running tuning job ends interrupted; the process exits 0.
A stream longer than the drain deadline is cut at the deadline with UNAVAILABLE."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2_pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as v2_grpc

from adapters.jobs.store import JobState, JobStore
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL as MINILM
from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.models.defaults import write_default_manifests
from gateway.wire import caikit_data_model_nlp_pb2 as nlp_data
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import taskgate_tuning_pb2 as tuning_pb
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc
from tests.models import pin_fp32_generation
from tests.served import ServedProcess
from tests.tuning_data import topic_records

PROMPT = "<|im_start|>user\nTell me a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
SHUTTING_DOWN = "the server is shutting down"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def own_store(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default models with the test store's SmolLM2 export hard-linked in (no export here),
    and jobs of their own."""
    root = tmp_path_factory.mktemp("drain-store")
    write_default_manifests(root)
    pin_fp32_generation(root)
    for entry in (store / SMOL).iterdir():
        if entry.is_dir():
            shutil.copytree(entry, root / SMOL / entry.name, copy_function=os.link)
    return root


def _serve(store: Path, drain_s: float) -> ServedProcess:
    return ServedProcess(
        ["--preload", SMOL, "--shutdown-timeout-s", str(drain_s)], {"TASKGATE_MODEL_STORE": str(store)}
    )


class RestStream(threading.Thread):
    """A Caikit server-streaming generation over REST (SSE), read to its end in a thread."""

    def __init__(self, base_url: str, tokens: int) -> None:
        super().__init__(daemon=True)
        self.body = {
            "model_id": SMOL,
            "inputs": PROMPT,
            "parameters": {"max_new_tokens": tokens, "min_new_tokens": tokens},
        }
        self.url = f"{base_url}/api/v1/task/server-streaming-text-generation"
        self.events: list[dict[str, Any]] = []
        self.status = 0
        self.started = threading.Event()
        self.start()

    def run(self) -> None:
        with httpx.stream("POST", self.url, json=self.body, timeout=300) as response:
            self.status = response.status_code
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                    self.started.set()
        self.started.set()


class GrpcStream(threading.Thread):
    """The same over gRPC server streaming."""

    def __init__(self, address: str, tokens: int) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.request = nlp.ServerStreamingTextGenerationTaskRequest(
            text=PROMPT, max_new_tokens=tokens, min_new_tokens=tokens
        )
        self.chunks: list[Any] = []
        self.error: grpc.RpcError | None = None
        self.started = threading.Event()
        self.start()

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = nlp_grpc.NlpServiceStub(channel)
            try:
                for chunk in stub.ServerStreamingTextGenerationTaskPredict(
                    self.request, metadata=(("mm-model-id", SMOL),), timeout=300
                ):
                    self.chunks.append(chunk)
                    self.started.set()
            except grpc.RpcError as exc:
                self.error = exc
        self.started.set()


def _streams(served: ServedProcess, tokens: int) -> tuple[RestStream, GrpcStream]:
    rest, remote = RestStream(served.http, tokens), GrpcStream(served.grpc, tokens)
    assert rest.started.wait(120) and remote.started.wait(120)
    assert rest.events and remote.chunks, (rest.status, remote.error)  # both mid-stream
    return rest, remote


def _sigterm(served: ServedProcess) -> None:
    served.process.send_signal(signal.SIGTERM)


def _exit_code(served: ServedProcess) -> int:
    """Wait for the process to end by itself (``stop()`` would send a second signal)."""
    code = served.process.wait(timeout=120)
    served.stop()
    return code


def _until_not_ready(served: ServedProcess) -> httpx.Response:
    give_up = time.monotonic() + 30
    while True:
        ready = httpx.get(f"{served.http}/v2/health/ready", timeout=30)
        if ready.status_code != 200 or time.monotonic() > give_up:
            return ready
        time.sleep(0.01)


def _tuning_job(address: str) -> str:
    """A classifier job on MiniLM that runs far longer than the test: its id, once running."""
    records = topic_records(64, seed=1)
    data = tuning_pb.Data(
        inline=tuning_pb.Records(
            records=[tuning_pb.Record(text=r["text"], label=r["label"]) for r in records]
        )
    )
    hyper = struct_pb2.Struct()
    hyper.update({"num_epochs": 500, "batch_size": 8, "learning_rate": 1e-3})
    request = tuning_pb.CreateJobRequest(
        name="drained", method=tuning_pb.CLASSIFIER, base_model=MINILM, train=data, hyperparameters=hyper
    )
    with grpc.insecure_channel(address) as channel:
        stub = tuning_grpc.TuningStub(channel)
        job = stub.CreateJob(request, timeout=60)
        give_up = time.monotonic() + 180
        while not stub.GetJob(tuning_pb.JobRequest(job_id=job.id), timeout=30).HasField("progress"):
            assert time.monotonic() < give_up, "the tuning job did not start"
            time.sleep(0.1)
    return str(job.id)


@pytest.fixture
def served(own_store: Path) -> Iterator[ServedProcess]:
    server = _serve(own_store, drain_s=120)
    yield server
    server.stop()


def test_sigterm_drains_streams_refuses_new_work_interrupts_jobs_and_exits_0(
    served: ServedProcess, own_store: Path
) -> None:
    job_id = _tuning_job(served.grpc)
    rest, remote = _streams(served, tokens=64)
    _sigterm(served)

    # readiness goes false at once; liveness stays
    ready = _until_not_ready(served)
    assert ready.status_code == 503 and SHUTTING_DOWN in ready.json()["error"]
    assert httpx.get(f"{served.http}/v2/models/{SMOL}/ready", timeout=30).status_code == 503
    assert httpx.get(f"{served.http}/health", timeout=30).text == "OK"
    assert httpx.get(f"{served.http}/v2/health/live", timeout=30).json() == {"live": True}
    with grpc.insecure_channel(served.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        v2 = v2_grpc.GRPCInferenceServiceStub(channel)
        assert v2.ServerLive(v2_pb.ServerLiveRequest(), timeout=30).live
        with pytest.raises(grpc.RpcError) as not_ready:
            v2.ServerReady(v2_pb.ServerReadyRequest(), timeout=30)
        assert not_ready.value.code() == grpc.StatusCode.UNAVAILABLE

        # new work is refused with a clear message, over both transports
        with pytest.raises(grpc.RpcError) as refused:
            nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="late"), metadata=(("mm-model-id", MINILM),), timeout=30
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert SHUTTING_DOWN in (refused.value.details() or "")
    late = httpx.post(f"{served.http}/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "late"})
    assert late.status_code == 503 and SHUTTING_DOWN in late.json()["details"]
    assert late.headers["retry-after"] == "1"

    # the streams in flight finish normally, every token delivered
    rest.join(120)
    remote.join(120)
    assert rest.status == 200 and all("details" in e and "code" not in e for e in rest.events), rest.events[
        -1
    ]
    last = rest.events[-1]["details"]
    assert last["finish_reason"] == "MAX_TOKENS" and last["generated_tokens"] == 64
    assert remote.error is None, remote.error
    assert remote.chunks[-1].details.finish_reason == nlp_data.MAX_TOKENS
    assert remote.chunks[-1].details.generated_tokens == 64

    assert _exit_code(served) == 0
    assert "Taskgate stopped" in served.said and "Traceback" not in served.said, served.said
    jobs = JobStore(own_store / ".jobs" / "jobs.sqlite")
    try:
        job = jobs.get(job_id)
    finally:
        jobs.close()
    assert job.state is JobState.ERRORED and job.reasons == ("interrupted",)


def test_a_stream_longer_than_the_drain_deadline_is_cut_with_unavailable(own_store: Path) -> None:
    served = _serve(own_store, drain_s=2)
    try:
        rest, remote = _streams(served, tokens=1000)
        _sigterm(served)
        rest.join(120)
        remote.join(120)
        assert _exit_code(served) == 0
    finally:
        served.stop()
    # both got some tokens, then the error at the deadline: not a finished generation
    assert rest.status == 200 and len(rest.events) >= 2
    cut = rest.events[-1]
    assert cut["code"] == 503 and "shutting down" in cut["details"], cut
    assert all(e["details"]["finish_reason"] == "NOT_FINISHED" for e in rest.events[:-1])
    assert remote.chunks and remote.error is not None
    assert remote.error.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in (
        remote.error.details() or ""
    )
    assert all(chunk.details.finish_reason == nlp_data.NOT_FINISHED for chunk in remote.chunks)
    assert "drain deadline passed" in served.said, served.said
