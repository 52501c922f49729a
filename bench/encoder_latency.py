"""Single-request latency: raw in-process runtime vs the gateway over gRPC and over REST.

    .venv/bin/python bench/encoder_latency.py [--rounds 5] [--calls 200] [--threads 1]

The gateway runs as its own process (``taskgate serve`` on ephemeral loopback ports) with the
same thread settings as the raw runtime: 2 model workers x ``--threads``, which an ONNX encoder
holds as one intra-op pool (runtimes.onnx_encoder.shared_pool_threads; a lone request uses all of
it), so the raw runtime runs one call at a time on a session with that pool. Each round measures
raw, gRPC and REST back to back; the table shows medians over all calls and the median of the
per-round overheads, so a noisy neighbour hits all three columns alike. Not a test: numbers go
to stdout. Runs on its own model store, bench/.stores/encoder_latency/ (bench/stores.py), never
./model-store.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stores import prepare_store, store_path  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
STORE = store_path("encoder_latency")  # its own store, never ./model-store (bench/stores.py)
TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."  # 16 tokens


def _timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (both sides)")
    parser.add_argument("--store", type=Path, default=STORE, help="its own model store (not a user's)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import grpc
    import httpx

    from gateway.models.store import ModelStore
    from gateway.wire import caikit_runtime_nlp_pb2 as nlp
    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
    from runtimes.base import ThreadSettings
    from runtimes.onnx_encoder import OnnxEncoder, shared_pool_threads

    store = prepare_store(args.store)
    manifest = ModelStore(store).manifest(MODEL)
    raw = OnnxEncoder(
        source=manifest.source,
        work_dir=manifest.folder,
        options={},
        threads=ThreadSettings(intra_op_threads=args.threads, inter_op_threads=1, model_workers=2),
    )
    raw.load()

    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--model-store",
        str(store),
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--preload",
        MODEL,
        "--intra-op-threads",
        str(args.threads),
        "--log-level",
        "warning",
    ]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        line = ""
        while "Taskgate serving" not in line:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                raise SystemExit("gateway exited before serving")
        match = re.search(r"gRPC (\S+)\s+HTTP (\S+)", line)
        assert match
        grpc_address, http_address = match.groups()
        channel = grpc.insecure_channel(grpc_address)
        stub = nlp_grpc.NlpServiceStub(channel)
        http = httpx.Client(base_url=http_address)
        request = nlp.EmbeddingTaskRequest(text=TEXT)
        body = {"model_id": MODEL, "inputs": TEXT}
        calls: dict[str, Callable[[], object]] = {
            "raw runtime": lambda: raw.run_batch(raw.tokenize([TEXT], None)),
            "gRPC": lambda: stub.EmbeddingTaskPredict(request, metadata=(("mm-model-id", MODEL),)),
            "REST": lambda: http.post("/api/v1/task/embedding", json=body).raise_for_status(),
        }
        for call in calls.values():  # warm-up
            _timed(call, 20)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        overhead: dict[str, list[float]] = {"gRPC": [], "REST": []}
        for _ in range(args.rounds):
            medians = {}
            for name, call in calls.items():
                times = _timed(call, args.calls)
                samples[name] += times
                medians[name] = statistics.median(times)
            for name in overhead:
                overhead[name].append(medians[name] - medians["raw runtime"])
        http.close()
        channel.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    print(
        f"\nSingle-request embedding latency, MiniLM-L6 ONNX, 16-token text, ORT pool of "
        f"{shared_pool_threads(ThreadSettings(intra_op_threads=args.threads, model_workers=2))} thread(s)"
    )
    print(f"{args.rounds} rounds x {args.calls} calls each; client and gateway on one 2-core machine\n")
    print("| path | p50 ms | p90 ms | p99 ms | p50 overhead vs raw (median of rounds) |")
    print("|---|---|---|---|---|")
    for name, times in samples.items():
        q = statistics.quantiles(times, n=100)
        extra = f"+{statistics.median(overhead[name]):.2f} ms" if name in overhead else "—"
        print(f"| {name} | {statistics.median(times):.2f} | {q[89]:.2f} | {q[98]:.2f} | {extra} |")


if __name__ == "__main__":
    main()
