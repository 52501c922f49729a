"""Many adapters in one batch (issue 10): Taskgate's torch engine against a single adapter, the base
model and PEFT's swap-per-group way, all in this one run; plus fairness and the encoder side.

    .venv/bin/python bench/adapters_mixed.py            # full matrix, 3 repeats (long: see --help)
    .venv/bin/python bench/adapters_mixed.py --quick    # smoke run: few adapters, tokens, seconds

Generation is driven IN-PROCESS: Taskgate's ``GenerationScheduler`` (the gateway's continuous
batching) over the ``TorchCausalLM`` engine of SmolLM2-135M-Instruct holding every adapter at once
(LoRA rows through the LoraBank's per-row gathered weights, prompt rows by per-row virtual tokens),
no server and no network, so the figures are the engine's. The benchmark makes its adapters
(bench/random_adapters.py: random LoRA r=8 on q_proj/v_proj; prompt tuning with 8 random virtual
tokens). A run is --streams closed-loop streams x --waves requests each of exactly --tokens new
tokens (greedy, min = max), so the batch runs waves of --streams rows; each request names an
adapter drawn from the scenario's mix (uniform: every adapter in turn, shuffled; Zipf s=1.1).
Scenarios: the base alone, one LoRA, one prompt adapter, 1/8/64 LoRA adapters, 64 prompt-tuned
adapters, a 50/50 LoRA / prompt mix (32 + 32), each uniform and Zipf.

The swap baseline (bench/swap_baseline.py) runs the same requests, wave by wave, as PEFT serves
several adapters: a PeftModel holding them all; per wave the rows grouped by adapter; per group
``set_adapter`` then one static-batch ``generate``. Each request's greedy text is compared with
PEFT's (the batch's; where that differs, PEFT's for the row alone, untimed).
Reported: tokens/s (median of --repeats, scenarios interleaved), ratios to one adapter of the
same kind, to the base and to the swap baseline. Targets: 64 mixed LoRA >= 0.8x one adapter and
>= 3x the swap baseline.

Fairness: one hot adapter (--hot-share of requests) and the other LoRA adapters cold, more
streams than batch rows, random lengths; the scheduler steps each request waited before its
prefill (``SequenceEvent.queued_steps``) and its time to first token, hot vs cold.

Encoder side (bench/classifier_adapters.py): a Taskgate process classifies with the ONNX MiniLM
classifier and with a classifier adapter merged into MiniLM with torch, --classify-clients
closed-loop clients over REST.

Writes bench/results/adapters_mixed.{md,json} (adapters_mixed-partial.* for --quick or other
matrix options). Uses its own store bench/.stores/adapters_mixed/ (adapters and sources beside it
in bench/.stores/adapters_mixed-sources/), never ./model-store.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before torch loads, as in the gateway
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.adapters_mixed_report import Fairness, Row, write_report  # noqa: E402
from bench.engine_streams import Job, Run, run_streams, scheduler  # noqa: E402
from bench.generation import converted_folder, prompts  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.stores import STORES, prepare_store, store_path  # noqa: E402
from gateway.models.defaults import DEFAULT_GENERATION_MODEL as MODEL  # noqa: E402

STORE = store_path("adapters_mixed")
SOURCES = STORES / "adapters_mixed-sources"
ZIPF_S = 1.1

if TYPE_CHECKING:
    from bench.swap_baseline import SwapBaseline
    from runtimes.torch_generation import TorchCausalLM


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # base | lora | prompt | mix
    adapters: int  # distinct adapters it draws from
    mix: str  # uniform | zipf | - (one adapter or none)

    @property
    def reference(self) -> str:
        """The single-adapter scenario its ratio is taken to."""
        return "prompt-1" if self.kind == "prompt" else "lora-1"


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    out = [Scenario("base", "base", 0, "-"), Scenario("lora-1", "lora", 1, "-")]
    out.append(Scenario("prompt-1", "prompt", 1, "-"))
    for count in args.lora_counts:
        if count > 1:
            out += [Scenario(f"lora-{count}-{m}", "lora", count, m) for m in ("uniform", "zipf")]
    many = args.adapters
    out += [Scenario(f"prompt-{many}-{m}", "prompt", many, m) for m in ("uniform", "zipf")]
    out += [Scenario(f"mix-{many}-{m}", "mix", many, m) for m in ("uniform", "zipf")]
    return out


def _draw(keys: list[str], mix: str, n: int, rng: random.Random) -> list[str]:
    if mix == "zipf":
        return rng.choices(keys, weights=[1 / (k + 1) ** ZIPF_S for k in range(len(keys))], k=n)
    out: list[str] = []
    while len(out) < n:  # every adapter once per cycle, in a shuffled order
        cycle = list(keys)
        rng.shuffle(cycle)
        out += cycle
    return out[:n]


def draw_adapters(scenario: Scenario, n: int, rng: random.Random) -> list[str | None]:
    if scenario.kind == "base":
        return [None] * n
    loras = [f"lora-{i:02d}" for i in range(scenario.adapters)]
    prompts_ = [f"prompt-{i:02d}" for i in range(scenario.adapters)]
    if scenario.kind == "lora":
        return list(_draw(loras, scenario.mix, n, rng))
    if scenario.kind == "prompt":
        return list(_draw(prompts_, scenario.mix, n, rng))
    half = scenario.adapters // 2  # mix: LoRA and prompt rows alternate, each drawn from its half
    lora_rows = _draw(loras[:half], scenario.mix, (n + 1) // 2, rng)
    prompt_rows = _draw(prompts_[:half], scenario.mix, n // 2, rng)
    return [lora_rows[i // 2] if i % 2 == 0 else prompt_rows[i // 2] for i in range(n)]


def _swap_run(
    swap: SwapBaseline, jobs: list[Job], streams: int, tokens: int
) -> tuple[float, list[list[int]]]:
    """The swap baseline over the same jobs, wave by wave: (tokens/s, new ids of each job)."""
    outputs: list[list[int]] = []
    start = time.perf_counter()
    for first in range(0, len(jobs), streams):
        wave = [(job.prompt, job.adapter) for job in jobs[first : first + streams]]
        outputs += swap.generate(wave, tokens)
    return len(jobs) * tokens / (time.perf_counter() - start), outputs


def _same_as_peft(
    runtime: TorchCausalLM, swap: SwapBaseline, jobs: list[Job], run: Run, outputs: list[list[int]]
) -> list[bool]:
    """Whether each request's greedy text is PEFT's: that of the swap baseline's batch or, where it
    differs, of PEFT generating the row alone (untimed). PEFT's batched prompt tuning puts the
    left padding between the virtual tokens and the prompt, which shifts a padded row's positions."""
    same = []
    for i, ids in enumerate(outputs):
        text = run.done[i].text
        if text != runtime.decode(ids):
            job = jobs[i]
            ids = swap.generate([(job.prompt, job.adapter)], job.tokens)[0]
        same.append(text == runtime.decode(ids))
    return same


