"""The systems under test, each started as its own process and driven over loopback.

Every system serves the same MiniLM-L6 embedding (ONNX Runtime, or torch for Caikit) with the
same thread budget: 2 model threads in total on the 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import Call
from bench.rawhttp import RawHttpClient

ROOT = Path(__file__).resolve().parent.parent
MODEL = "all-MiniLM-L6-v2"
GRPC, REST = "gRPC", "REST"


@dataclass
class Running:
    grpc: str | None
    http: str | None
    pid: int | None = None  # the serving process (bench/profile_layers.py attaches a profiler)


def wait_for_line(process: subprocess.Popen[str], pattern: str, timeout_s: float = 300) -> re.Match[str]:
    """Read the server's output until ``pattern``; then keep draining it in a thread (a full
    pipe would block the server's logging, and with it the server)."""
    assert process.stdout is not None
    stream = process.stdout
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError(f"process exited ({process.returncode}) before printing {pattern!r}")
            continue
        match = re.search(pattern, line)
        if match:
            threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
            return match
    raise TimeoutError(f"no line matching {pattern!r} within {timeout_s} s")


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    with subprocess.Popen(
        command, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Taskgate:
    """Taskgate itself, with batching on (``batching=True``) or forced off (max_batch_size 1)."""

    def __init__(
        self, batching: bool, store: Path, workers: int = 2, intra_op: int = 1, extra: tuple[str, ...] = ()
    ) -> None:
        self.batching = batching
        self.extra = extra  # more `taskgate serve` flags
        self.store = store
        self.workers = workers
        self.intra_op = intra_op
        self.name = "taskgate" if batching else "taskgate-nobatch"
        from runtimes.base import ThreadSettings
        from runtimes.onnx_encoder import shared_pool_threads

        pool = shared_pool_threads(ThreadSettings(intra_op_threads=intra_op, model_workers=workers))
        self.threads = f"{workers} model workers sharing one ORT pool of {pool} intra-op thread(s)"

    @contextlib.contextmanager
    def serve(self) -> Iterator[Running]:
        command = [
            sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(self.store),
            "--grpc-port", "0", "--http-port", "0", "--preload", MODEL,
            "--intra-op-threads", str(self.intra_op), "--model-workers", str(self.workers),
            "--log-level", "warning", "--max-inflight-per-model", "1024", *self.extra,
        ]  # fmt: skip
        with process(command) as proc:
            match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)")
            running = Running(match.group(1), match.group(2), proc.pid)
            url = f"{running.http}/management/models/{MODEL}/batching"
            settings = {"max_batch_size": 32 if self.batching else 1, "max_queue_rows": 4096}
            httpx.put(url, json=settings).raise_for_status()
            yield running

    @contextlib.asynccontextmanager
    async def client(self, running: Running, transport: str, text: str) -> AsyncIterator[Call]:
        if transport == GRPC:
            import grpc

            from gateway.wire import caikit_runtime_nlp_pb2 as nlp
            from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

            assert running.grpc
            async with grpc.aio.insecure_channel(running.grpc) as channel:
                stub = nlp_grpc.NlpServiceStub(channel)
                request = nlp.EmbeddingTaskRequest(text=text)
                metadata = (("mm-model-id", MODEL),)
                yield lambda: stub.EmbeddingTaskPredict(request, metadata=metadata)
        else:
            client = RawHttpClient(running.http or "")
            request = client.request_bytes("/api/v1/task/embedding", {"model_id": MODEL, "inputs": text})
            try:
                yield lambda: client.send(request)
            finally:
                await client.close()
