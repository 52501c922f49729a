"""The onnx-genai-causal-lm runtime's decode step under each ORT spinning mode, side by side.

    .venv/bin/python bench/genai_step.py                   # full run
    .venv/bin/python bench/genai_step.py --runs 1 --rows 1  # smoke

What one step costs in-process, without the gateway: the runtime (``runtimes.genai_generation``,
the embedded SmolLM2 at the shipped int4 precision) prefills --rows chat prompts of the
generation benchmark, then decodes --tokens greedy steps (numpy argmax between steps, nothing
else), and the median decode step is kept. One runtime per spinning mode ("off", "while_running",
"always"), all loaded in this process; the modes take turns inside every run (this machine's
load drifts: they share it alike) and each cell is the median of --runs runs. With --gap-ms the
loop also busy-waits that long between steps, standing in for the Python work the gateway does
between steps (sampling, sending the tokens). --threads is the step's intra-op thread count
(the gateway's default: every core).

--staggered adds, with the default mode, closed-loop traffic through the scheduler in-process
(bench/engine_streams.py): 16 streams of requests of 8 to 64 greedy tokens (seeded), so rows
leave and join the running batch at different steps, as in real traffic; tokens/s of each run.

Runs on its own store, bench/.stores/genai_step/ (its conversion and graph build are cached).
Writes bench/results/genai_step.{md,json} (genai_step-partial.* when an option differs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.generation import prompts  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = store_path("genai_step")


def load(mode: str, threads: int) -> Any:
    from gateway.models.defaults import DEFAULT_GENERATION_MODEL
    from gateway.models.store import ModelStore
    from runtimes.base import ThreadSettings
    from runtimes.genai_generation import SPINNING_SETTING, GenaiCausalLM

    manifest = ModelStore(STORE).manifest(DEFAULT_GENERATION_MODEL)
    runtime = GenaiCausalLM(
        source=manifest.source,
        work_dir=manifest.folder,
        options={**manifest.settings, SPINNING_SETTING: mode},
        threads=ThreadSettings(intra_op_threads=1, inter_op_threads=1, generation_threads=threads),
    )
    runtime.load()
    return runtime


def decode_ms(runtime: Any, rows: int, tokens: int, gap_s: float) -> float:
    """Median decode step (ms) of ``rows`` prompts generating ``tokens`` tokens greedily."""
    from runtimes.causal_lm import GenerationStep, NewSequence

    runtime.prepare_thread()
    texts = prompts(rows)
    seqs = tuple(NewSequence(i, tuple(runtime.encode(t))) for i, t in enumerate(texts))
    out = runtime.run_batch(GenerationStep(prefill=seqs))
    steps = []
    for _ in range(tokens - 1):
        chosen = out.logits.numpy().argmax(-1)
        if gap_s:
            until = time.perf_counter() + gap_s
            while time.perf_counter() < until:
                pass
        start = time.perf_counter()
        out = runtime.run_batch(GenerationStep(decode=tuple(zip(out.seq_ids, map(int, chosen), strict=True))))
        steps.append(time.perf_counter() - start)
    runtime.run_batch(GenerationStep(release=runtime.running))
    return statistics.median(steps) * 1e3


def staggered_tokens_per_s(runtime: Any, runs: int, jobs_per_stream: int = 12) -> list[float]:
    """Tokens/s of 16 closed-loop streams of requests of random length (seeded), per run."""
    import random

    from bench.engine_streams import Job, run_streams, scheduler

    rng = random.Random(13)
    prompt_ids = [tuple(runtime.encode(t)) for t in prompts(16)]
    jobs = [Job(rng.choice(prompt_ids), None, rng.randint(8, 64)) for _ in range(16 * jobs_per_stream)]
    running = scheduler(runtime, 16, name="genai-step")
    try:
        return [run_streams(running, jobs, 16).tokens_per_s for _ in range(runs)]
    finally:
        running.close()


def main() -> None:
    from runtimes.genai_generation import SPINNING_MODES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per cell (median kept)")
    parser.add_argument("--rows", default="1,16", help="rows decoding together, comma-separated")
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens per row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads a step")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="busy Python time between steps")
    parser.add_argument("--staggered", action="store_true", help="also staggered traffic in-process")
    args = parser.parse_args()
    scope = ("runs", "rows", "tokens", "threads", "gap_ms", "staggered")
    stem = results_stem("genai_step", parser, args, scope)
    prepare_store(STORE)
    rows = [int(r) for r in args.rows.split(",")]
    runtimes = {mode: load(mode, args.threads) for mode in SPINNING_MODES}
    for runtime in runtimes.values():  # warm-up
        decode_ms(runtime, 1, 4, 0.0)
    cells: dict[str, dict[int, list[float]]] = {mode: {n: [] for n in rows} for mode in runtimes}
    for run in range(args.runs):
        for n in rows:
            for mode, runtime in runtimes.items():
                cells[mode][n].append(decode_ms(runtime, n, args.tokens, args.gap_ms / 1e3))
        print(f"run {run + 1}/{args.runs} done", flush=True)
    medians = {mode: {n: statistics.median(v) for n, v in by_rows.items()} for mode, by_rows in cells.items()}
    lines = [
        "# onnx-genai-causal-lm: a decode step under each spinning mode",
        "",
        f"SmolLM2-135M-Instruct int4 (the shipped default), in-process, {args.threads} intra-op thread(s), "
        f"{args.tokens} greedy tokens per row, {args.gap_ms} ms of busy Python between steps; median "
        f"decode step in ms over {args.runs} run(s), the modes taking turns in each run.",
        "",
        "| spinning | "
        + " | ".join(f"{n} row(s) ms" for n in rows)
        + " | "
        + " | ".join(f"{n} row(s) vs off" for n in rows)
        + " |",
        "|---|" + "---|" * (2 * len(rows)),
    ]
    for mode, by_rows in medians.items():
        ratios = " | ".join(f"{medians['off'][n] / by_rows[n]:.2f}x" for n in rows)
        lines.append(f"| {mode} | " + " | ".join(f"{by_rows[n]:.2f}" for n in rows) + f" | {ratios} |")
    staggered: list[float] = []
    if args.staggered:
        from runtimes.genai_generation import DEFAULT_SPINNING

        staggered = staggered_tokens_per_s(runtimes[DEFAULT_SPINNING], args.runs)
        lines += [
            "",
            f"Staggered traffic through the scheduler in-process ({DEFAULT_SPINNING}; 16 closed-loop "
            "streams of 12 requests of 8-64 tokens each): "
            + ", ".join(f"{t:.0f}" for t in staggered)
            + f" tok/s, median {statistics.median(staggered):.0f}.",
        ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(text)
    payload = {"settings": vars(args), "runs_ms": cells, "median_ms": medians, "staggered_tok_s": staggered}
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    print(text)


if __name__ == "__main__":
    main()
