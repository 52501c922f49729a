"""KServe peer: all-MiniLM-L6-v2 (Taskgate's ONNX export) behind kserve 0.21.0's Python ModelServer.

    HF_HUB_OFFLINE=1 bench/.venv-kserve/bin/python bench/peers/kserve_server.py \
        --http-port 8090 --grpc-port 8091 --threads 1

Open Inference Protocol v2: REST ``POST /v2/models/all-MiniLM-L6-v2/infer`` and gRPC
``inference.GRPCInferenceService/ModelInfer``; input one BYTES tensor ``text`` of shape [n], output
FP32 ``embedding`` [n, 384]. One request -> one ``predict`` (no batching), as a plain KServe custom
model does. No Taskgate code: ONNX Runtime session + ``tokenizers`` + numpy mean pooling and L2
normalisation, the same maths as Taskgate's ``runtimes/onnx_encoder.py``.

Prints ``KServe peer serving: gRPC 127.0.0.1:<p>  HTTP http://127.0.0.1:<p>`` once both listeners
answer. kserve 0.21.0 hard-codes its listen addresses (uvicorn ``host="0.0.0.0"`` in
``kserve/protocol/rest/server.py``, gRPC ``[::]:<port>`` in ``kserve/protocol/grpc/server.py``) and
has no flag or env var for them, so this script patches both to 127.0.0.1 before starting.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# read only, the first that holds model.onnx: the encoder benchmark's own store (bench/stores.py),
# else the test suite's store
DEFAULT_MODEL_DIR = (
    ROOT / "bench" / ".stores" / "encoder_throughput" / "all-MiniLM-L6-v2" / "onnx-feature-extraction"
)
FALLBACK_MODEL_DIR = ROOT / ".cache" / "test-store" / "all-MiniLM-L6-v2" / "onnx-feature-extraction"
HOST = "127.0.0.1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http-port", type=int, default=8090)
    parser.add_argument("--grpc-port", type=int, default=8091)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra_op_num_threads")
    parser.add_argument("--inter-threads", type=int, default=1, help="ORT inter_op_num_threads")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="folder with model.onnx + tokenizer.json"
    )
    parser.add_argument("--model-name", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-tokens", type=int, default=256, help="truncation length (Taskgate: 256)")
    parser.add_argument("--no-grpc", action="store_true", help="REST only")
    parser.add_argument(
        "--latency-logging",
        choices=["true", "false"],
        default="true",
        help="KServe's per-request latency log line (KServe default: true)",
    )
    parser.add_argument("--grpc-max-threads", type=int, default=4, help="KServe --max_threads (default 4)")
    args, _unknown = parser.parse_known_args()
    if args.model_dir is None:
        args.model_dir = (
            DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "model.onnx").is_file() else FALLBACK_MODEL_DIR
        )
    return args


ARGS = parse_args()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# kserve.model_server parses sys.argv at import time (parse_known_args); hand it none of ours.
sys.argv = sys.argv[:1]

import kserve  # noqa: E402
import kserve.protocol.grpc.server as _kserve_grpc_server  # noqa: E402
import kserve.protocol.rest.server as _kserve_rest_server  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from grpc import aio as _grpc_aio  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

# -- bind to loopback only (kserve 0.21.0 has no option for the listen address) -------------------
_orig_rest_init = _kserve_rest_server.RESTServer.__init__


def _rest_init_loopback(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    _orig_rest_init(self, *args, **kwargs)
    self.config.host = HOST  # the uvicorn.Config shared with self._server, read when it binds


_kserve_rest_server.RESTServer.__init__ = _rest_init_loopback


class _LoopbackAio:
    """Stands in for ``grpc.aio`` inside kserve's gRPC module; rewrites ``[::]:port``."""

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(_grpc_aio, name)

    @staticmethod
    def server(*args, **kwargs):  # type: ignore[no-untyped-def]
        server = _grpc_aio.server(*args, **kwargs)
        add = server.add_insecure_port
        server.add_insecure_port = lambda address: add(address.replace("[::]", HOST).replace("0.0.0.0", HOST))
        return server


_kserve_grpc_server.aio = _LoopbackAio()


# -- the model -------------------------------------------------------------------------------------
class MiniLMEmbedder(kserve.Model):
    def __init__(self, name: str, model_dir: Path, threads: int, inter_threads: int, max_tokens: int):
        super().__init__(name)
        self.model_dir = model_dir
        self.threads = threads
        self.inter_threads = inter_threads
        self.max_tokens = max_tokens
        self.session: ort.InferenceSession | None = None
        self.tokenizer: Tokenizer | None = None
        self.input_names: tuple[str, ...] = ()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = self.inter_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.model_dir / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_tokens)
        pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token="[PAD]")
        self.tokenizer = tokenizer
        self.ready = True
        return self.ready

    def embed(self, texts: list[str]) -> np.ndarray:
        assert self.session is not None and self.tokenizer is not None
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = np.asarray(
            self.session.run(None, {n: feeds[n] for n in self.input_names})[0], dtype=np.float32
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32)

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest) or len(payload.inputs) != 1:
            raise InvalidInput("expected an OIP v2 request with one BYTES input tensor of texts")
        tensor = payload.inputs[0]
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"input datatype must be BYTES, got {tensor.datatype}")
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in tensor.as_numpy().reshape(-1)]
        if not texts:
            raise InvalidInput("no texts")
        vectors = self.embed(texts)
        output = InferOutput(name="embedding", shape=list(vectors.shape), datatype="FP32")
        # JSON numbers over REST, raw_output_contents over gRPC (KServe's choice for each).
        output.set_data_from_numpy(vectors, binary_data=payload.from_grpc)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[output],
            from_grpc=payload.from_grpc,
        )


def _announce_when_listening(http_port: int, grpc_port: int | None) -> None:
    import socket

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{http_port}/v2/health/ready", timeout=1) as r:
                http_ok = r.status == 200
        except OSError:
            http_ok = False
        grpc_ok = True
        if grpc_port is not None:
            try:
                socket.create_connection((HOST, grpc_port), timeout=1).close()
            except OSError:
                grpc_ok = False
        if http_ok and grpc_ok:
            grpc_part = f"gRPC {HOST}:{grpc_port}" if grpc_port is not None else "gRPC off"
            print(f"KServe peer serving: {grpc_part}  HTTP http://{HOST}:{http_port}", flush=True)
            return
        time.sleep(0.1)
    print("KServe peer: listeners did not come up within 120 s", flush=True)


def main() -> None:
    model = MiniLMEmbedder(ARGS.model_name, ARGS.model_dir, ARGS.threads, ARGS.inter_threads, ARGS.max_tokens)
    model.load()
    server = kserve.ModelServer(
        http_port=ARGS.http_port,
        grpc_port=ARGS.grpc_port,
        workers=1,
        max_threads=ARGS.grpc_max_threads,
        enable_grpc=not ARGS.no_grpc,
        enable_latency_logging=ARGS.latency_logging == "true",
    )
    threading.Thread(
        target=_announce_when_listening,
        args=(ARGS.http_port, None if ARGS.no_grpc else ARGS.grpc_port),
        daemon=True,
    ).start()
    server.start([model])


if __name__ == "__main__":
    main()
