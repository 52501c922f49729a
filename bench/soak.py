"""Soak: a mix of tasks at capacity over both transports for minutes; no errors, flat memory.

    .venv/bin/python bench/soak.py                   # the full run: 10 minutes (~11 min with start-up)
    .venv/bin/python bench/soak.py --minutes 0.5     # smoke run (warm-up 10 s, 10 s buckets)

One gateway process (127.0.0.1, its own store bench/.stores/soak/) serves MiniLM and SmolLM2
(those of the two that the mix uses);
closed-loop clients, each bound to one task and one transport (--mix, per transport: embed,
sentence similarity, rerank, tokenize, unary generate, streaming generate; generation with
--tokens new tokens), keep it at capacity for --minutes. Recorded: every answer (errors must be
0; a shed answer counts as one), the server's VmRSS every --rss-interval seconds, growth from
the end of the warm-up (--warmup-s) to the end (target < 5 %), latency p50 / p99 per task per
--bucket-s (a minute by default), and the queue / model / overhead split per model from /metrics
when the gateway exports it. Pass / fail lines at the end. Writes bench/results/soak.{json,md}
(soak-partial.* for a shorter or narrower run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.openloop import quantile  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.server_watch import RssSampler, scrape_split, serve_gateway, split_between  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import GRPC, REST  # noqa: E402
from bench.traffic import TASKS, Outcome, model_of, open_client  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = store_path("soak")  # its own store, never ./model-store
GROWTH_LIMIT_PCT = 5.0
DEFAULT_MIX = "embed:4,similarity:2,rerank:2,tokenize:2,generate:3,stream:3"

Event = tuple[float, str, str, Outcome]  # (seconds since start, task, transport, outcome)


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in text.split(","):
        task, _, count = part.partition(":")
        if task not in TASKS:
            raise SystemExit(f"--mix: unknown task {task!r} (known: {', '.join(TASKS)})")
        mix[task] = int(count or 1)
    return mix


def summarize(
    events: list[Event],
    rss: list[tuple[float, float]],
    settings: dict[str, Any],
    split: dict[str, dict[str, float] | None],
) -> dict[str, Any]:
    """The payload written to soak.json, from raw answers and RSS samples."""
    warmup, bucket, seconds = settings["warmup_s"], settings["bucket_s"], settings["seconds"]
    tasks: dict[str, dict[str, Any]] = {}
    for transport in sorted({e[2] for e in events}):
        for task in TASKS:
            mine = [e[3] for e in events if e[1] == task and e[2] == transport]
            if mine:
                tasks[f"{task} {transport}"] = _stats(mine, seconds)
    buckets = []
    for index in range(math.ceil(seconds / bucket)):
        low, high = index * bucket, (index + 1) * bucket
        for task in TASKS:
            mine = [e[3] for e in events if e[1] == task and low <= e[0] < high]
            if mine:
                buckets.append({"bucket": index, "start_s": low, "task": task, **_stats(mine, bucket)})
    after = [mib for t, mib in rss if t >= warmup] or [mib for _, mib in rss]
    base, end = statistics.median(after[:3]), statistics.median(after[-3:])
    growth = (end - base) / base * 100 if base else float("nan")
    errors = sum(e[3].kind != "ok" for e in events)
    checks = [
        {"name": "errors (any answer but ok)", "value": errors, "limit": 0, "passed": errors == 0},
        {"name": "RSS growth % after warm-up", "value": growth, "limit": GROWTH_LIMIT_PCT,
         "passed": growth < GROWTH_LIMIT_PCT},
    ]  # fmt: skip
    return {
        "settings": settings,
        "answers": len(events),
        "errors": errors,
        "error_kinds": _kinds(events),
        "rss_samples": rss,
        "rss_after_warmup_mib": base,
        "rss_end_mib": end,
        "rss_peak_mib": max((mib for _, mib in rss), default=float("nan")),
        "rss_growth_pct": growth,
        "tasks": tasks,
        "buckets": buckets,
        "split": split,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }


def _stats(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    ok = [o.latency_ms for o in outcomes if o.kind == "ok"]
    return {
        "answers": len(outcomes),
        "per_s": len(outcomes) / seconds if seconds else float("nan"),
        "errors": len(outcomes) - len(ok),
        "p50_ms": quantile(ok, 0.5),
        "p99_ms": quantile(ok, 0.99),
    }


def _kinds(events: list[Event]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for _, task, transport, outcome in events:
        if outcome.kind != "ok":
            key = f"{task} {transport} {outcome.kind} {outcome.detail}".strip()
            kinds[key] = kinds.get(key, 0) + 1
    return kinds


def _f(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def render_md(payload: dict[str, Any]) -> str:
    settings = payload["settings"]
    lines = [
        "# Soak benchmark",
        "",
        f"{settings['seconds'] / 60:.1f} minutes at capacity, mix per transport {settings['mix']} "
        f"(closed-loop clients), generation {settings['tokens']} new tokens; "
        f"warm-up {settings['warmup_s']} s.",
        "",
        f"Answers {payload['answers']}, errors {payload['errors']}"
        + (f" ({payload['error_kinds']})" if payload["error_kinds"] else "")
        + f". RSS after warm-up {_f(payload['rss_after_warmup_mib'])} MiB, "
        f"end {_f(payload['rss_end_mib'])} MiB, "
        f"peak {_f(payload['rss_peak_mib'])} MiB: growth {_f(payload['rss_growth_pct'], 2)} %.",
        "",
        "| task | transport | answers | req/s | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in payload["tasks"].items():
        task, transport = key.split(" ")
        lines.append(
            f"| {task} | {transport} | {s['answers']} | {_f(s['per_s'])} | {s['errors']} "
            f"| {_f(s['p50_ms'])} | {_f(s['p99_ms'])} |"
        )
    lines += ["", f"## Per {settings['bucket_s']:g} s (both transports)", ""]
    lines += ["| from s | task | answers | errors | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for b in payload["buckets"]:
        lines.append(
            f"| {b['start_s']:g} | {b['task']} | {b['answers']} | {b['errors']} | {_f(b['p50_ms'])} "
            f"| {_f(b['p99_ms'])} |"
        )
    lines += ["", "## Latency split (mean ms per request after warm-up, from /metrics)", ""]
    if any(payload["split"].values()):
        lines += ["| model | queue | model | overhead |", "|---|---|---|---|"]
        for model, s in payload["split"].items():
            if s:
                parts = " | ".join(_f(s[f"{part}_ms"], 2) for part in ("queue", "model", "overhead"))
                lines.append(f"| {model} | {parts} |")
    else:
        lines.append("The gateway exported no taskgate_request_{queue,model,overhead}_seconds series.")
    lines += ["", "## Checks", "", *check_lines(payload)]
    return "\n".join(lines) + "\n"


def check_lines(payload: dict[str, Any]) -> list[str]:
    return [
        f"- {'PASS' if c['passed'] else 'FAIL'} soak: {c['name']} = {_f(float(c['value']), 2)} "
        f"(limit {c['limit']})"
        for c in payload["checks"]
    ]


def write_results(payload: dict[str, Any], results_dir: Path, stem: str) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2))
    md_path.write_text(render_md(payload))
    return json_path, md_path


async def drive(
    served: Any, mix: dict[str, int], args: argparse.Namespace, started: float
) -> tuple[list[Event], dict[str, dict[str, float] | None]]:
    events: list[Event] = []
    stop_at = started + args.seconds
    http = served.running.http
    marks: dict[str, Any] = {}

    async def client_loop(client: Any, task: str, transport: str) -> None:
        while (now := time.time()) < stop_at:
            outcome = await client.request(task)
            events.append((now - started, task, transport, outcome))

    async def split_marks() -> None:  # /metrics at the end of the warm-up and at the end
        await asyncio.sleep(max(0.0, started + args.warmup_s - time.time()))
        for model in {model_of(task) for task in mix}:
            marks[model] = await asyncio.to_thread(scrape_split, http, model)

    async with (
        open_client(GRPC, served.running.grpc, args.tokens) as grpc_client,
        open_client(REST, http, args.tokens) as rest_client,
    ):
        for task in mix:  # every route answers once before the clock runs (fails loudly otherwise)
            for client in (grpc_client, rest_client):
                outcome = await client.request(task)
                if outcome.kind != "ok":
                    raise SystemExit(f"{task}: the first request failed: {outcome}")
        loops = [
            client_loop(client, task, transport)
            for transport, client in ((GRPC, grpc_client), (REST, rest_client))
            for task, count in mix.items()
            for _ in range(count)
        ]
        await asyncio.gather(split_marks(), *loops)
    split = {
        model: split_between(marks.get(model), await asyncio.to_thread(scrape_split, http, model))
        for model in {model_of(task) for task in mix}
    }
    return events, split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--mix", default=DEFAULT_MIX, help="task:clients per transport")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per generation request")
    parser.add_argument(
        "--warmup-s", type=float, help="RSS growth counts from here (default: 60, or 1/3 of a short run)"
    )
    parser.add_argument("--bucket-s", type=float, help="latency buckets (default: 60, or 10 for a short run)")
    parser.add_argument("--rss-interval", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--store", type=Path, default=STORE, help="its own model store (not a user's)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    stem = results_stem("soak", parser, args, ("minutes", "mix", "tokens"))
    args.seconds = args.minutes * 60
    short = args.seconds < 180
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (args.seconds / 3 if short else 60.0)
    args.bucket_s = args.bucket_s if args.bucket_s is not None else (10.0 if short else 60.0)
    mix = parse_mix(args.mix)
    prepare_store(args.store)
    models = sorted({model_of(task) for task in mix})  # only the models the mix uses
    with serve_gateway(args.store, models, []) as served:
        with RssSampler(served.pid, args.rss_interval) as sampler:
            started = time.time()
            events, split = asyncio.run(drive(served, mix, args, started))
        rss = [(t - sampler.at(started), mib) for t, mib in sampler.samples]
    settings = {
        "minutes": args.minutes, "seconds": args.seconds, "mix": args.mix, "tokens": args.tokens,
        "warmup_s": args.warmup_s, "bucket_s": args.bucket_s, "rss_interval": args.rss_interval,
    }  # fmt: skip
    payload = summarize(events, rss, settings, split)
    json_path, md_path = write_results(payload, args.results_dir, stem)
    print(render_md(payload))
    print(f"wrote {json_path} and {md_path}")
    return 0 if payload["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
