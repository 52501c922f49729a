"""The doors side by side: one Taskgate process, one model, the same text, 32 closed-loop clients
over REST through each door in turn (Caikit's task route, KServe v2 JSON, KServe v2 binary,
OpenAI embeddings), repeated; prints each door's throughput and latency and its ratio to the
Caikit route measured in the same run (medians of the repeats).

    .venv/bin/python bench/doors.py                     # 3 repeats x 8 s per door
    .venv/bin/python bench/doors.py --repeats 5 --seconds 10 --clients 32

Uses its own store (bench/.stores/doors/); ./model-store is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import closed_loop  # noqa: E402
from bench.rawhttp import RawHttpClient  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import MODEL, Taskgate  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
STORE = store_path("doors")


def _binary_v2(client: RawHttpClient) -> bytes:
    """A v2 infer request with the BYTES input as binary data (Inference-Header-Content-Length)."""
    raw = TEXT.encode()
    element = struct.pack("<I", len(raw)) + raw
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(element)},
            }
        ],
        "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    body = head + element
    path = f"/v2/models/{MODEL}/infer"
    start = (
        f"POST {path} HTTP/1.1\r\nHost: {client.host}:{client.port}\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(head)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return start.encode() + body


def _requests(client: RawHttpClient) -> dict[str, bytes]:
    v2_json = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
    return {
        "caikit": client.request_bytes("/api/v1/task/embedding", {"model_id": MODEL, "inputs": TEXT}),
        "v2-json": client.request_bytes(f"/v2/models/{MODEL}/infer", v2_json),
        "v2-binary": _binary_v2(client),
        "openai": client.request_bytes("/v1/embeddings", {"model": MODEL, "input": TEXT}),
    }


async def _door(http: str, name: str, clients: int, seconds: float) -> tuple[float, float, float, int]:
    client = RawHttpClient(http)
    request = _requests(client)[name]
    call: Callable[[], Awaitable[object]] = lambda: client.send(request)  # noqa: E731
    try:
        await call()  # fails loudly if the door refuses the request
        sample = await closed_loop(call, clients, seconds)
    finally:
        await client.close()
    return sample.throughput, sample.quantile(0.5), sample.quantile(0.99), sample.errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    prepare_store(STORE)
    doors = ("caikit", "v2-json", "v2-binary", "openai")
    runs: dict[str, list[tuple[float, float, float, int]]] = {door: [] for door in doors}
    with Taskgate(batching=True, store=STORE).serve() as running:
        assert running.http
        for repeat in range(args.repeats):
            for door in doors:  # interleaved, so drift on a shared machine hits every door alike
                runs[door].append(asyncio.run(_door(running.http, door, args.clients, args.seconds)))
                rps, p50, p99, errors = runs[door][-1]
                line = f"{rps:7.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  errors {errors}"
                print(f"  repeat {repeat + 1} {door:10s} {line}")
    base = statistics.median(r[0] for r in runs["caikit"])
    print(
        f"\n{args.clients} clients, REST, model {MODEL}, medians of {args.repeats} runs of {args.seconds:g} s"
    )
    print(f"{'door':10s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'÷ caikit':>9s}")
    for door in doors:
        rps = statistics.median(r[0] for r in runs[door])
        p50 = statistics.median(r[1] for r in runs[door])
        p99 = statistics.median(r[2] for r in runs[door])
        print(f"{door:10s} {rps:8.1f} {p50:8.1f} {p99:8.1f} {rps / base:9.2f}")


if __name__ == "__main__":
    main()
