"""Overload: offer 10x the measured capacity and check the excess is shed at once, memory stays flat
and the admitted requests keep their latency.

    .venv/bin/python bench/overload.py            # the full run: 60 s of overload per target (~12 min)
    .venv/bin/python bench/overload.py --smoke    # 5 s per target, short capacity / recovery runs

Targets: MiniLM embeddings (task ``embed``) and SmolLM2 unary generation (``generate``, 16 new
tokens), each over gRPC and REST. Each model gets a gateway process of its own (127.0.0.1, its own
store bench/.stores/overload/) with the admission setting under test: for MiniLM
``--max-inflight-per-model`` (--encoder-inflight) and the process-wide ``--max-inflight``
(--max-inflight, default the same: the access gate sheds before any parsing); for SmolLM2 its
manifest's ``max_queue`` (--generation-max-queue, default the shipped one: requests waiting for
one of the ``max_batch_size`` slots; generation is not counted by --max-inflight-per-model, so
the scheduler's queue is what sheds it). Per target:

1. capacity: closed loop, --encoder-clients / --generation-clients clients, --capacity-seconds:
   answers/s and p99.
2. overload: open loop at --factor x capacity for --seconds, from --workers processes
   (bench/openloop.py; REST over at most --connections keep-alive connections per process,
   every latency timed from when the request was due). Recorded: the rate asked for and the
   rate the generator managed to offer (it shares the CPUs with the server), admitted answers
   and their p50 / p99, shed answers (429 / RESOURCE_EXHAUSTED; retry-after checked on every
   one) and their p50 / p99 (time to the shed answer), other errors by code.
3. recovery: the capacity run again, right away.

Throughout, the server's VmRSS every 0.5 s: start (just before the overload), peak (overload and
recovery), end (after recovery). The queue / model / overhead split of each phase comes from
/metrics when the gateway exports it (bench/server_watch.py). Pass / fail lines:

- admitted p99 / capacity p99 <= 2
- shed p99 <= capacity p50 (a shed answer comes sooner than a typical served one) and every shed
  answer carries retry-after; no other error
- RSS peak / start <= 1.10 and RSS end / start <= 1.05
- recovery: no error, nothing shed, p99 / capacity p99 <= 2

Writes bench/results/overload.{json,md} (overload-partial.* for a smoke or narrower run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.openloop import OfferJob, Tally, closed, offer  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.server_watch import (  # noqa: E402
    RssSampler,
    listen_overflows,
    scrape_split,
    serve_gateway,
    split_between,
)
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import GRPC, REST  # noqa: E402
from bench.traffic import GENERATION_MODEL, MODEL  # noqa: E402
from gateway.models.defaults import SMOLLM2_SETTINGS  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = store_path("overload")  # its own store, never ./model-store
LIMITS = {"admitted_p99_ratio": 2.0, "rss_peak_ratio": 1.10, "rss_end_ratio": 1.05, "recovery_p99_ratio": 2.0}


@dataclass(frozen=True)
class Target:
    kind: str  # "encoder" or "generation"
    model: str
    task: str
    clients: int
    admission: str  # the setting under test, as shown in the results
    flags: tuple[str, ...] = ()  # taskgate serve flags
    settings: tuple[tuple[str, int], ...] = ()  # manifest settings written into the bench store


def check(name: str, value: float, limit: float, passed: bool | None = None) -> dict[str, Any]:
    ok = value <= limit if passed is None else passed
    return {"name": name, "value": value, "limit": limit, "passed": bool(ok) and not math.isnan(value)}


def build_row(
    target: Target,
    transport: str,
    offered_rate: float,
    phases: dict[str, Tally],
    rss_mib: tuple[float, float, float],
    split: dict[str, dict[str, float] | None],
    server_cores: float = float("nan"),
) -> dict[str, Any]:
    """One target's figures and pass / fail checks, from the three phases' tallies (server_cores:
    the gateway's CPU use during the overload window)."""
    capacity, over, recovery = (phases[name].summary() for name in ("capacity", "overload", "recovery"))
    start, peak, end = rss_mib
    cap_p99, cap_p50 = float(capacity["ok_p99_ms"]), float(capacity["ok_p50_ms"])
    admitted_ratio = float(over["ok_p99_ms"]) / cap_p99
    recovery_ratio = float(recovery["ok_p99_ms"]) / cap_p99
    shed_missing = int(over["shed_without_retry_after"])
    checks = [
        check("admitted p99 / capacity p99", admitted_ratio, LIMITS["admitted_p99_ratio"]),
        check("shed p99 ms <= capacity p50 ms", float(over["shed_p99_ms"]), cap_p50),
        check("shed answers without retry-after", shed_missing, 0),
        check("overload errors (not 429 / RESOURCE_EXHAUSTED)", int(over["errors"]), 0),
        check("RSS peak / start", peak / start, LIMITS["rss_peak_ratio"]),
        check("RSS end / start", end / start, LIMITS["rss_end_ratio"]),
        check("recovery p99 / capacity p99", recovery_ratio, LIMITS["recovery_p99_ratio"]),
        check("recovery errors + shed", int(recovery["errors"]) + int(recovery["shed"]), 0),
    ]
    return {
        "model": target.kind,
        "model_id": target.model,
        "task": target.task,
        "transport": transport,
        "clients": target.clients,
        "admission": target.admission,
        "capacity": capacity,
        "offered_rate": offered_rate,
        "overload": over,
        "recovery": recovery,
        "rss_start_mib": start,
        "rss_peak_mib": peak,
        "rss_end_mib": end,
        "split": split,
        "server_cores_overload": server_cores,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }


def _f(value: object, digits: int = 1) -> str:
    number = float(value)  # type: ignore[arg-type]
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


def render_md(payload: dict[str, Any]) -> str:
    settings = payload["settings"]
    lines = [
        "# Overload benchmark",
        "",
        f"{settings['factor']}x the capacity offered open-loop for {settings['seconds']} s per target from "
        f"{settings['workers']} generator processes on the same machine (each with at most "
        f"{settings['max_outstanding']} requests unanswered; more due are counted not sent; REST over at "
        f"most {settings.get('connections', '-')} keep-alive connections per process; latency timed from "
        "when a request was due); generation: "
        f"{settings['tokens']} new tokens per request. Asked: the rate the schedule asked for; offered: the "
        "rate the generators managed to send.",
        "",
        "| model | transport | admission | capacity req/s | capacity p50 / p99 ms | asked req/s "
        "| offered req/s | not sent | admitted | admitted req/s | admitted p50 / p99 ms | shed "
        "| shed p50 / p99 ms | no retry-after | errors | RSS start / peak / end MiB | recovery req/s "
        "| recovery p99 ms | recovery errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        cap, over, rec = row["capacity"], row["overload"], row["recovery"]
        lines.append(
            f"| {row['model_id']} | {row['transport']} | {row['admission']} | {_f(cap['ok_per_s'])} "
            f"| {_f(cap['ok_p50_ms'])} / {_f(cap['ok_p99_ms'])} | {_f(row['offered_rate'])} "
            f"| {_f(over['sent_per_s'])} | {over['not_sent']} | {over['ok']} | {_f(over['ok_per_s'])} "
            f"| {_f(over['ok_p50_ms'])} / {_f(over['ok_p99_ms'])} | {over['shed']} "
            f"| {_f(over['shed_p50_ms'], 2)} / {_f(over['shed_p99_ms'], 2)} "
            f"| {over['shed_without_retry_after']} | {over['errors']} "
            f"| {_f(row['rss_start_mib'])} / {_f(row['rss_peak_mib'])} / {_f(row['rss_end_mib'])} "
            f"| {_f(rec['ok_per_s'])} | {_f(rec['ok_p99_ms'])} | {rec['errors'] + rec['shed']} |"
        )
    lines += [
        "",
        "During the overload window: CPU in cores, and connections the kernel dropped because an accept "
        "queue was full (TcpExt ListenOverflows, machine-wide; a client's SYN is retried after 1, 3, 7 s).",
        "",
        "| model | transport | gateway cores | generator cores | listen overflows |",
        "|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        server = _f(row.get("server_cores_overload", math.nan), 2)
        generators = _f(row["overload"].get("generator_cores", math.nan), 2)
        overflows = row.get("listen_overflows", "-")
        lines.append(f"| {row['model_id']} | {row['transport']} | {server} | {generators} | {overflows} |")
    lines += ["", "## Checks", ""]
    lines += [line for row in payload["rows"] for line in check_lines(row)]
    splits = [(row, phase, s) for row in payload["rows"] for phase, s in row["split"].items() if s]
    lines += ["", "## Latency split (mean ms per request, from /metrics)", ""]
    if splits:
        lines += ["| model | transport | phase | queue | model | overhead |", "|---|---|---|---|---|---|"]
        for row, phase, s in splits:
            lines.append(
                f"| {row['model_id']} | {row['transport']} | {phase} | {_f(s['queue_ms'], 2)} "
                f"| {_f(s['model_ms'], 2)} | {_f(s['overhead_ms'], 2)} |"
            )
    else:
        lines.append("The gateway exported no taskgate_request_{queue,model,overhead}_seconds series.")
    return "\n".join(lines) + "\n"


def check_lines(row: dict[str, Any]) -> list[str]:
    out = []
    for c in row["checks"]:
        verdict = "PASS" if c["passed"] else "FAIL"
        out.append(
            f"- {verdict} {row['model_id']} {row['transport']}: {c['name']} = {_f(c['value'], 2)} "
            f"(limit {_f(c['limit'], 2)})"
        )
    return out


def write_results(payload: dict[str, Any], results_dir: Path, stem: str) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2))
    md_path.write_text(render_md(payload))
    return json_path, md_path


def run_target(
    served: Any, sampler: RssSampler, target: Target, transport: str, args: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The three phases on one transport; returns the row and its phase marks on the RSS clock."""
    address = served.running.grpc if transport == GRPC else served.running.http
    http = served.running.http

    def closed_run(seconds: float) -> Tally:
        return asyncio.run(closed(transport, address, target.task, target.clients, seconds, args.tokens))

    splits: dict[str, dict[str, float] | None] = {}
    marks = []
    scrapes = [scrape_split(http, target.model)]  # /metrics at each phase's edges
    begin = sampler.now()
    capacity = closed_run(args.capacity_seconds)
    scrapes.append(scrape_split(http, target.model))
    marks.append({"phase": f"{transport} capacity", "start": begin, "end": sampler.now()})
    if not capacity.ok_ms:
        raise SystemExit(f"{target.model} {transport}: no answer at capacity ({capacity.summary()})")
    rate = args.factor * len(capacity.ok_ms) / capacity.seconds
    print(f"{target.model} {transport}: capacity {rate / args.factor:.1f} req/s; offering {rate:.0f} req/s")
    rss_start = sampler.sample()
    job = OfferJob(
        transport, address, target.task, rate, args.seconds, args.workers, args.tokens, args.max_outstanding,
        args.connections,
    )  # fmt: skip
    overflows = listen_overflows()
    over, start_at = offer(job)
    overflows = listen_overflows() - overflows if overflows >= 0 else -1
    scrapes.append(scrape_split(http, target.model))
    marks.append({"phase": f"{transport} overload", "start": sampler.at(start_at), "end": sampler.now()})
    begin = sampler.now()
    recovery = closed_run(args.recovery_seconds)
    scrapes.append(scrape_split(http, target.model))
    rss_end = sampler.sample()
    marks.append({"phase": f"{transport} recovery", "start": begin, "end": sampler.now()})
    rss_peak = max([rss_start, *sampler.window(sampler.at(start_at), sampler.now())])
    server_cores = sampler.cores(sampler.at(start_at), sampler.at(start_at) + over.seconds)
    for index, phase in enumerate(("capacity", "overload", "recovery")):
        splits[phase] = split_between(scrapes[index], scrapes[index + 1])
    phases = {"capacity": capacity, "overload": over, "recovery": recovery}
    row = build_row(target, transport, rate, phases, (rss_start, rss_peak, rss_end), splits, server_cores)
    row["listen_overflows"] = overflows
    for line in check_lines(row):
        print(line, flush=True)
    return row, marks


def targets(args: argparse.Namespace) -> list[Target]:
    process = args.max_inflight if args.max_inflight is not None else args.encoder_inflight
    encoder = Target(
        "encoder", MODEL, "embed", args.encoder_clients,
        f"max inflight {args.encoder_inflight} per model, {process} process",
        ("--max-inflight-per-model", str(args.encoder_inflight), "--max-inflight", str(process)),
    )  # fmt: skip
    shipped = dict(SMOLLM2_SETTINGS)  # what gateway.models.defaults writes into the manifest
    batch = args.generation_batch or shipped["max_batch_size"]
    queue = args.generation_max_queue or shipped["max_queue"]
    generation = Target(
        "generation", GENERATION_MODEL, "generate", args.generation_clients, f"batch {batch} + queue {queue}",
        (), (("max_batch_size", int(batch)), ("max_queue", int(queue))),
    )  # fmt: skip
    known = {"encoder": encoder, "generation": generation}
    return [known[name] for name in args.models.split(",")]


def set_manifest(store: Path, target: Target) -> None:
    """Write ``target.settings`` into its model's manifest in the benchmark's own store."""
    if not target.settings:
        return
    path = store / target.model / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("settings", {}).update(dict(target.settings))
    path.write_text(json.dumps(manifest, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="overload window per target")
    parser.add_argument("--smoke", action="store_true", help="5 s overload, 3 s capacity and recovery")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--recovery-seconds", type=float, default=10.0)
    parser.add_argument("--factor", type=float, default=10.0, help="offered rate / capacity")
    parser.add_argument("--workers", type=int, default=2, help="open-loop generator processes")
    parser.add_argument(
        "--max-outstanding", type=int, default=2000, help="unanswered requests per generator process"
    )
    parser.add_argument("--models", default="encoder,generation")
    parser.add_argument("--transports", default=f"{GRPC},{REST}")
    parser.add_argument("--encoder-clients", type=int, default=32, help="closed-loop clients at capacity")
    parser.add_argument("--generation-clients", type=int, default=16, help="closed-loop clients at capacity")
    parser.add_argument(
        "--encoder-inflight", type=int, default=32, help="--max-inflight-per-model for MiniLM"
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        help="the encoder gateway's --max-inflight, process-wide, checked before any parsing "
        "(default: --encoder-inflight; 0: none, the per-model check alone)",
    )
    parser.add_argument(
        "--connections", type=int, default=256, help="REST: keep-alive connections per generator process"
    )
    parser.add_argument("--generation-batch", type=int, help="SmolLM2's max_batch_size (default: shipped)")
    parser.add_argument(
        "--generation-max-queue", type=int, help="SmolLM2's max_queue, requests waiting (default: shipped)"
    )
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per generation request")
    parser.add_argument("--store", type=Path, default=STORE, help="its own model store (not a user's)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    stem = results_stem(
        "overload", parser, args, ("seconds", "smoke", "models", "transports", "factor", "tokens")
    )
    if args.smoke:
        args.seconds, args.capacity_seconds, args.recovery_seconds = 5.0, 3.0, 3.0
    prepare_store(args.store)
    rows, rss = [], []
    for target in targets(args):
        set_manifest(args.store, target)
        with (
            serve_gateway(args.store, [target.model], list(target.flags)) as served,
            RssSampler(served.pid) as sampler,
        ):
            marks = []
            for transport in args.transports.split(","):
                row, phase_marks = run_target(served, sampler, target, transport, args)
                rows.append(row)
                marks += phase_marks
        rss.append({"server": target.model, "samples": sampler.samples, "phases": marks})
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    payload = {"settings": settings, "limits": LIMITS, "rows": rows, "rss": rss}
    json_path, md_path = write_results(payload, args.results_dir, stem)
    print(render_md(payload))
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
