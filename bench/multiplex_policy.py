"""Eviction policies against Belady's offline optimum on one request trace.

    .venv/bin/python bench/multiplex_policy.py                    # offline: a synthetic trace
    .venv/bin/python bench/multiplex_policy.py --requests 20000 --models 200 --fit 10

bench/multiplex.py records the trace its gateway runs served (the model each request named, in
the order the clients picked them) and the sizes the registry gave each model, and calls
``compare`` on it; run alone, this file draws the same kind of trace (Zipf s over ``--models``
models whose sizes are in the ratio 1:2:3 by index, like bench/multiplex_models.py's, a budget
of ``--fit`` mean models) and prints the same table without a gateway.

The cache here is the registry's: a request for a model that is not loaded loads it (every
request is served, there is no bypass), and loads evict until the model fits in the budget's
bytes. With ``needs`` (bytes a load reserves while it runs: the registry holds a load's learned
peak, which may exceed what the model keeps) a load evicts until its need fits, as the registry
does with one load at a time; without, the cache is a plain one of the budget's bytes. The
offline optimum with sizes is NP-hard, so two Belady variants are computed and the
better is the reference: ``farthest`` (evict the resident whose next request is farthest away,
Belady's rule, exact when sizes are equal) and ``size`` (evict the largest size x distance to
the next request, the "Belady-Size" heuristic). The gateway's own policies (gateway/models/
eviction.py) are replayed through the same cache, so the numbers cross-check the gateway's
measured hit ratio; the gateway's differs by its concurrency (16 clients: a model being loaded
is asked for again before it is there, and two loads may run at once, each holding its peak
bytes while it runs).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.models.eviction import POLICIES, EvictionPolicy, make_policy  # noqa: E402

BELADY_VARIANTS = ("farthest", "size")


@dataclass
class _Resident:
    model_id: str
    size_bytes: int
    last_used: float
    inflight: int = 0
    pinned: bool = False


def next_uses(trace: Sequence[str]) -> list[float]:
    """For each position, the position of the same model's next request (inf: none)."""
    following: list[float] = [math.inf] * len(trace)
    seen: dict[str, int] = {}
    for index in range(len(trace) - 1, -1, -1):
        following[index] = seen.get(trace[index], math.inf)
        seen[trace[index]] = index
    return following


def _check(trace: Sequence[str], needs: Mapping[str, int], budget: int) -> None:
    too_big = sorted({m for m in trace if needs[m] > budget})
    if too_big:
        raise ValueError(f"models larger than the budget of {budget} bytes: {', '.join(too_big)}")


def belady(
    trace: Sequence[str],
    sizes: Mapping[str, int],
    budget: int,
    variant: str = "farthest",
    start: int = 0,
    needs: Mapping[str, int] | None = None,
) -> int:
    """Hits at positions >= ``start`` of Belady's rule (``farthest``) or Belady-Size (``size``)."""
    if variant not in BELADY_VARIANTS:
        raise ValueError(f"unknown Belady variant {variant!r}")
    needs = needs or sizes
    _check(trace, needs, budget)
    following = next_uses(trace)
    cache: dict[str, float] = {}  # model -> position of its next request
    held = hits = 0
    for index, model in enumerate(trace):
        if model in cache:
            hits += index >= start
        else:
            while held + needs[model] > budget:
                if variant == "farthest":
                    victim = max(cache, key=lambda m: cache[m])
                else:
                    victim = max(cache, key=lambda m: (cache[m] - index) * sizes[m])
                held -= sizes[victim]
                del cache[victim]
            held += sizes[model]
        cache[model] = following[index]
    return hits


def simulate(
    trace: Sequence[str],
    sizes: Mapping[str, int],
    budget: int,
    policy: EvictionPolicy,
    start: int = 0,
    needs: Mapping[str, int] | None = None,
) -> int:
    """Hits at positions >= ``start`` of ``policy`` driving the registry's cache (one request at
    a time, so nothing is ever in use while a load makes room)."""
    needs = needs or sizes
    _check(trace, needs, budget)
    cache: dict[str, _Resident] = {}
    held = hits = 0
    for index, model in enumerate(trace):
        policy.record(model)
        resident = cache.get(model)
        if resident is not None:
            hits += index >= start
            resident.last_used = index
            continue
        while held + needs[model] > budget:
            victim = policy.victim(list(cache.values()))
            held -= victim.size_bytes
            del cache[victim.model_id]
        cache[model] = _Resident(model, sizes[model], index)
        held += sizes[model]
    return hits


