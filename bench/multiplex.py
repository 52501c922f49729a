"""Many models in one process: the multiplexer under a memory budget vs everything preloaded.

    .venv/bin/python bench/multiplex.py                          # 200 models, 3 x 60 s (~6 min)
    .venv/bin/python bench/multiplex.py --duration 15 --warmup 5 --runs lfu-size,lru   # smoke

Prepares (once, under bench/.multiplex/, see bench/multiplex_models.py) ``--models`` small BERT
encoders with MiniLM's tokenizer in a model store, exported to ONNX. Then runs of the gateway
as its own process, each driven by ``--clients`` closed-loop gRPC clients (EmbeddingTaskPredict)
that pick a model per request by Zipf(s) over the models (p_k ~ k^-s, a seeded rank -> model
permutation; the same seed in every run):

- lfu-size, lru: ``--memory-budget-bytes`` = ``--fit`` x the mean model size, 2 concurrent
  loads, ``--eviction-policy`` the run's name (gateway/models/eviction.py);
- preloaded: no budget, every model loaded (POST /management/models/{id}/load) before traffic.

Against Belady: each budget run records its trace (every request's model, as the clients picked
them) and the sizes the registry gave (its log); bench/multiplex_policy.py computes Belady's
offline optimum on them and replays both policies (the cross-check of the measured hit ratio).
Idle loads: two models of each size class loaded and unloaded one at a time before traffic;
cold loads under traffic are compared with the idle median of their size class.

Hit ratio, loads and evictions are deltas of the server's counters over the measured window. A
request that waits for a load another request started counts as a miss; "1 - loads / requests"
counts it as a hit, which is what the best static hit ratio (the top --fit models always cached)
compares with.
Cold-load times come from the registry's own "loaded model X in Y s" log line (one per load, 10 ms
resolution; the server runs at --log-level info, which logs only loads, unloads and exports); the
taskgate_model_load_seconds histogram gives the exact mean, but its default Prometheus buckets
(..0.25, 0.5, 0.75, 1 s..) are too coarse for quantiles of sub-second loads. Peak RSS is VmRSS of
the server sampled every 50 ms from traffic start. Overhead is the RSS after one model was loaded
and unloaded (start-up RSS excludes ONNX Runtime, tokenizers and transformers, imported lazily).
Writes bench/results/multiplex.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.loadgen import Sample, closed_loop  # noqa: E402
from bench.multiplex_models import STORE, model_ids, prepare, size_class  # noqa: E402
from bench.multiplex_policy import POLICIES, Picker, idle_models, policy_lines, replay  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.systems import process  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
MB = 1024 * 1024


def zipf(count: int, s: float) -> list[float]:
    weights = [k**-s for k in range(1, count + 1)]
    return [w / sum(weights) for w in weights]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return

    def reset(self) -> None:
        self.peak = rss(self.pid)


class ServerLog:
    """Reads the server's output up to the "Taskgate serving" line, then drains it in a thread
    (as bench/systems.py does), keeping loads, exports and warnings with the time they were read."""

    LOADED = re.compile(r"\bloaded model (\S+) in ([\d.]+) s \((\d+) bytes, (\d+) reserved")

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        # (when, model, seconds, size it was given, bytes its load reserved)
        self.loads: list[tuple[float, str, float, int, int]] = []
        self.exports: list[float] = []
        self.problems: list[str] = []
        for line in proc.stdout:
            match = re.search(r"gRPC (\S+)\s+HTTP (\S+)", line)
            if match:
                self.grpc, self.http = match.group(1), match.group(2)
                break
        else:
            raise RuntimeError(f"the gateway exited ({proc.wait()}) before serving")
        threading.Thread(target=self._drain, args=(proc.stdout,), daemon=True).start()

    def _drain(self, stream: Iterable[str]) -> None:
        for line in stream:
            now = time.monotonic()
            if match := self.LOADED.search(line):
                self.loads.append((now, match[1], float(match[2]), int(match[3]), int(match[4])))
            elif "exporting" in line:
                self.exports.append(now)
            if re.search(r"WARNING|ERROR|CRITICAL|Traceback", line):
                self.problems.append(line.strip()[:300])


def scrape(http: str) -> Counter[str]:  # float values for the _sum series
    from prometheus_client.parser import text_string_to_metric_families

    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{http}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "taskgate_model_cache_total":
                totals[sample.labels["result"]] += int(sample.value)
            elif sample.name.endswith(("_seconds_count", "_seconds_sum")):
                totals[sample.name] += sample.value
    return totals


def quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def serve_command(budget: int, loads: int, policy: str) -> list[str]:
    args = [
        "serve", "--model-store", str(STORE), "--grpc-port", "0", "--http-port", "0", "--log-level", "info",
    ]  # fmt: skip
    flags = ["--memory-budget-bytes", str(budget), "--max-concurrent-loads", str(loads)] if budget else []
    flags += ["--eviction-policy", policy] if budget else []
    return [sys.executable, "-m", "gateway.cli", *args, *flags]


async def traffic(
    server: ServerLog, sampler: RssSampler, pick: Picker, args: argparse.Namespace
) -> tuple[Sample, Counter[str], Counter[str], Counter[str], tuple[float, float]]:
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2 as nlp
    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(server.grpc) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        request = nlp.EmbeddingTaskRequest(text=TEXT)

        async def call() -> None:
            metadata = (("mm-model-id", pick()),)
            try:
                await stub.EmbeddingTaskPredict(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                raise

        sampler.reset()
        await closed_loop(call, args.clients, args.warmup, warmup_s=0.0)
        errors.clear()
        before, started = await asyncio.to_thread(scrape, server.http), time.monotonic()
        pick.start = len(pick.trace)
        sample = await closed_loop(call, args.clients, args.duration, warmup_s=0.0)
        window = (started, time.monotonic())
        after = await asyncio.to_thread(scrape, server.http)
    return sample, errors, before, after, window


def run(name: str, budget: int, ids: list[str], ranked: list[str], args: argparse.Namespace) -> dict:
    print(f"--- {name} run", flush=True)
    with process(serve_command(budget, 2, name)) as proc:
        server = ServerLog(proc)
        sampler = RssSampler(proc.pid)
        sampler.start()
        time.sleep(1.0)
        rss_start = rss(proc.pid)
        http = httpx.Client(base_url=server.http, timeout=120)
        # the two least popular models, one after the other: the first loads the libraries, the
        # second (on a warm, quiet process) teaches the registry its memory-to-files ratio
        for probe in ranked[-2:]:
            http.post(f"/management/models/{probe}/load").raise_for_status()
            http.post(f"/management/models/{probe}/unload").raise_for_status()
        idle_from = time.monotonic()
        for probe in idle_models(ranked[:-2], size_class, 2):  # one at a time, quiet: idle loads
            http.post(f"/management/models/{probe}/load").raise_for_status()
            http.post(f"/management/models/{probe}/unload").raise_for_status()
        time.sleep(1.0)
        idle_loads = [(mid, secs) for at, mid, secs, _, _ in server.loads if at >= idle_from]
        overhead = rss(proc.pid)
        preload_s = 0.0
        if not budget:
            began = time.perf_counter()
            for mid in ids:
                http.post(f"/management/models/{mid}/load").raise_for_status()
            preload_s = time.perf_counter() - began
        rss_ready = rss(proc.pid)
        rng = random.Random(args.seed + 1)  # the same request sequence in every run
        cum = list(itertools.accumulate(zipf(len(ids), args.zipf)))
        pick = Picker(lambda: rng.choices(ranked, cum_weights=cum)[0])
        sample, errors, before, after, (t0, t1) = asyncio.run(traffic(server, sampler, pick, args))
        peak = sampler.peak
        time.sleep(0.5)  # let the drain thread catch up with the window's last log lines
        loaded = [m for m in http.get("/management/models").json()["models"] if m["state"] == "LOADED"]
        for model in loaded:
            http.post(f"/management/models/{model['model_id']}/unload").raise_for_status()
        time.sleep(2.0)
        rss_unloaded = rss(proc.pid)
        sampler.done.set()
        http.close()
    delta = after - before
    hits, misses = delta["hit"], delta["miss"]
    in_window = [load for load in server.loads if t0 <= load[0] <= t1]
    load_times = [secs for _, _, secs, _, _ in in_window]
    loads = delta["taskgate_model_load_seconds_count"]
    waits = delta["taskgate_model_load_wait_seconds_count"]
    result = {
        "run": name,
        "budget_bytes": budget,
        "requests_per_s": sample.throughput,
        "requests": len(sample.latencies_ms),
        "p50_ms": sample.quantile(0.5),
        "p99_ms": sample.quantile(0.99),
        "errors": dict(errors),
        "hit_ratio": hits / (hits + misses) if hits + misses else float("nan"),
        "request_no_load_ratio": 1 - loads / (hits + misses) if hits + misses else float("nan"),
        "hits": hits,
        "misses": misses,
        "loads": loads,
        "evictions": delta["taskgate_model_unload_seconds_count"],
        "load_p50_s": quantile(load_times, 0.5),
        "load_p99_s": quantile(load_times, 0.99),
        "load_mean_s": delta["taskgate_model_load_seconds_sum"] / loads if loads else float("nan"),
        "load_wait_mean_s": delta["taskgate_model_load_wait_seconds_sum"] / waits if waits else float("nan"),
        "exports_in_window": sum(t0 <= at <= t1 for at in server.exports),
        "preload_s": preload_s,
        "rss_start_bytes": rss_start,
        "rss_overhead_bytes": overhead,
        "rss_ready_bytes": rss_ready,
        "peak_rss_bytes": peak,
        "rss_after_unload_all_bytes": rss_unloaded,
        "loaded_at_end": len(loaded),
        "loaded_bytes_at_end": sum(m["size_bytes"] for m in loaded),
        "loadgen_cpu": sample.cpu_share,
        "sizes_in_window": [(mid, size) for _, mid, _, size, _ in in_window],
        "server_problems": server.problems[:10],
    }
    if budget:
        loads_seen = [(mid, size, reserved) for _, mid, _, size, reserved in server.loads]
        window_loads = [(mid, secs) for _, mid, secs, _, _ in in_window]
        result.update(
            replay(pick, budget, loads_seen, idle_loads, window_loads, size_class, args.aging_requests)
        )
    shown = {k: v for k, v in result.items() if k not in ("server_problems", "trace", "sizes_in_window")}
    print(json.dumps(shown), flush=True)
    return result


def _mb(key: str) -> Callable[[dict], str]:
    return lambda r: f"{r[key] / MB:.0f}"


ROWS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("requests/s", lambda r: f"{r['requests_per_s']:.0f}"),
    ("client p50 / p99 ms", lambda r: f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"),
    ("errors (gRPC codes)", lambda r: str(r["errors"] or 0)),
    ("hit ratio (server counters)", lambda r: f"{r['hit_ratio']:.3f}"),
    ("1 - loads / requests", lambda r: f"{r['request_no_load_ratio']:.3f}"),
    ("loads / evictions in window", lambda r: f"{r['loads']:.0f} / {r['evictions']:.0f}"),
    ("cold load p50 / p99 s (log)", lambda r: f"{r['load_p50_s']:.2f} / {r['load_p99_s']:.2f}"),
    ("cold load mean s (histogram)", lambda r: f"{r['load_mean_s']:.3f}"),
    ("mean wait of a missing request s", lambda r: f"{r['load_wait_mean_s']:.3f}"),
    ("RSS at start-up MB", _mb("rss_start_bytes")),
    ("RSS overhead (2 models loaded+unloaded) MB", _mb("rss_overhead_bytes")),
    ("RSS before traffic MB", _mb("rss_ready_bytes")),
    ("peak RSS MB", _mb("peak_rss_bytes")),
    ("RSS after unloading all MB", _mb("rss_after_unload_all_bytes")),
    ("loaded at end (registry MB)", lambda r: f"{r['loaded_at_end']} ({r['loaded_bytes_at_end'] / MB:.0f})"),
)


def report(
    args: argparse.Namespace, sizes: dict[str, int], ranked: list[str], budget: int, results: list[dict]
) -> None:
    probs = zipf(args.models, args.zipf)
    best_k = sum(probs[: args.fit])
    room, best_bytes = budget, 0.0  # greedy by rank: the popular models that fit in the bytes
    for mid, p in zip(ranked, probs, strict=True):
        if sizes[mid] <= room:
            room, best_bytes = room - sizes[mid], best_bytes + p
    lines = [
        "# Many models in one process",
        "",
        f"{args.models} encoders ({min(sizes.values()) / MB:.1f}-{max(sizes.values()) / MB:.1f} MB, mean "
        f"{statistics.mean(sizes.values()) / MB:.1f} MB as the registry measures them), Zipf s={args.zipf}, "
        f"seed {args.seed}, {args.clients} closed-loop gRPC clients, {args.warmup:.0f} s warm-up + "
        f"{args.duration:.0f} s measured. Budget {budget / MB:.0f} MB (~{args.fit} mean models), "
        "2 concurrent loads.",
        "",
        "| | " + " | ".join(r["run"] for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    lines += [f"| {label} | " + " | ".join(show(r) for r in results) + " |" for label, show in ROWS]
    lines += ["", "## Ratios", ""]
    lines.append(
        f"- best static hit ratio, top {args.fit} models cached: {best_k:.3f}; popular models greedily "
        f"packed into the budget's bytes: {best_bytes:.3f}"
    )
    by_run = {r["run"]: r for r in results}
    for ours in (r for r in results if r["budget_bytes"]):
        name, hit, no_load = ours["run"], ours["hit_ratio"], ours["request_no_load_ratio"]
        lines.append(
            f"- {name} hit ratio: {hit:.3f} = {hit / best_k:.2f} x the best static; "
            f"1 - loads / requests: {no_load:.3f} = {no_load / best_k:.2f} x"
        )
        bound = budget + ours["rss_overhead_bytes"]
        lines.append(
            f"- {name}: peak RSS / (budget + overhead) = {ours['peak_rss_bytes'] / MB:.0f} / "
            f"{bound / MB:.0f} MB = {ours['peak_rss_bytes'] / bound:.2f}"
        )
        served = budget + ours["rss_after_unload_all_bytes"]  # the overhead once traffic warmed it
        lines.append(
            f"- {name}: peak RSS / (budget + RSS with every model unloaded after the traffic) = "
            f"{ours['peak_rss_bytes'] / MB:.0f} / {served / MB:.0f} MB "
            f"= {ours['peak_rss_bytes'] / served:.2f}"
        )
        if "preloaded" in by_run and by_run["preloaded"]["requests_per_s"]:
            ratio = ours["requests_per_s"] / by_run["preloaded"]["requests_per_s"]
            lines.append(f"- throughput({name}) / throughput(preloaded) = {ratio:.2f}")
    lines += policy_lines(results)
    if "preloaded" in by_run:
        pre = by_run["preloaded"]
        held = pre["rss_ready_bytes"] - pre["rss_overhead_bytes"]
        lines.append(
            f"- preloaded: RSS held by {args.models} models / their registry size = {held / MB:.0f} / "
            f"{sum(sizes.values()) / MB:.0f} MB = {held / sum(sizes.values()):.2f} (loading took "
            f"{pre['preload_s']:.0f} s)"
        )
    for r in results:
        if r["exports_in_window"] or r["server_problems"]:
            lines.append(f"- {r['run']}: {r['exports_in_window']} exports in window; server said:")
            lines += [f"  - `{p}`" for p in r["server_problems"]]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    payload = {"args": vars(args), "sizes": sizes, "best_static_hit_ratio": best_k, "results": results}
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(payload, indent=2))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--fit", type=int, default=10, help="mean-sized models the budget holds")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before measuring")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs", default=",".join((*POLICIES, "preloaded")), help="policies and/or preloaded"
    )
    parser.add_argument("--aging-requests", type=int, default=1000, help="lfu-size's aging in the replays")
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    args.stem = results_stem(
        "multiplex", parser, args, ("models", "fit", "clients", "duration", "runs", "zipf", "warmup")
    )
    sizes = prepare(args.models)
    if args.prepare_only:
        return
    ids = model_ids(args.models)
    ranked = ids[:]
    random.Random(args.seed).shuffle(ranked)  # rank k (most popular first) -> model
    budget = int(args.fit * statistics.mean(sizes.values()))
    names = args.runs.split(",")
    unknown = set(names) - {*POLICIES, "preloaded"}
    if unknown:
        parser.error(
            f"unknown runs: {', '.join(sorted(unknown))} (policies: {', '.join(POLICIES)}, preloaded)"
        )
    results = [run(name, 0 if name == "preloaded" else budget, ids, ranked, args) for name in names]
    report(args, sizes, ranked, budget, results)


if __name__ == "__main__":
    main()
