"""The peers for the encoder benchmark: KServe's Python ModelServer and Caikit (bench/peers/)."""

from __future__ import annotations

import contextlib
import importlib
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

from bench.loadgen import Call
from bench.rawhttp import RawHttpClient
from bench.systems import GRPC, MODEL, ROOT, Running, process, wait_for_line

PEERS = ROOT / "bench" / "peers"
THREADS = 2  # one model process with 2 intra-op threads: the same 2 model threads as Taskgate


def _oip_stubs() -> tuple[ModuleType, ModuleType]:
    """Generate the OIP v2 ModelInfer client stubs (bench/peers/oip_v2_infer.proto) once."""
    out = Path(tempfile.gettempdir()) / "taskgate-bench-oip"
    if not (out / "oip_v2_infer_pb2_grpc.py").is_file():
        from grpc_tools import protoc

        out.mkdir(exist_ok=True)
        include = Path(protoc.__file__).parent / "_proto"
        args = ["protoc", f"-I{PEERS}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        if protoc.main([*args, str(PEERS / "oip_v2_infer.proto")]) != 0:
            raise RuntimeError("protoc failed for the OIP v2 stubs")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("oip_v2_infer_pb2"), importlib.import_module("oip_v2_infer_pb2_grpc")


class KServe:
    name = "kserve"
    threads = f"1 process, ORT intra-op {THREADS}, predict() on the event loop (KServe's default)"

    def __init__(self, store: Path) -> None:
        # the very ONNX export Taskgate serves, from the benchmark's own store (read only)
        self.model_dir = store / MODEL / "onnx-feature-extraction"

    @contextlib.contextmanager
    def serve(self) -> Iterator[Running]:
        python = str(ROOT / "bench" / ".venv-kserve" / "bin" / "python")
        command = [
            python, str(PEERS / "kserve_server.py"), "--http-port", "18090", "--grpc-port", "18091",
            "--threads", str(THREADS), "--latency-logging", "false", "--model-dir", str(self.model_dir),
        ]  # fmt: skip
        with process(command) as proc:
            match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)")
            yield Running(match.group(1), match.group(2))

    @contextlib.asynccontextmanager
    async def client(self, running: Running, transport: str, text: str) -> AsyncIterator[Call]:
        if transport == GRPC:
            import grpc

            pb2, pb2_grpc = _oip_stubs()
            tensor = pb2.ModelInferRequest.InferInputTensor(
                name="text",
                datatype="BYTES",
                shape=[1],
                contents=pb2.InferTensorContents(bytes_contents=[text.encode()]),
            )
            request = pb2.ModelInferRequest(model_name=MODEL, inputs=[tensor])
            async with grpc.aio.insecure_channel(running.grpc or "") as channel:
                stub = pb2_grpc.GRPCInferenceServiceStub(channel)
                yield lambda: stub.ModelInfer(request)
        else:
            client = RawHttpClient(running.http or "")
            body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
            request_bytes = client.request_bytes(f"/v2/models/{MODEL}/infer", body)
            try:
                yield lambda: client.send(request_bytes)
            finally:
                await client.close()


class Caikit:
    name = "caikit"
    threads = f"1 process, torch {THREADS} threads (caikit-nlp EmbeddingModule, sentence-transformers)"

    @contextlib.contextmanager
    def serve(self) -> Iterator[Running]:
        python = str(ROOT / "bench" / ".venv-caikit" / "bin" / "python")
        command = [
            python, str(PEERS / "caikit_server.py"), "--http-port", "18095", "--grpc-port", "18096",
            "--threads", str(THREADS), "--metrics-port", "18097",
        ]  # fmt: skip
        with process(command) as proc:
            match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)")
            yield Running(match.group(1), match.group(2))

    @contextlib.asynccontextmanager
    async def client(self, running: Running, transport: str, text: str) -> AsyncIterator[Call]:
        if transport == GRPC:  # Caikit speaks the same NlpService: our generated stubs are the client
            import grpc

            from gateway.wire import caikit_runtime_nlp_pb2 as nlp
            from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

            request = nlp.EmbeddingTaskRequest(text=text)
            async with grpc.aio.insecure_channel(running.grpc or "") as channel:
                stub = nlp_grpc.NlpServiceStub(channel)
                yield lambda: stub.EmbeddingTaskPredict(request, metadata=(("mm-model-id", MODEL),))
        else:
            client = RawHttpClient(running.http or "")
            request_bytes = client.request_bytes(
                "/api/v1/task/embedding", {"model_id": MODEL, "inputs": text}
            )
            try:
                yield lambda: client.send(request_bytes)
            finally:
                await client.close()


def peer_systems(store: Path) -> list[object]:
    """The peers; KServe serves the MiniLM export in ``store`` (the benchmark's own)."""
    return [KServe(store), Caikit()]
