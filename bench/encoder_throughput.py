"""Encoder throughput and latency: raw ONNX Runtime vs Taskgate (batching on / off) vs peers.

    .venv/bin/python bench/encoder_throughput.py                 # full matrix (~10 min)
    .venv/bin/python bench/encoder_throughput.py --quick         # 32 clients, short, gRPC+REST
    .venv/bin/python bench/encoder_throughput.py --plot-only     # redraw the PNG from the JSON

Systems, each alone on the machine while measured: (a) raw in-process ONNX Runtime at its best
batch size (the hardware limit), (b) Taskgate, (c) Taskgate with batching off, (d) KServe's
Python ModelServer hosting the same ONNX model, (e) Caikit with caikit-nlp's EmbeddingModule
(see bench/peers/). Closed loop over 1..64 clients and open loop (Poisson arrivals at 80 % of
the system's best closed-loop rate). Writes bench/results/encoder_throughput.{md,json,png}
(encoder_throughput-partial.* for a run narrower than the full matrix). (a), (b), (c) and (d) use
the export in this benchmark's own store, bench/.stores/encoder_throughput/ (bench/stores.py),
where the batching-off run's max_batch_size 1 stays too; ./model-store is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Sample, closed_loop, open_loop  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import GRPC, MODEL, REST, Taskgate  # noqa: E402

INPUTS = {
    "short": "The quick brown fox jumps over the lazy dog near the quiet river bank.",  # 16 tokens
    "long": " ".join(
        ["Serving many small models well means batching requests, bounding queues and shedding load early"]
        * 8
    ),  # ~128 tokens
}
RESULTS = ROOT / "bench" / "results"
STORE = store_path("encoder_throughput")  # its own store, never ./model-store


@dataclass
class Row:
    system: str
    transport: str
    inputs: str
    mode: str
    clients: int
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int
    loadgen_cpu: float


def raw_runtime(store: Path, inputs: str, seconds: float) -> tuple[float, int, float, float]:
    """(best rows/s, its batch size, batch-1 p50 ms, batch-1 p50 ms with both cores): 2 threads
    each calling a session of 1 intra-op thread; the last, one call at a time on a session of 2."""
    from gateway.models.store import ModelStore
    from runtimes.base import ThreadSettings
    from runtimes.onnx_encoder import OnnxEncoder

    manifest = ModelStore(store).manifest(MODEL)

    def session(threads: int) -> OnnxEncoder:
        encoder = OnnxEncoder(
            source=manifest.source,
            work_dir=manifest.folder,
            options={},
            threads=ThreadSettings(intra_op_threads=threads, model_workers=1),  # a pool of `threads`
        )
        encoder.load()
        return encoder

    text = INPUTS[inputs]

    def batch1_p50(encoder: OnnxEncoder) -> float:
        for _ in range(20):  # warm-up
            encoder.run_batch(encoder.tokenize([text], None))
        latencies = []
        for _ in range(200):
            start = time.perf_counter()
            encoder.run_batch(encoder.tokenize([text], None))
            latencies.append((time.perf_counter() - start) * 1000)
        return statistics.median(latencies)

    wide = session(2)
    both_cores_p50 = batch1_p50(wide)
    wide.unload()
    encoder = session(1)
    one_thread_p50 = batch1_p50(encoder)
    best = (0.0, 1)
    for batch in (1, 8, 16, 32, 64):
        texts = [text] * batch
        counts = [0, 0]
        stop = time.perf_counter() + seconds

        def loop(slot: int, texts: list[str] = texts, counts: list[int] = counts, stop: float = stop) -> None:
            while time.perf_counter() < stop:
                encoder.run_batch(encoder.tokenize(texts, None))
                counts[slot] += len(texts)

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rate = sum(counts) / (time.perf_counter() - started)
        best = max(best, (rate, batch))
    encoder.unload()
    return best[0], best[1], one_thread_p50, both_cores_p50


async def measure(system: object, running: object, args: argparse.Namespace, rows: list[Row]) -> None:
    for transport in args.transports:
        for inputs in args.inputs:
            async with system.client(running, transport, INPUTS[inputs]) as call:  # type: ignore[attr-defined]
                await closed_loop(call, 4, 0.5, warmup_s=0.5)  # warm the connection pool and model
                best = 0.0
                for clients in args.clients:
                    runs = [await closed_loop(call, clients, args.duration) for _ in range(args.repeats)]
                    sample = sorted(runs, key=lambda s: s.throughput)[len(runs) // 2]
                    rows.append(_row(system.name, transport, inputs, "closed", clients, sample))  # type: ignore[attr-defined]
                    best = max(best, sample.throughput)
                    print(_fmt(rows[-1]), flush=True)
                if args.open_loop and best > 0:
                    sample = await open_loop(call, 0.8 * best, 512, args.duration)
                    rows.append(_row(system.name, transport, inputs, "open@0.8", 0, sample))  # type: ignore[attr-defined]
                    print(_fmt(rows[-1]), flush=True)


def _row(system: str, transport: str, inputs: str, mode: str, clients: int, sample: Sample) -> Row:
    return Row(
        system, transport, inputs, mode, clients, sample.throughput,
        sample.quantile(0.5), sample.quantile(0.99), sample.errors, sample.cpu_share,
    )  # fmt: skip


def _fmt(row: Row) -> str:
    return (
        f"| {row.system} | {row.transport} | {row.inputs} | {row.mode} | {row.clients or '-'} | "
        f"{row.throughput:.0f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.errors} | {row.loadgen_cpu:.2f} |"
    )


HEADER = (
    "| system | transport | inputs | mode | clients | req/s | p50 ms | p99 ms | errors | loadgen cores |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default="taskgate,taskgate-nobatch,kserve,caikit")
    parser.add_argument("--clients", default="1,4,16,32,64")
    parser.add_argument("--inputs", default="short,long")
    parser.add_argument("--transports", default=f"{GRPC},{REST}")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the median is kept")
    parser.add_argument("--no-open-loop", dest="open_loop", action="store_false")
    parser.add_argument("--quick", action="store_true", help="32 clients, short inputs only")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON results")
    args = parser.parse_args()
    args.stem = results_stem(
        "encoder_throughput",
        parser,
        args,
        ("systems", "clients", "inputs", "transports", "quick", "open_loop"),
    )
    try:
        import matplotlib  # noqa: F401  (checked now, not after a 25-minute run)
    except ImportError:
        sys.exit("matplotlib is missing: pip install -e '.[bench]' (make bench does)")
    if args.plot_only:
        saved = json.loads((RESULTS / f"{args.stem}.json").read_text())
        plot([Row(**r) for r in saved["rows"]], args.stem)
        return
    if args.quick:
        args.clients, args.inputs = "1,32", "short"
    args.clients = [int(c) for c in args.clients.split(",")]
    args.inputs = args.inputs.split(",")
    args.transports = args.transports.split(",")

    from bench.peers_systems import peer_systems

    store = prepare_store(STORE)  # default manifests afresh: batching settings reset
    systems = [Taskgate(True, store), Taskgate(False, store), *peer_systems(store)]
    candidates = {s.name: s for s in systems}
    raw = {}
    for inputs in args.inputs:  # the first load also exports MiniLM into the store, for every system
        rate, batch, p50, p50_2 = raw_runtime(store, inputs, args.duration)
        raw[inputs] = {
            "rows_per_s": rate, "best_batch": batch, "batch1_p50_ms": p50, "batch1_p50_2_threads_ms": p50_2,
        }  # fmt: skip
        print(
            f"raw ONNX Runtime, {inputs}: {rate:.0f} rows/s at batch {batch}; batch-1 p50 {p50:.2f} ms "
            f"(1 thread), {p50_2:.2f} ms (2 threads)"
        )
    rows: list[Row] = []
    print(HEADER)
    for name in args.systems.split(","):
        system = candidates[name]
        with system.serve() as running:
            asyncio.run(measure(system, running, args, rows))
    report(args, raw, rows, candidates)


def report(args: argparse.Namespace, raw: dict, rows: list[Row], systems: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.json").write_text(
        json.dumps({"raw": raw, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    lines = [
        "# Encoder benchmark",
        "",
        "Threads: " + "; ".join(f"{n}: {s.threads}" for n, s in systems.items()),
    ]
    lines += ["", "Raw ONNX Runtime (2 threads x 1 intra-op):", ""]
    for inputs, value in raw.items():
        lines.append(
            f"- {inputs}: {value['rows_per_s']:.0f} rows/s at batch {value['best_batch']}, "
            f"batch-1 p50 {value['batch1_p50_ms']:.2f} ms (1 thread), "
            f"{value['batch1_p50_2_threads_ms']:.2f} ms (one session of 2 intra-op threads)"
        )
    lines += ["", HEADER, *(_fmt(r) for r in rows), "", "## Ratios (closed loop, short inputs)", ""]

    def pick(system: str, transport: str, clients: int) -> Row | None:
        return next(
            (r for r in rows if (r.system, r.transport, r.inputs, r.mode, r.clients)
             == (system, transport, "short", "closed", clients)),
            None,
        )  # fmt: skip

    for transport in args.transports:
        ours = pick("taskgate", transport, 32)
        if ours is None:
            continue
        if "short" in raw:
            lines.append(
                f"- {transport}, 32 clients: (b)/(a) = {ours.throughput / raw['short']['rows_per_s']:.2f}"
            )
        for name, label in (("taskgate-nobatch", "(c)"), ("kserve", "(d)"), ("caikit", "(e)")):
            other = pick(name, transport, 32)
            if other and other.throughput:
                lines.append(
                    f"- {transport}, 32 clients: (b)/{label} = {ours.throughput / other.throughput:.2f}"
                )
        single = pick("taskgate", transport, 1)
        if single and "short" in raw:
            extra = single.p50_ms - raw["short"]["batch1_p50_ms"]
            both = single.p50_ms - raw["short"]["batch1_p50_2_threads_ms"]
            lines.append(f"- {transport}, 1 client: (b) p50 - (a) batch-1 p50 = {extra:+.2f} ms")
            lines.append(
                f"- {transport}, 1 client: (b) p50 - (a) batch-1 p50 with both cores = {both:+.2f} ms "
                "(target <= +1 ms)"
            )
    (RESULTS / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[lines.index("## Ratios (closed loop, short inputs)") :]))
    plot(rows, args.stem)


def plot(rows: list[Row], stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    keys = sorted({(r.system, r.transport, r.inputs) for r in rows if r.mode == "closed"})
    systems = sorted({k[0] for k in keys})
    colour = {name: f"C{i}" for i, name in enumerate(systems)}  # colour: system
    dash = {GRPC: "-", REST: "--"}  # line: transport; marker: input length
    for system, transport, inputs in keys:
        style = {
            "color": colour[system],
            "linestyle": dash.get(transport, ":"),
            "marker": "o" if inputs == "short" else "s",
        }
        series = [
            r
            for r in rows
            if (r.system, r.transport, r.inputs, r.mode) == (system, transport, inputs, "closed")
        ]
        label = f"{system} {transport} {inputs}"
        left.plot([r.clients for r in series], [r.throughput for r in series], label=label, **style)
        right.plot([r.throughput for r in series], [r.p99_ms for r in series], label=label, **style)
    left.set(
        xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="Throughput vs concurrency"
    )
    right.set(yscale="log", xlabel="requests/s", ylabel="p99 latency (ms)", title="p99 vs throughput")
    left.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=110)


if __name__ == "__main__":
    main()
