"""One page from the benchmarks' JSON: bench/results/report.md and report.png.

    .venv/bin/python bench/report.py                       # reads bench/results/*.json
    .venv/bin/python bench/report.py --results-dir DIR     # another folder (writes there too)

Reads whatever is present of encoder_throughput, generation, overload, soak, adapters_mixed and
tuning_beside_serving (a full run's file, else its ``-partial`` one, marked as such) and skips
the rest, saying so. The page: throughput against clients, generation tokens/s against streams,
latency percentiles (encoder at each concurrency; overload's capacity / admitted / shed /
recovery), the queue / model / overhead split (when the gateway exported it during overload and
soak), RSS over time (soak and overload servers), soak p99 per task over time, and tables of the
figures behind each plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NAMES = ("encoder_throughput", "generation", "overload", "soak", "adapters_mixed", "tuning_beside_serving")
PHASES = ("capacity", "overload", "recovery")


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """{name: {"file": file name, "partial": bool, "data": parsed JSON}} for the results present."""
    found = {}
    for name in NAMES:
        for stem, partial in ((name, False), (f"{name}-partial", True)):
            path = folder / f"{stem}.json"
            if path.is_file():
                try:
                    found[name] = {
                        "file": path.name,
                        "partial": partial,
                        "data": json.loads(path.read_text()),
                    }
                except ValueError as exc:
                    print(f"report: skipping {path.name}: not JSON ({exc})", file=sys.stderr)
                    continue
                break
    return found


def _f(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


def _source(entry: dict[str, Any]) -> str:
    return f"`{entry['file']}`" + (" (a partial / smoke run)" if entry["partial"] else "")


# -- Markdown -------------------------------------------------------------------------------
def _encoder_md(entry: dict[str, Any]) -> list[str]:
    rows = entry["data"].get("rows", [])
    lines = ["| system | transport | inputs | mode | clients | req/s | p50 ms | p99 ms | errors |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['transport']} | {r['inputs']} | {r['mode']} | {r['clients'] or '-'} "
            f"| {_f(r['throughput'])} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {r['errors']} |"
        )
    return lines


def _generation_md(entry: dict[str, Any]) -> list[str]:
    lines = ["| streams | tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | vs HF batch-1 | vs HF static |"]
    lines.append("|---|---|---|---|---|---|")
    for r in entry["data"].get("rows", []):
        lines.append(
            f"| {r['streams']} | {_f(r['tokens_per_s'])} "
            f"| {_f(r['ttft_p50_ms'], 0)} / {_f(r['ttft_p99_ms'], 0)} "
            f"| {_f(r['itl_p50_ms'])} / {_f(r['itl_p99_ms'])} | {_f(r.get('vs_sequential'), 2)} "
            f"| {_f(r.get('vs_static'), 2)} |"
        )
    return lines


def _overload_md(entry: dict[str, Any]) -> list[str]:
    lines = [
        "| model | transport | admission | capacity req/s | capacity p99 ms | asked / offered req/s "
        "| admitted p99 ms | shed | shed p99 ms | errors | RSS start / peak / end MiB | recovery p99 ms "
        "| checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in entry["data"].get("rows", []):
        cap, over, rec = r["capacity"], r["overload"], r["recovery"]
        failed = [c["name"] for c in r["checks"] if not c["passed"]]
        lines.append(
            f"| {r['model_id']} | {r['transport']} | {r.get('admission', '-')} | {_f(cap['ok_per_s'])} "
            f"| {_f(cap['ok_p99_ms'])} "
            f"| {_f(r['offered_rate'])} / {_f(over['sent_per_s'])} | {_f(over['ok_p99_ms'])} "
            f"| {over['shed']} "
            f"| {_f(over['shed_p99_ms'], 2)} | {over['errors']} "
            f"| {_f(r['rss_start_mib'])} / {_f(r['rss_peak_mib'])} / {_f(r['rss_end_mib'])} "
            f"| {_f(rec['ok_p99_ms'])} | {'all pass' if not failed else 'FAIL: ' + '; '.join(failed)} |"
        )
    return lines


def _soak_md(entry: dict[str, Any]) -> list[str]:
    data = entry["data"]
    lines = [
        f"{_f(data['settings']['seconds'] / 60)} min, answers {data['answers']}, errors {data['errors']}, "
        f"RSS growth after warm-up {_f(data['rss_growth_pct'], 2)} % "
        f"({_f(data['rss_after_warmup_mib'])} -> {_f(data['rss_end_mib'])} MiB).",
        "",
        "| task | req/s | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for key, s in data.get("tasks", {}).items():
        lines.append(f"| {key} | {_f(s['per_s'])} | {s['errors']} | {_f(s['p50_ms'])} | {_f(s['p99_ms'])} |")
    return lines


def _split_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """(label, {queue_ms, model_ms, overhead_ms}) from overload's phases and soak's models."""
    out = []
    if "overload" in results:
        for r in results["overload"]["data"].get("rows", []):
            for phase in PHASES:
                split = r.get("split", {}).get(phase)
                if split:
                    out.append((f"{r['model']} {r['transport']} {phase}", split))
    if "soak" in results:
        for model, split in results["soak"]["data"].get("split", {}).items():
            if split:
                out.append((f"soak {model}", split))
    return out


def _adapters_md(entry: dict[str, Any]) -> list[str]:
    lines = ["| scenario | adapters | engine tok/s | vs base |", "|---|---|---|---|"]
    for r in entry["data"].get("throughput", []):
        lines.append(
            f"| {r['scenario']} | {r['adapters']} | {_f(r['engine_tokens_per_s'])} "
            f"| {_f(r.get('vs_base'), 2)} |"
        )
    return lines


def _tuning_md(entry: dict[str, Any]) -> list[str]:
    lines = [
        "| setting | encoder p99 idle / busy ms | encoder req/s idle / busy | gen tok/s idle / busy |",
        "|---|---|---|---|",
    ]
    for r in entry["data"].get("results", []):
        idle, busy = r.get("idle", {}), r.get("busy", {})
        lines.append(
            f"| {r['label']} | {_f(idle.get('encoder_p99_ms'))} / {_f(busy.get('encoder_p99_ms'))} "
            f"| {_f(idle.get('encoder_rps'))} / {_f(busy.get('encoder_rps'))} "
            f"| {_f(idle.get('generation_tokens_per_s'))} / {_f(busy.get('generation_tokens_per_s'))} |"
        )
    return lines


SECTIONS = (
    ("encoder_throughput", "Encoder throughput and latency against clients", _encoder_md),
    ("generation", "Generation: tokens/s, time to first token, inter-token latency", _generation_md),
    ("overload", "Overload (10x capacity, open loop)", _overload_md),
    ("soak", "Soak at capacity, mixed tasks", _soak_md),
    ("adapters_mixed", "Mixed adapters in one batch", _adapters_md),
    ("tuning_beside_serving", "Tuning beside serving", _tuning_md),
)


def render_md(results: dict[str, dict[str, Any]], png_name: str) -> str:
    lines = ["# Taskgate benchmark report", "", f"![plots]({png_name})", ""]
    missing = [name for name in NAMES if name not in results]
    if missing:
        lines += [f"Not present (skipped): {', '.join(missing)}.", ""]
    for name, title, table in SECTIONS:
        if name not in results:
            continue
        lines += [f"## {title}", "", f"From {_source(results[name])}.", ""]
        try:
            lines += table(results[name])
        except (KeyError, TypeError) as exc:  # a file of an older schema: say so, keep the page
            lines.append(f"(could not read this file's rows: missing {exc})")
        lines.append("")
    splits = _split_rows(results)
    lines += ["## Latency split: queue wait / model time / overhead (mean ms per request)", ""]
    if splits:
        lines += ["| where | queue | model | overhead |", "|---|---|---|---|"]
        for label, s in splits:
            lines.append(
                f"| {label} | {_f(s['queue_ms'], 2)} | {_f(s['model_ms'], 2)} | {_f(s['overhead_ms'], 2)} |"
            )
    else:
        lines.append("No split recorded (the gateway exported no taskgate_request_*_seconds series then).")
    return "\n".join(lines) + "\n"


# -- plots ----------------------------------------------------------------------------------
def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="grey")


def _plot_throughput(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    ax.set_title("Encoder throughput vs clients", fontsize=10)
    if "encoder_throughput" not in results:
        return _note(ax, "no encoder_throughput results")
    rows = [r for r in results["encoder_throughput"]["data"].get("rows", []) if r.get("mode") == "closed"]
    for key in sorted({(r["system"], r["transport"], r["inputs"]) for r in rows}):
        series = sorted(
            (r for r in rows if (r["system"], r["transport"], r["inputs"]) == key), key=lambda r: r["clients"]
        )
        ax.plot(
            [r["clients"] for r in series], [r["throughput"] for r in series], marker="o", label=" ".join(key)
        )
    ax.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s")
    ax.legend(fontsize=6)


def _plot_generation(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    ax.set_title("Generation tokens/s vs streams", fontsize=10)
    if "generation" not in results:
        return _note(ax, "no generation results")
    rows = sorted(results["generation"]["data"].get("rows", []), key=lambda r: r["streams"])
    streams = [r["streams"] for r in rows]
    ax.plot(streams, [r["tokens_per_s"] for r in rows], marker="o", label="gateway")
    for key, label in (("static_tokens_per_s", "HF static batch"), ("sequential_tokens_per_s", "HF batch-1")):
        if any(r.get(key) for r in rows):
            ax.plot(streams, [r.get(key, 0) for r in rows], linestyle="--", marker=".", label=label)
    ax.set(xlabel="concurrent streams", ylabel="tokens/s")
    ax.legend(fontsize=7)


def _plot_latency(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    ax.set_title("Latency percentiles", fontsize=10)
    if "overload" in results:
        rows = results["overload"]["data"].get("rows", [])
        bars = [
            ("capacity", "capacity", "ok"),
            ("admitted", "overload", "ok"),
            ("shed", "overload", "shed"),
            ("recovery", "recovery", "ok"),
        ]
        width = 0.8 / len(bars)
        for i, (label, phase, kind) in enumerate(bars):
            xs = [j + i * width for j in range(len(rows))]
            ax.bar(
                xs,
                [max(r[phase][f"{kind}_p99_ms"], 1e-3) for r in rows],
                width,
                label=f"{label} p99",
                alpha=0.5,
            )
            ax.scatter(xs, [max(r[phase][f"{kind}_p50_ms"], 1e-3) for r in rows], marker="_", color="k", s=80)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
        ax.set_xticklabels([f"{r['model']}\n{r['transport']}" for r in rows], fontsize=7)
        ax.set(yscale="log", ylabel="ms (bar p99, tick p50)")
        ax.legend(fontsize=6)
    elif "encoder_throughput" in results:
        rows = [r for r in results["encoder_throughput"]["data"].get("rows", []) if r.get("mode") == "closed"]
        for key in sorted({(r["system"], r["transport"]) for r in rows}):
            series = sorted(
                (r for r in rows if (r["system"], r["transport"]) == key), key=lambda r: r["clients"]
            )
            ax.plot(
                [r["clients"] for r in series], [r["p99_ms"] for r in series], marker="o", label=" ".join(key)
            )
        ax.set(xscale="log", yscale="log", xlabel="clients", ylabel="p99 ms")
        ax.legend(fontsize=6)
    else:
        _note(ax, "no overload or encoder results")


def _plot_split(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    ax.set_title("Queue / model / overhead (share of the mean; total ms at right)", fontsize=10)
    splits = _split_rows(results)
    if not splits:
        return _note(ax, "no latency split recorded")
    totals = [sum(s[f"{part}_ms"] for part in ("queue", "model", "overhead")) for _, s in splits]
    left = [0.0] * len(splits)
    for part in ("queue", "model", "overhead"):
        shares = [
            s[f"{part}_ms"] / total if total else 0.0 for (_, s), total in zip(splits, totals, strict=True)
        ]
        ax.barh(range(len(splits)), shares, left=left, label=part)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    for index, total in enumerate(totals):
        ax.text(1.01, index, f"{total:.1f} ms", va="center", fontsize=6)
    ax.set_yticks(range(len(splits)))
    ax.set_yticklabels([label for label, _ in splits], fontsize=6)
    ax.set(xlim=(0, 1.15), xlabel="share of the mean request time")
    ax.legend(fontsize=7, loc="lower right")


def _plot_rss(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    ax.set_title("Server RSS over time", fontsize=10)
    drawn = False
    if "soak" in results:
        samples = results["soak"]["data"].get("rss_samples", [])
        if samples:
            ax.plot([t for t, _ in samples], [m for _, m in samples], label="soak")
            ax.axvline(results["soak"]["data"]["settings"]["warmup_s"], color="grey", linestyle=":")
            drawn = True
    if "overload" in results:
        for server in results["overload"]["data"].get("rss", []):
            samples = server.get("samples", [])
            ax.plot([t for t, _ in samples], [m for _, m in samples], label=f"overload {server['server']}")
            for mark in server.get("phases", []):
                if mark["phase"].endswith("overload"):
                    ax.axvspan(mark["start"], mark["end"], color="red", alpha=0.08)
            drawn = drawn or bool(samples)
    if not drawn:
        return _note(ax, "no soak or overload RSS samples")
    ax.set(xlabel="seconds (overload windows shaded)", ylabel="MiB")
    ax.legend(fontsize=7)


def _plot_soak(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    ax.set_title("Soak p99 per task over time", fontsize=10)
    if "soak" not in results:
        return _note(ax, "no soak results")
    buckets = results["soak"]["data"].get("buckets", [])
    for task in sorted({b["task"] for b in buckets}):
        mine = [b for b in buckets if b["task"] == task]
        ax.plot([b["start_s"] for b in mine], [b["p99_ms"] for b in mine], marker=".", label=task)
    ax.set(yscale="log", xlabel="seconds", ylabel="p99 ms")
    ax.legend(fontsize=6)


def plot(results: dict[str, dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    drawers = (_plot_throughput, _plot_generation, _plot_latency, _plot_split, _plot_rss, _plot_soak)
    for ax, draw in zip(axes.flat, drawers, strict=True):
        try:
            draw(ax, results)
        except (KeyError, TypeError, ValueError) as exc:  # an older schema: an empty panel, not no page
            ax.cla()
            _note(ax, f"{draw.__name__[6:]}: could not read ({exc})")
    fig.suptitle("Taskgate benchmarks (" + ", ".join(e["file"] for e in results.values()) + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="report", help="writes NAME.md and NAME.png in --results-dir")
    args = parser.parse_args(argv)
    results = load_results(args.results_dir)
    md, png = args.results_dir / f"{args.name}.md", args.results_dir / f"{args.name}.png"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    md.write_text(render_md(results, png.name))
    print(
        f"report: {len(results)} result file(s) ({', '.join(e['file'] for e in results.values()) or 'none'})"
    )
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
