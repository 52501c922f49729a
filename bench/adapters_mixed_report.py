"""The tables of bench/adapters_mixed.py and its results files (bench/results/<stem>.{md,json})."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.classifier_adapters import ClassifyRow

RESULTS = Path(__file__).resolve().parent / "results"


def _ratio(ours: float, other: float) -> float:
    return ours / other if other else 0.0


@dataclass
class Row:
    scenario: str
    kind: str
    adapters: int
    mix: str
    reference: str  # the single-adapter scenario of the same kind
    engine_tokens_per_s: float
    swap_tokens_per_s: float
    groups_per_wave: float  # distinct adapters among the rows in flight together (swap's batches)
    same_text: int  # requests whose greedy text is PEFT's (batched, else the row alone)
    requests: int
    vs_single: float = 0.0
    vs_base: float = 0.0
    vs_swap: float = 0.0

    def set_ratios(self, single: Row, base: Row) -> None:
        self.vs_single = _ratio(self.engine_tokens_per_s, single.engine_tokens_per_s)
        self.vs_base = _ratio(self.engine_tokens_per_s, base.engine_tokens_per_s)
        self.vs_swap = _ratio(self.engine_tokens_per_s, self.swap_tokens_per_s)


@dataclass
class WaitClass:
    requests: int
    wait_steps_p50: float
    wait_steps_p99: float
    wait_steps_max: int
    ttft_ms_p50: float
    ttft_ms_max: float


@dataclass
class Fairness:
    streams: int
    batch: int
    hot_share: float
    cold_adapters: int
    max_tokens: int
    bound_steps: int  # FIFO admission: max_tokens * ceil((streams - batch) / batch)
    classes: dict[str, WaitClass] = field(default_factory=dict)

    @classmethod
    def of(
        cls, waits: dict[str, list[tuple[int, float]]], args: argparse.Namespace, cold_adapters: int
    ) -> Fairness:
        queued = max(0, args.fair_streams - args.fair_batch)
        bound = args.tokens * math.ceil(queued / args.fair_batch)
        fair = cls(args.fair_streams, args.fair_batch, args.hot_share, cold_adapters, args.tokens, bound)
        for name, values in waits.items():
            if not values:
                continue
            steps = sorted(v[0] for v in values)
            ttft = sorted(v[1] for v in values)
            fair.classes[name] = WaitClass(
                len(values), _q(steps, 0.5), _q(steps, 0.99), steps[-1], _q(ttft, 0.5), ttft[-1]
            )
        return fair

    @property
    def worst_steps(self) -> int:
        return max((c.wait_steps_max for c in self.classes.values()), default=0)


def _q(values: list[float] | list[int], q: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1])


def _throughput_table(rows: list[Row]) -> list[str]:
    lines = [
        "| scenario | adapters | mix | engine tok/s | vs one adapter | vs base | swap tok/s "
        "| vs swap | swap groups / wave | text = PEFT's |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        alone = r.scenario == r.reference or r.kind == "base"
        single = "—" if alone else f"{r.vs_single:.2f} ({r.reference})"
        lines.append(
            f"| {r.scenario} | {r.adapters} | {r.mix} | {r.engine_tokens_per_s:.1f} | {single} "
            f"| {r.vs_base:.2f} | {r.swap_tokens_per_s:.1f} | {r.vs_swap:.2f} | {r.groups_per_wave:.1f} "
            f"| {r.same_text}/{r.requests} |"
        )
    return lines


def _targets(rows: list[Row]) -> list[str]:
    loras = [r for r in rows if r.kind == "lora" and r.mix != "-"]
    if not loras:
        return []
    most = max(r.adapters for r in loras)
    lines = []
    for r in (r for r in loras if r.adapters == most):
        single = "met" if r.vs_single >= 0.8 else "NOT met"
        swap = "met" if r.vs_swap >= 3 else "NOT met"
        lines.append(
            f"- Targets, {r.scenario}: {r.vs_single:.2f}x one adapter (>= 0.8: {single}), "
            f"{r.vs_swap:.2f}x the swap baseline (>= 3: {swap})"
        )
    return lines


def _fairness_table(fair: Fairness) -> list[str]:
    lines = [
        f"One hot adapter ({fair.hot_share:.0%} of requests) and {fair.cold_adapters} cold LoRA adapters; "
        f"{fair.streams} closed-loop streams on a batch of {fair.batch} rows, lengths drawn up to "
        f"{fair.max_tokens} tokens. Wait = scheduler steps run between a request's submission and the "
        "step that prefilled it (SequenceEvent.queued_steps); TTFT = submission to first token.",
        "",
        "| requests | n | wait p50 steps | wait p99 steps | worst wait steps | TTFT p50 ms | worst TTFT ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("hot", "cold"):
        c = fair.classes.get(name)
        if c is None:
            lines.append(f"| {name} | 0 | — | — | — | — | — |")
            continue
        lines.append(
            f"| {name} | {c.requests} | {c.wait_steps_p50:.0f} | {c.wait_steps_p99:.0f} | {c.wait_steps_max} "
            f"| {c.ttft_ms_p50:.0f} | {c.ttft_ms_max:.0f} |"
        )
    verdict = "within" if fair.worst_steps <= fair.bound_steps else "OVER"
    lines += [
        "",
        f"- Worst wait of any request: {fair.worst_steps} steps, {verdict} the FIFO bound "
        f"max_tokens x ceil((streams - batch) / batch) = {fair.bound_steps} steps (admission is in "
        "arrival order whatever the adapter, so a cold adapter waits no longer than a hot one).",
    ]
    return lines


def _classify_table(rows: list[ClassifyRow], clients: int) -> list[str]:
    if not rows:
        return ["(left out: --skip-classify)"]
    lines = [
        f"{clients} closed-loop clients over REST (Caikit text-classification route), one Taskgate process.",
        "",
        "| system | model id | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.system} | {r.model_id} | {r.throughput:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |"
        for r in rows
    ]
    onnx, torch = rows[0], rows[-1]
    lines += [
        "",
        f"- ONNX / torch-merged throughput: {_ratio(onnx.throughput, torch.throughput):.2f}x "
        "(above 1: merging each classifier adapter into its own ONNX model would serve it faster).",
    ]
    return lines


def write_report(
    args: argparse.Namespace, rows: list[Row], fair: Fairness, classify: list[ClassifyRow]
) -> str:
    lines = [
        "# Many adapters in one batch",
        "",
        f"SmolLM2-135M-Instruct on Taskgate's torch engine driven in-process through its "
        f"GenerationScheduler (no server): {args.streams} streams x {args.waves} requests x "
        f"{args.tokens} tokens per run (greedy, min = max new tokens), median of {args.repeats} "
        f"run(s), torch intra-op threads {args.threads}. Swap baseline: PEFT PeftModel, rows of a "
        "wave grouped by adapter, set_adapter + one generate per group, same prompts and lengths.",
        "",
        *_throughput_table(rows),
        "",
        *_targets(rows),
        "",
        "## Fairness",
        "",
        *_fairness_table(fair),
        "",
        "## Encoder side: classifier adapter merged with torch vs the ONNX encoder",
        "",
        *_classify_table(classify, args.classify_clients),
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.md").write_text(text)
    payload = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "throughput": [asdict(r) for r in rows],
        "fairness": asdict(fair) | {"worst_steps": fair.worst_steps},
        "classify": [asdict(r) for r in classify],
    }
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(payload, indent=2))
    return text