def throughput(
    args: argparse.Namespace, runtime: TorchCausalLM, swap: SwapBaseline, texts: list[str]
) -> list[Row]:
    chosen = scenarios(args)
    encoded = [tuple(runtime.encode(t)) for t in texts]
    engine: dict[str, list[float]] = {s.name: [] for s in chosen}
    swapped: dict[str, list[float]] = {s.name: [] for s in chosen}
    same: dict[str, list[bool]] = {s.name: [] for s in chosen}
    groups: dict[str, list[int]] = {s.name: [] for s in chosen}
    running = scheduler(runtime, args.streams)
    try:
        run_streams(running, [Job(encoded[0], None, 4)], 1)  # warm up
        for repeat in range(args.repeats):
            for scenario in chosen:
                rng = random.Random(f"{scenario.name}-{repeat}")
                adapters = draw_adapters(scenario, len(encoded), rng)
                jobs = [Job(p, a, args.tokens) for p, a in zip(encoded, adapters, strict=True)]
                run: Run = run_streams(running, jobs, args.streams)
                if run.tokens != len(jobs) * args.tokens:
                    raise RuntimeError(f"{scenario.name}: {run.tokens} tokens, not {len(jobs) * args.tokens}")
                engine[scenario.name].append(run.tokens_per_s)
                rate, outputs = _swap_run(swap, jobs, args.streams, args.tokens)
                swapped[scenario.name].append(rate)
                same[scenario.name] += _same_as_peft(runtime, swap, jobs, run, outputs)
                waves = [adapters[i : i + args.streams] for i in range(0, len(adapters), args.streams)]
                groups[scenario.name] += [len(set(wave)) for wave in waves]
                print(
                    f"repeat {repeat + 1}/{args.repeats} {scenario.name}: engine {run.tokens_per_s:.1f} "
                    f"tok/s, swap {rate:.1f} tok/s",
                    flush=True,
                )
    finally:
        running.close()
    rows = []
    for s in chosen:
        rows.append(
            Row(
                scenario=s.name, kind=s.kind, adapters=s.adapters, mix=s.mix, reference=s.reference,
                engine_tokens_per_s=statistics.median(engine[s.name]),
                swap_tokens_per_s=statistics.median(swapped[s.name]),
                groups_per_wave=statistics.mean(groups[s.name]),
                same_text=sum(same[s.name]), requests=len(same[s.name]),
            )
        )  # fmt: skip
    by_name = {r.scenario: r for r in rows}
    for row in rows:
        row.set_ratios(by_name[row.reference], by_name["base"])
    return rows