def compare(
    trace: Sequence[str],
    sizes: Mapping[str, int],
    budget: int,
    start: int = 0,
    aging_requests: int = 1000,
    needs: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Hit ratios over positions >= ``start``: each Belady variant, ``belady`` (the better), and
    each gateway policy replayed."""
    counted = len(trace) - start
    if counted <= 0:
        raise ValueError("no requests to count")
    ratios = {f"belady-{v}": belady(trace, sizes, budget, v, start, needs) / counted for v in BELADY_VARIANTS}
    ratios["belady"] = max(ratios.values())
    for name in POLICIES:
        policy = make_policy(name, aging_requests)
        ratios[name] = simulate(trace, sizes, budget, policy, start, needs) / counted
    return ratios


def zipf_trace(models: Sequence[str], s: float, count: int, seed: int) -> list[str]:
    """``count`` requests, model of rank k (``models`` most popular first) with p ~ k^-s."""
    weights = list(itertools.accumulate(k**-s for k in range(1, len(models) + 1)))
    rng = random.Random(seed)
    return rng.choices(list(models), cum_weights=weights, k=count)


class Picker:
    """Draws each request's model and records the trace; ``start`` is where the measured window
    begins (set by the caller when it starts measuring)."""

    def __init__(self, draw: Callable[[], str]) -> None:
        self._draw = draw
        self.trace: list[str] = []
        self.start = 0

    def __call__(self) -> str:
        model = self._draw()
        self.trace.append(model)
        return model


def idle_models(candidates: Sequence[str], classify: Callable[[str], Hashable], per_class: int) -> list[str]:
    """``per_class`` models of each class, taken from the end of ``candidates`` (least popular)."""
    taken: dict[Hashable, int] = {}
    chosen = []
    for model in reversed(candidates):
        if taken.get(classify(model), 0) < per_class:
            taken[classify(model)] = taken.get(classify(model), 0) + 1
            chosen.append(model)
    return chosen


def replay(
    pick: Picker,
    budget: int,
    loads: Sequence[tuple[str, int, int]],
    idle_loads: Sequence[tuple[str, float]],
    window_loads: Sequence[tuple[str, float]],
    classify: Callable[[str], Hashable],
    aging_requests: int,
) -> dict[str, Any]:
    """One budget run's trace against Belady and the policies' replays (a plain cache, and one
    whose loads reserve what the registry reserved), and its cold loads against idle ones.
    ``loads``: (model, bytes the registry gave it, bytes its load reserved) of every load of the
    run; ``idle_loads``: (model, seconds) of the quiet loads before traffic; ``window_loads``:
    those of the measured window."""
    sizes = _medians([(model, size) for model, size, _ in loads], pick.trace, classify)
    needs = _medians([(model, max(size, held)) for model, size, held in loads], pick.trace, classify)
    idle: dict[Hashable, list[float]] = {}
    for model, seconds in idle_loads:
        idle.setdefault(classify(model), []).append(seconds)
    idle_p50 = {cls: statistics.median(times) for cls, times in idle.items()}
    relative = [secs / idle_p50[classify(m)] for m, secs in window_loads if idle_p50.get(classify(m))]
    return {
        "trace": pick.trace,
        "trace_start": pick.start,
        "replay": compare(pick.trace, sizes, budget, pick.start, aging_requests),
        "replay_reserving": compare(pick.trace, sizes, budget, pick.start, aging_requests, needs),
        "idle_load_p50_s": statistics.median(s for _, s in idle_loads) if idle_loads else math.nan,
        "idle_load_p50_s_by_class": {str(cls): p50 for cls, p50 in idle_p50.items()},
        "window_load_p50_s": statistics.median(s for _, s in window_loads) if window_loads else math.nan,
        "cold_vs_idle": statistics.median(relative) if relative else math.nan,
    }


def _medians(
    values: Sequence[tuple[str, int]], trace: Sequence[str], classify: Callable[[str], Hashable]
) -> dict[str, int]:
    """Per model, the median of its values; a model of the trace with none (its requests failed
    before a load) gets its class's median."""
    found: dict[str, list[int]] = {}
    for model, value in values:
        found.setdefault(model, []).append(value)
    medians = {model: int(statistics.median(seen)) for model, seen in found.items()}
    by_class: dict[Hashable, list[int]] = {}
    for model, value in medians.items():
        by_class.setdefault(classify(model), []).append(value)
    for model in set(trace) - medians.keys():
        medians[model] = int(statistics.median(by_class[classify(model)]))
    return medians


def policy_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's Belady section for the runs ``replay`` was given."""
    runs = [r for r in results if "replay" in r]
    if not runs:
        return []
    lines = [
        "",
        "## Against Belady's offline optimum (each run's own trace and budget; window only)",
        "",
        "| run | offline cache | Belady (rule / Size) | measured 1 - loads/requests (÷ Belady) | "
        "server hit ratio (÷) | replay of lru (÷) | replay of lfu-size (÷) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for cache, key in (("plain", "replay"), ("loads reserve their peak", "replay_reserving")):
            ratios, no_load, hit = r[key], r["request_no_load_ratio"], r["hit_ratio"]
            best = ratios["belady"]
            lines.append(
                f"| {r['run']} | {cache} | {best:.3f} ({ratios['belady-farthest']:.3f} / "
                f"{ratios['belady-size']:.3f}) | {no_load:.3f} ({no_load / best:.2f}) | "
                f"{hit:.3f} ({hit / best:.2f}) | {ratios['lru']:.3f} ({ratios['lru'] / best:.2f}) | "
                f"{ratios['lfu-size']:.3f} ({ratios['lfu-size'] / best:.2f}) |"
            )
    lines.append("")
    for r in runs:
        measured = r["request_no_load_ratio"]
        plain, reserving = r["replay"]["belady"], r["replay_reserving"]["belady"]
        lines.append(
            f"- {r['run']}: measured 1 - loads / requests ÷ Belady = {measured / plain:.2f} "
            f"(÷ Belady with reserving loads: {measured / reserving:.2f}; target >= 0.9); "
            f"cold-load p50 / idle = {r['cold_vs_idle']:.2f} ({r['window_load_p50_s']:.3f} s under "
            f"traffic vs {r['idle_load_p50_s']:.3f} s idle; target <= 2)"
        )
    lines += [
        "- the server hit ratio counts a request that waited for a load another request started as a "
        "miss; 1 - loads / requests counts it as a hit, as the offline replays do",
        "- offline caches: plain: the budget's bytes hold models; loads reserve their peak: a load "
        "first makes room for the bytes the registry reserved for it (its learned peak), one load at "
        "a time; the gateway runs 2 at once, and never evicts a model in use",
        "- cold-load p50 / idle: median over the window's loads of load time / the idle median of "
        "the model's size class",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--fit", type=int, default=10, help="mean-sized models the budget holds")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--skip", type=int, default=1000, help="first requests not counted (warm-up)")
    parser.add_argument("--aging-requests", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="traces (seeds 0..N-1); medians printed")
    args = parser.parse_args()
    ids = [f"mux-{i:03d}" for i in range(args.models)]
    sizes = {mid: (1, 2, 3)[i % 3] * 4_000_000 for i, mid in enumerate(ids)}
    budget = args.fit * sum(sizes.values()) // len(sizes)
    runs = []
    for seed in range(args.seeds):
        ranked = ids[:]
        random.Random(seed).shuffle(ranked)
        trace = zipf_trace(ranked, args.zipf, args.requests, seed + 1)
        runs.append(compare(trace, sizes, budget, args.skip, args.aging_requests))
    print(
        f"{args.models} models (sizes 1:2:3), Zipf {args.zipf}, budget {args.fit} mean models, "
        f"{args.requests} requests ({args.skip} not counted), {args.seeds} seeds; hit ratio (÷ Belady)"
    )
    for name in runs[0]:
        values = sorted(run[name] for run in runs)
        shares = sorted(run[name] / run["belady"] for run in runs)
        print(f"  {name:16s} {values[len(values) // 2]:.3f}  ({shares[len(shares) // 2]:.3f})")


if __name__ == "__main__":
    main()
