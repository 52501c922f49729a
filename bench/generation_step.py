"""One prefill and one decode step of the raw ONNX Runtime session, variant by variant, side by side.

    .venv/bin/python bench/generation_step.py                       # full run
    .venv/bin/python bench/generation_step.py --runs 3 --threads 1  # smoke

What the onnx-causal-lm runtime's forward pass costs without the gateway, for each graph the
runtime can load, in one process and one run (so a change's effect shows beside its baseline):

- ``fp32``: Optimum's export as the runtime caches it (``runtimes.onnx_export``, with the
  ``logits_to_keep`` input of ``runtimes.causal_graph``);
- ``int4-head-fp32``: every MatMul 4-bit except lm_head (the int4 variant before lm_head was
  quantized: its tied, Transposed embedding is no constant to the quantizer);
- ``int4``: the int4 variant as ``runtimes.quantize`` makes it now (lm_head 8-bit as well).

Each is timed for a prefill of --prompt random tokens (empty cache) at 1 and 16 rows with
``logits_to_keep`` 0 (every position's logits, what Optimum's graph always did) and 1 (the last
position, what the runtime asks for), and a decode step (one token over --past cached columns)
at 1 and 16 rows; with --threads intra-op threads each; medians of --runs after one warm-up,
the variants taking turns inside every run (this machine's load drifts: they share it alike).
Variants are made from the fp32 export into bench/.stores/generation_step/ (seconds, cached).
Writes bench/results/generation_step.{md,json} (generation_step-partial.* when an option differs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from bench.results_name import results_stem  # noqa: E402
from bench.stores import store_path  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = store_path("generation_step")
ROWS = (1, 16)


def fp32_export() -> Path:
    """SmolLM2's fp32 export, converted and exported (cached) into this benchmark's store."""
    from gateway.models.defaults import default_manifests
    from runtimes.gguf_convert import TokenizerFixes, convert_cached
    from runtimes.onnx_export import export_cached
    from runtimes.onnx_generation import TASK

    smollm = next(m for m in default_manifests(WORK) if m.runtime == "onnx-causal-lm")
    source = Path(smollm.source)
    work = WORK / smollm.model_id
    folder = (
        convert_cached(source, work, TokenizerFixes.from_options(smollm.settings))
        if source.suffix == ".gguf"
        else source
    )
    return export_cached(folder, work, TASK)


def int4_variant(exported: Path, name: str, head: bool) -> Path:
    """A 4-bit copy of the export (lm_head quantized as runtimes.quantize does when ``head``,
    else left fp32), cached by name."""
    import onnx

    from runtimes.quantize import INT4_SETTINGS
    from runtimes.quantize_checks import quantize_int4

    settings = {k: v for k, v in INT4_SETTINGS.items() if head or k != "lm_head_bits"}
    target = WORK / name
    stamp = json.dumps({"base": (exported / "fingerprint.json").read_text(), "settings": settings})
    if (target / "stamp.json").is_file() and (target / "stamp.json").read_text() == stamp:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    quantized = quantize_int4(onnx.load(str(exported / "model.onnx")), settings)
    quantized.save_model_to_file(str(target / "model.onnx"), use_external_data_format=False)
    (target / "stamp.json").write_text(stamp)
    return target


class Step:
    """A session over one graph, fed as OnnxCausalLM feeds it."""

    def __init__(self, model: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past = [n for n in inputs if n.startswith("past_key_values.")]
        self.outputs = ["logits", *(n.replace("past_key_values.", "present.", 1) for n in self.past)]
        self.keeps = "logits_to_keep" in inputs
        shape = inputs[self.past[0]].shape
        self.heads, self.head_dim = int(shape[1]), int(shape[3])

    def run(self, ids: np.ndarray, cache: list[np.ndarray] | None, keep: int) -> list[np.ndarray]:
        rows, new = ids.shape
        if cache is None:
            cache = [np.zeros((rows, self.heads, 0, self.head_dim), np.float32)] * len(self.past)
        past = cache[0].shape[2]
        feeds: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": np.ones((rows, past + new), np.int64),
            "position_ids": np.broadcast_to(np.arange(past, past + new, dtype=np.int64), (rows, new)).copy(),
        }
        if self.keeps:
            feeds["logits_to_keep"] = np.asarray([keep], np.int64)
        feeds.update(zip(self.past, cache, strict=True))
        result: list[np.ndarray] = self.session.run(self.outputs, feeds)
        return result


def cells(step: Step, args: argparse.Namespace) -> dict[str, Any]:
    """Each cell's call on this session (same random inputs for every variant)."""
    rng = np.random.default_rng(0)
    calls: dict[str, Any] = {}
    for rows in ROWS:
        prompt = rng.integers(100, 40000, (rows, args.prompt), dtype=np.int64)
        for keep in (0, 1):
            # a graph without logits_to_keep always computes every position's logits
            calls[f"prefill {rows}r keep{keep}"] = partial(step.run, prompt, None, keep if step.keeps else 0)
        context = rng.integers(100, 40000, (rows, args.past), dtype=np.int64)
        cache = step.run(context, None, 1)[1:]
        token = rng.integers(100, 40000, (rows, 1), dtype=np.int64)
        calls[f"decode {rows}r"] = partial(step.run, token, cache, 1)
    return calls


