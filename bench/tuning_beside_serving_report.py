"""The tables of bench/tuning_beside_serving.py and its results files (bench/results/<stem>.{md,json})."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Load:
    """Serving while idle or beside a job: medians over the repeats."""

    encoder_p50_ms: float
    encoder_p99_ms: float
    encoder_rps: float
    encoder_errors: int
    generation_tokens_per_s: float
    short_streams: int = 0  # generation streams that ended short of --tokens
    encoder_windows: list[tuple[float, float]] = field(default_factory=list)  # perf_counter spans
    generation_windows: list[tuple[float, float]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"encoder p50 {self.encoder_p50_ms:.1f} ms, p99 {self.encoder_p99_ms:.1f} ms, "
            f"{self.encoder_rps:.0f} req/s; generation {self.generation_tokens_per_s:.1f} tok/s"
        )


@dataclass
class SettingResult:
    label: str  # THREADS:NICE
    threads: int
    nice: int
    idle: Load
    busy: Load
    step_alone_s: float  # the job's first steps, no requests
    step_serving_s: float | None  # while the loads ran (both, one after the other)


@dataclass
class PublishLatency:
    from_poll_s: list[float]  # job seen "succeeded" by polling -> first 200 naming the adapter
    from_event_s: list[float]  # its "published" event arrived on the live feed -> first 200
    refused: int  # requests naming the adapter that were not 200 before the first that was


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _s(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


def _settings_table(results: list[SettingResult]) -> list[str]:
    lines = [
        "| worker threads:nice | serving | encoder p50 ms | encoder p99 ms | encoder req/s "
        "| generation tok/s | job s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, load, step in (
            ("idle", r.idle, f"{_s(r.step_alone_s)} (job alone)"),
            ("job running", r.busy, f"{_s(r.step_serving_s)} (while serving)"),
        ):
            lines.append(
                f"| {r.label} | {name} | {load.encoder_p50_ms:.1f} | {load.encoder_p99_ms:.1f} "
                f"| {load.encoder_rps:.0f} | {load.generation_tokens_per_s:.1f} | {step} |"
            )
    lines += [
        "",
        "| worker threads:nice | encoder p50 x | encoder p99 x | encoder req/s x | generation tok/s x "
        "| job s/step x (serving vs alone) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        step = _ratio(r.step_serving_s or 0, r.step_alone_s)
        lines.append(
            f"| {r.label} | {_ratio(r.busy.encoder_p50_ms, r.idle.encoder_p50_ms):.2f} "
            f"| {_ratio(r.busy.encoder_p99_ms, r.idle.encoder_p99_ms):.2f} "
            f"| {_ratio(r.busy.encoder_rps, r.idle.encoder_rps):.2f} "
            f"| {_ratio(r.busy.generation_tokens_per_s, r.idle.generation_tokens_per_s):.2f} "
            f"| {step:.2f} |"
        )
    for r in results:
        for name, load in (("idle", r.idle), ("job running", r.busy)):
            if load.encoder_errors or load.short_streams:
                lines.append(
                    f"- {r.label} {name}: {load.encoder_errors} encoder errors, "
                    f"{load.short_streams} generation streams ended short"
                )
    return lines


def _publish_table(published: PublishLatency | None) -> list[str]:
    if published is None or not published.from_poll_s:
        return ["(not measured: --publish-repeats 0)"]

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} (max {max(values):.3f}, n={len(values)})"

    to = "first 200 naming the adapter (1 token, its own time included)"
    return [
        "| from | to | seconds, median |",
        "|---|---|---|",
        f"| job seen `succeeded` by polling (every 20 ms) | {to} | {cell(published.from_poll_s)} |",
        f"| `published` event arrived on the live feed | {to} | {cell(published.from_event_s)} |",
        "",
        f"- Requests naming the adapter refused before the first success: {published.refused} "
        "(the job publishes and loads the adapter into serving before it reports COMPLETED).",
    ]  # fmt: skip


def write_report(
    args: argparse.Namespace, results: list[SettingResult], published: PublishLatency | None
) -> str:
    lines = [
        "# Tuning beside serving",
        "",
        f"One Taskgate process serving {args.clients} closed-loop encoder clients (all-MiniLM-L6-v2 "
        f"embedding over REST, {args.seconds:g} s) and then {args.streams} gRPC generation streams x "
        f"{args.tokens} tokens (SmolLM2-135M-Instruct), {args.repeats} round(s), medians; idle, then "
        "beside a LoRA job on SmolLM2 (r=8, batch 8) created over the OpenAI-shaped API and cancelled "
        "after. Serving settings at their defaults; the tuning worker's threads and nice as given.",
        "",
        *_settings_table(results),
        "",
        "## Publish -> first request",
        "",
        *_publish_table(published),
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.md").write_text(text)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "published"}
    payload = {
        "settings": settings,
        "results": [asdict(r) for r in results],
        "publish": asdict(published) if published is not None else None,
    }
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(payload, indent=2))
    return text
