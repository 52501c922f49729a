"""Medians over several runs of ``bench/generation.py --peers``: each system's tokens/s and TTFT
p99 per concurrency, and Taskgate's ratios to the fastest peer and to a peer on its own graph.

    .venv/bin/python bench/generation_runs.py bench/results/generation-*-run1-peers.json ...

Single-stream figures on a shared 2-core machine swing by a quarter from one run to the next (the
same peer read 80 and 107 tok/s in two runs an hour apart), so ratios are taken within each run
and their median reported. Prints a markdown table.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

OURS = "Taskgate gateway (gRPC)"


def load(paths: list[Path]) -> list[dict[str, dict[str, Any]]]:
    """Per run: the measured systems by name (rows saying "not installed" or "failed" left out)."""
    runs = []
    for path in paths:
        systems = json.loads(path.read_text())["systems"]
        runs.append({s["name"]: s for s in systems if not s.get("missing")})
    return runs


def ratios(run: dict[str, dict[str, Any]], streams: str) -> tuple[float | None, float | None]:
    """(Taskgate / the fastest peer, Taskgate / the peer on Taskgate's graph) at ``streams``."""
    ours = run.get(OURS, {}).get("cells", {}).get(streams)
    peers = [s for name, s in run.items() if name != OURS and streams in s["cells"]]
    if ours is None or not peers:
        return None, None
    best = max(s["cells"][streams]["tokens_per_s"] for s in peers)
    same = [s["cells"][streams]["tokens_per_s"] for s in peers if s.get("same_graph")]
    mine = float(ours["tokens_per_s"])
    return mine / best, (mine / same[0] if same else None)


def _median(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    return f"{statistics.median(found):.3f}" if found else "-"


def report(paths: list[Path]) -> str:
    runs = load(paths)
    streams = sorted({n for run in runs for s in run.values() for n in s["cells"]}, key=int)
    names = list(dict.fromkeys(name for run in runs for name in run))
    lines = [f"Medians of {len(runs)} runs ({', '.join(p.name for p in paths)}).", ""]
    lines.append("| system | " + " | ".join(f"tok/s N={n} (runs)" for n in streams) + " | "
                 + " | ".join(f"TTFT p99 ms N={n}" for n in streams) + " |")  # fmt: skip
    lines.append("|---|" + "---|" * (2 * len(streams)))
    for name in names:
        rates, ttfts = [], []
        for n in streams:
            cells = [run[name]["cells"][n] for run in runs if name in run and n in run[name]["cells"]]
            each = " / ".join(f"{c['tokens_per_s']:.1f}" for c in cells)
            rates.append(
                f"{statistics.median(c['tokens_per_s'] for c in cells):.1f} ({each})" if cells else "-"
            )
            ttfts.append(f"{statistics.median(c['ttft_p99_ms'] for c in cells):.0f}" if cells else "-")
        lines.append(f"| {name} | " + " | ".join([*rates, *ttfts]) + " |")
    lines.append("")
    for n in streams:
        fast, same = zip(*(ratios(run, n) for run in runs), strict=True)
        shown = " / ".join("-" if v is None else f"{v:.3f}" for v in fast)
        lines.append(f"- N={n}: Taskgate / fastest peer, median {_median(list(fast))} (runs {shown})")
        if any(v is not None for v in same):
            shown = " / ".join("-" if v is None else f"{v:.3f}" for v in same)
            median = _median(list(same))
            lines.append(f"- N={n}: Taskgate / the peer on Taskgate's graph, median {median} (runs {shown})")
    return "\n".join(lines) + "\n"


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]]
    if not paths:
        raise SystemExit(__doc__)
    print(report(paths), end="")


if __name__ == "__main__":
    main()