def measure(steps: dict[str, Step], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Medians per variant and cell; the variants take turns inside every run (a load that
    drifts over the run weighs on each alike)."""
    calls = {variant: cells(step, args) for variant, step in steps.items()}
    names = list(next(iter(calls.values())))
    times: dict[str, dict[str, list[float]]] = {v: {n: [] for n in names} for v in calls}
    for name in names:
        for variant in calls:
            calls[variant][name]()  # warm-up
        for _ in range(args.runs):
            for variant in calls:
                started = time.perf_counter()
                calls[variant][name]()
                times[variant][name].append((time.perf_counter() - started) * 1000)
    return {v: {n: round(statistics.median(t), 2) for n, t in by.items()} for v, by in times.items()}


def report(args: argparse.Namespace, results: dict[str, dict[str, dict[str, float]]]) -> str:
    columns = [f"prefill {r}r keep{k}" for r in ROWS for k in (0, 1)] + [f"decode {r}r" for r in ROWS]
    lines = [
        "# One raw ORT step of SmolLM2-135M (ms, median of "
        f"{args.runs}; prompt {args.prompt} tokens, decode over {args.past} cached columns)",
        "",
        "keep0: logits of every position (Optimum's graph as exported); keep1: the last position's "
        "only (the runtime's request). Tokens/s at one row is 1000 / decode 1r.",
        "",
        "| variant | threads | " + " | ".join(columns) + " | tok/s 1r | tok/s 16r |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for variant, by_threads in results.items():
        for threads, figures in by_threads.items():
            cells = [f"{figures[c]:.1f}" for c in columns]
            one = 1000 / figures["decode 1r"]
            sixteen = 16000 / figures["decode 16r"]
            lines.append(
                f"| {variant} | {threads} | " + " | ".join(cells) + f" | {one:.0f} | {sixteen:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per cell (median kept)")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    parser.add_argument("--prompt", type=int, default=40, help="prompt tokens per row in a prefill")
    parser.add_argument("--past", type=int, default=80, help="cached columns of a decode step")
    parser.add_argument("--variants", default="fp32,int4-head-fp32,int4")
    args = parser.parse_args()
    exported = fp32_export()
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    models = {
        "fp32": lambda: exported,
        "int4-head-fp32": lambda: int4_variant(exported, "int4-head-fp32", head=False),
        "int4": lambda: int4_variant(exported, "int4", head=True),
    }
    folders = {variant: models[variant]() for variant in args.variants.split(",")}
    results: dict[str, dict[str, dict[str, float]]] = {variant: {} for variant in folders}
    for threads in (int(t) for t in args.threads.split(",")):
        steps = {variant: Step(folder / "model.onnx", threads) for variant, folder in folders.items()}
        for variant, figures in measure(steps, args).items():
            results[variant][str(threads)] = figures
            print(variant, threads, figures, flush=True)
        del steps
    stem = results_stem("generation_step", parser, args, ("runs", "threads", "prompt", "past", "variants"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = report(args, results)
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