def fairness(args: argparse.Namespace, runtime: TorchCausalLM, texts: list[str]) -> Fairness:
    """One hot adapter, the other LoRA adapters cold; more streams than rows; random lengths."""
    rng = random.Random("fairness")
    hot, cold = "lora-00", [f"lora-{i:02d}" for i in range(1, max([*args.lora_counts, args.adapters]))]
    jobs = []
    for i in range(args.fair_requests):
        adapter = hot if rng.random() < args.hot_share or not cold else rng.choice(cold)
        prompt = tuple(runtime.encode(texts[i % len(texts)]))
        jobs.append(Job(prompt, adapter, rng.randint(max(1, args.tokens // 4), args.tokens)))
    running = scheduler(runtime, args.fair_batch)
    try:
        run = run_streams(running, jobs, args.fair_streams)
    finally:
        running.close()
    waits: dict[str, list[tuple[int, float]]] = {"hot": [], "cold": []}
    for index, job in enumerate(jobs):
        done = run.done[index]
        waits["hot" if job.adapter == hot else "cold"].append((done.queued_steps, done.ttft_ms))
    return Fairness.of(waits, args, cold_adapters=len(cold))


def load_engine(
    args: argparse.Namespace, loras: dict[str, Path], prompt_folders: dict[str, Path]
) -> TorchCausalLM:
    from gateway.models.store import ModelStore
    from runtimes.base import ThreadSettings
    from runtimes.torch_generation import TorchCausalLM

    manifest = ModelStore(args.store).manifest(MODEL)
    threads = ThreadSettings(intra_op_threads=args.threads, inter_op_threads=1, model_workers=1)
    runtime = TorchCausalLM(
        source=manifest.source, work_dir=manifest.folder, options=manifest.settings, threads=threads
    )
    runtime.load()
    for key, folder in {**loras, **prompt_folders}.items():
        runtime.load_adapter(key, folder)
    return runtime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=STORE, help="its own model store (not a user's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 adapters, 4 streams x 8 tokens")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams (rows of the batch)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--waves", type=int, default=2, help="requests per stream in one run")
    parser.add_argument("--lora-counts", default="1,8,64", help="distinct LoRA adapters, comma-separated")
    parser.add_argument("--adapters", type=int, default=64, help="adapters of the prompt and mixed scenarios")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario; the median is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (engine and PEFT)")
    parser.add_argument("--hot-share", type=float, default=0.9, help="fairness: share of the hot adapter")
    parser.add_argument("--fair-streams", type=int, default=24, help="fairness: concurrent streams")
    parser.add_argument("--fair-batch", type=int, default=16, help="fairness: rows of the batch")
    parser.add_argument("--fair-requests", type=int, default=96, help="fairness: requests in all")
    parser.add_argument("--classify-clients", type=int, default=16, help="encoder side: closed-loop clients")
    parser.add_argument("--classify-seconds", type=float, default=8.0, help="encoder side: seconds per run")
    parser.add_argument("--skip-classify", action="store_true", help="leave the encoder side out")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.tokens, args.waves, args.repeats = 4, 8, 2, 1
        args.lora_counts, args.adapters = "1,4", 4
        args.fair_streams, args.fair_batch, args.fair_requests = 6, 4, 24
        args.classify_seconds = 2.0
    scope = ("quick", "streams", "tokens", "waves", "lora_counts", "adapters", "skip_classify")
    args.stem = results_stem("adapters_mixed", parser, args, scope)
    args.lora_counts = sorted({int(c) for c in str(args.lora_counts).split(",")})
    if args.adapters % 2 or args.adapters < 2:
        parser.error("--adapters must be even (the mixed scenario is half LoRA, half prompt)")
    prepare_store(args.store)

    import torch

    from bench.random_adapters import lora_adapters, prompt_adapters
    from bench.swap_baseline import SwapBaseline

    torch.set_num_threads(args.threads)
    folder = converted_folder(args.store)
    count = max([*args.lora_counts, args.adapters])
    loras = lora_adapters(folder, SOURCES / "generation", count)
    prompt_folders = prompt_adapters(folder, SOURCES / "generation", args.adapters)
    runtime = load_engine(args, loras, prompt_folders)
    texts = prompts(args.streams * args.waves)
    # left padding is masked out, so EOS serves as the pad id
    eos = runtime.eos_token_id
    swap = SwapBaseline(folder, loras, prompt_folders, pad_id=eos, eos_id=eos)
    rows = throughput(args, runtime, swap, texts)
    del swap
    gc.collect()
    fair = fairness(args, runtime, texts)
    runtime.unload()
    del runtime
    gc.collect()
    classify = []
    if not args.skip_classify:
        from bench.classifier_adapters import classify_throughput

        classify = classify_throughput(
            args.store, SOURCES, args.classify_clients, args.classify_seconds, args.repeats, args.threads
        )
    print(write_report(args, rows, fair, classify))


if __name__ == "__main__":
    main()
