"""Text generation: continuous batching over gRPC vs in-process Hugging Face ``generate``.

    .venv/bin/python bench/generation.py                          # 1, 4, 16 streams x 64 tokens, 3 runs
    .venv/bin/python bench/generation.py --tokens 16 --repeats 1  # smoke run

For each concurrency N: N concurrent gRPC streams (ServerStreamingTextGenerationTaskPredict on
SmolLM2-135M-Instruct, greedy, min_new_tokens = max_new_tokens = --tokens so EOS never ends a
stream early, N distinct prompts of varied length) against Taskgate in its own process. Measured:
aggregate tokens/s (all generated tokens / wall time from the first request to the last
finish), time to first token (request sent -> first chunk carrying a token) and inter-token
latency (gap between chunks / tokens in the later chunk), p50 and p99 over all streams.

Beside it, in this process and before the gateway starts (so they never share the cores):
(a) sequential batch-1 ``model.generate`` over the same N prompts one after another and
(b) one left-padded static-batch ``generate`` of the same N prompts, both on the gateway's own
converted HF folder with the same torch thread counts, and (a') / (b') the same two on the
gateway's own runtime (ONNX Runtime by default) driven step by step in-process, so that
gateway / (b') isolates the serving overhead from the runtime's speed-up over torch. Every
figure is the median of --repeats runs. Targets: 16 streams >= 6x (a) and >= 0.8x (b).
Writes bench/results/generation.{md,json} (generation-partial.* for other --concurrency / --tokens).
Runs on its own model store, bench/.stores/generation/ (bench/stores.py), never ./model-store: the
GGUF conversion and the ONNX export made there on the first run are reused by later ones.
--peers adds, in the same run after the gateway, llama.cpp's server and ONNX Runtime GenAI on the
same model and prompts, and one table of all of them (bench/generation_peers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before torch loads, as in the gateway
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.results_name import results_stem  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import process, wait_for_line  # noqa: E402
from gateway.models.defaults import DEFAULT_GENERATION_MODEL as MODEL  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = store_path("generation")  # its own store, never ./model-store
QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a refrigerator works.",
    "List some tips for learning a new language.",
    "Describe the water cycle to a child.",
    "What are the benefits of regular exercise?",
    "Summarize the history of the printing press.",
    "How do bees make honey?",
    "Give advice to someone starting their first job.",
    "Why is the sky blue?",
    "Describe a walk through a busy market.",
    "What makes a good cup of coffee?",
    "Explain what a computer network is.",
    "Write a poem about autumn leaves.",
    "How do airplanes stay in the air?",
    "Describe how to plant a vegetable garden.",
    "What is the difference between weather and climate?",
]
PADDING = " Please answer in full sentences, with concrete examples and a friendly tone."


def prompts(n: int) -> list[str]:
    """N distinct chat prompts, of 1 to 4 padding clauses (so prompt lengths differ)."""
    out = []
    for i in range(n):
        question = QUESTIONS[i % len(QUESTIONS)] + PADDING * (i % 4) + f" (request {i})"
        out.append(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    return out


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def describe_runtime(args: argparse.Namespace) -> None:
    """Merge --settings into the model's manifest (checked as the gateway checks it) and name the
    runtime and its threads for the report."""
    from gateway.models.model_settings import check_settings
    from runtimes import genai_graph
    from runtimes.base import ThreadSettings

    path = args.store / MODEL / "manifest.json"
    manifest = json.loads(path.read_text())
    if args.settings:
        manifest["settings"] = {**manifest["settings"], **json.loads(args.settings)}
        check_settings(manifest["runtime"], manifest["settings"])
        path.write_text(json.dumps(manifest, indent=2))
    shown = {
        k: v for k, v in manifest["settings"].items() if k not in ("eos_token", "max_batch_size", "max_queue")
    }
    args.runtime_name = f"{manifest['runtime']} {json.dumps(shown)}"
    threads = ThreadSettings(intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads)
    genai = manifest["runtime"] == genai_graph.RUNTIME
    args.generation_threads = threads.for_generation() if genai else args.intra_op_threads
    # the precision whose graph ORT GenAI's Engine also runs in --peers (None: not a GenAI graph)
    precision = manifest["settings"].get(genai_graph.PRECISION_SETTING, genai_graph.DEFAULT_PRECISION)
    args.taskgate_precision = precision if genai else None


# -- in-process baselines -----------------------------------------------------------------
def converted_folder(store: Path) -> Path:
    """The gateway's own converted HF folder for the model (converting the GGUF file once)."""
    from gateway.models.store import ModelStore
    from runtimes.gguf_convert import TokenizerFixes, convert_cached

    manifest = ModelStore(store).manifest(MODEL)
    return convert_cached(manifest.source, manifest.folder, TokenizerFixes.from_options(manifest.settings))


def baselines(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """{N: {"sequential": tokens/s, "static": tokens/s}}, medians over --repeats runs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.intra_op_threads)
    torch.set_num_interop_threads(args.inter_op_threads)
    folder = converted_folder(args.store)
    tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]
    tokenizer.padding_side = "left"
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    options = {
        "do_sample": False, "max_new_tokens": args.tokens, "min_new_tokens": args.tokens,
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": model.generation_config.eos_token_id,
    }  # fmt: skip

    def generate(texts: list[str]) -> int:
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**batch, **options)
        new = out.shape[1] - batch["input_ids"].shape[1]
        assert new == args.tokens, f"generate made {new} tokens, not {args.tokens}"
        return new * len(texts)

    return time_baselines(generate, args, "", "in-process HF generate")  # the model goes with this frame


def time_baselines(
    generate: Callable[[list[str]], int], args: argparse.Namespace, prefix: str, label: str
) -> dict[int, dict[str, float]]:
    """{N: {prefix + "sequential", prefix + "static"}} tok/s: the N prompts one by one, then together."""
    generate(prompts(2))  # warm up
    tick = "'" if prefix else ""
    results: dict[int, dict[str, float]] = {}
    for n in args.concurrency:
        texts = prompts(n)
        sequential, static = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            tokens = sum(generate([text]) for text in texts)
            sequential.append(tokens / (time.perf_counter() - start))
            start = time.perf_counter()
            tokens = generate(texts)
            static.append(tokens / (time.perf_counter() - start))
        one, all_ = statistics.median(sequential), statistics.median(static)
        results[n] = {f"{prefix}sequential": one, f"{prefix}static": all_}
        print(
            f"{label} N={n}: (a{tick}) sequential batch-1 {one:.1f} tok/s, "
            f"(b{tick}) static batch {all_:.1f} tok/s",
            flush=True,
        )
    return results


def runtime_baselines(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """The gateway's own runtime in-process, no server: {N: {"rt_sequential", "rt_static"}} tok/s.

    (a') each prompt alone (prefill, then --tokens - 1 decode steps) and (b') all N prompts
    prefilled together, then decoded together: the same steps the scheduler issues, without
    the gateway. Gateway / (b') is the serving overhead; (b') / (b) is the runtime's speed-up.
    """
    import numpy as np

    from gateway.models.store import ModelStore
    from runtimes.base import ThreadSettings
    from runtimes.catalog import factory_for
    from runtimes.causal_lm import CausalLMRuntime, GenerationStep, NewSequence

    manifest = ModelStore(args.store).manifest(MODEL)
    threads = ThreadSettings(intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads)
    factory = factory_for(manifest.runtime)
    runtime = factory(
        source=manifest.source, work_dir=manifest.folder, options=manifest.settings, threads=threads
    )
    assert isinstance(runtime, CausalLMRuntime)
    runtime.load()
    runtime.prepare_thread()

    def generate(texts: list[str]) -> int:
        seqs = tuple(NewSequence(i, tuple(runtime.encode(t))) for i, t in enumerate(texts))
        out = runtime.run_batch(GenerationStep(prefill=seqs))
        for _ in range(args.tokens - 1):
            tokens = np.asarray(out.logits).argmax(-1)
            step = tuple(zip(out.seq_ids, map(int, tokens), strict=True))
            out = runtime.run_batch(GenerationStep(decode=step))
        runtime.run_batch(GenerationStep(release=out.seq_ids))
        return args.tokens * len(texts)

    results = time_baselines(generate, args, "rt_", f"in-process {manifest.runtime}")
    runtime.unload()
    return results


# -- the gateway over gRPC ----------------------------------------------------------------
@dataclass
class Stream:
    tokens: int
    ttft_ms: float
    itl_ms: list[float]
    finished: float


@dataclass
class Row:
    streams: int
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    short_streams: int  # streams that did not get exactly --tokens tokens (all runs)
    sequential_tokens_per_s: float = 0.0
    static_tokens_per_s: float = 0.0
    rt_sequential_tokens_per_s: float = 0.0
    rt_static_tokens_per_s: float = 0.0

    @property
    def vs_sequential(self) -> float:
        return _ratio(self.tokens_per_s, self.sequential_tokens_per_s)

    @property
    def vs_static(self) -> float:
        return _ratio(self.tokens_per_s, self.static_tokens_per_s)

    @property
    def vs_rt_sequential(self) -> float:
        return _ratio(self.tokens_per_s, self.rt_sequential_tokens_per_s)

    @property
    def vs_rt_static(self) -> float:
        return _ratio(self.tokens_per_s, self.rt_static_tokens_per_s)


def _ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline else 0.0


async def one_stream(stub: object, text: str, tokens: int) -> Stream:
    from gateway.wire import caikit_runtime_nlp_pb2 as nlp

    request = nlp.ServerStreamingTextGenerationTaskRequest(
        text=text, max_new_tokens=tokens, min_new_tokens=tokens, decoding_method="GREEDY"
    )
    start = time.perf_counter()
    last, seen, ttft, itl = start, 0, float("nan"), []
    call = stub.ServerStreamingTextGenerationTaskPredict(request, metadata=(("mm-model-id", MODEL),))  # type: ignore[attr-defined]
    async for chunk in call:
        now = time.perf_counter()
        count = chunk.details.generated_tokens
        added = count - seen if count else int(bool(chunk.generated_text or chunk.tokens))
        if added <= 0:
            continue
        if seen == 0:
            ttft = (now - start) * 1000
        else:
            itl.extend([(now - last) * 1000 / added] * added)
        seen += added
        last = now
    return Stream(seen, ttft, itl, time.perf_counter())


async def measure(grpc_address: str, args: argparse.Namespace) -> list[Row]:
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    rows = []
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        await asyncio.gather(*(one_stream(stub, t, 8) for t in prompts(4)))  # warm up
        for n in args.concurrency:
            texts = prompts(n)
            runs, short = [], 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                streams = await asyncio.gather(*(one_stream(stub, t, args.tokens) for t in texts))
                wall = max(s.finished for s in streams) - start
                short += sum(s.tokens != args.tokens for s in streams)
                ttfts = [s.ttft_ms for s in streams]
                itls = [x for s in streams for x in s.itl_ms]
                runs.append((
                    sum(s.tokens for s in streams) / wall,
                    quantile(ttfts, 0.5), quantile(ttfts, 0.99), quantile(itls, 0.5), quantile(itls, 0.99),
                ))  # fmt: skip
            medians = [statistics.median(column) for column in zip(*runs, strict=True)]
            tokens_per_s, ttft50, ttft99, itl50, itl99 = medians
            rows.append(Row(n, tokens_per_s, ttft50, ttft99, itl50, itl99, short))
            print(f"gateway N={n}: {medians[0]:.1f} tok/s, TTFT p50 {medians[1]:.0f} ms", flush=True)
    return rows


def gateway(args: argparse.Namespace) -> list[Row]:
    command = [
        sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(args.store),
        "--grpc-port", "0", "--http-port", "0", "--preload", MODEL, "--log-level", "warning",
        "--intra-op-threads", str(args.intra_op_threads), "--inter-op-threads", str(args.inter_op_threads),
    ]  # fmt: skip
    with process(command) as proc:
        match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=600)
        rows = asyncio.run(measure(match.group(1), args))
        if args.peers:  # its greedy answer to the question every peer answers
            from bench.generation_peers import taskgate_answer

            args.taskgate_answer = asyncio.run(taskgate_answer(match.group(1), MODEL))
        return rows


# -- report -------------------------------------------------------------------------------
HEADER = (
    "| N | gateway tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms "
    "| (a) HF seq. batch-1 tok/s | (b) HF static batch tok/s | gateway/(a) | gateway/(b) "
    "| (a') runtime seq. tok/s | (b') runtime static tok/s | gateway/(a') | gateway/(b') |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _fmt(row: Row) -> str:
    return (
        f"| {row.streams} | {row.tokens_per_s:.1f} | {row.ttft_p50_ms:.0f} | {row.ttft_p99_ms:.0f} "
        f"| {row.itl_p50_ms:.1f} | {row.itl_p99_ms:.1f} | {row.sequential_tokens_per_s:.1f} "
        f"| {row.static_tokens_per_s:.1f} | {row.vs_sequential:.2f} | {row.vs_static:.2f} "
        f"| {row.rt_sequential_tokens_per_s:.1f} | {row.rt_static_tokens_per_s:.1f} "
        f"| {row.vs_rt_sequential:.2f} | {row.vs_rt_static:.2f} |"
    )


def report(args: argparse.Namespace, rows: list[Row]) -> str:
    lines = [
        "# Text generation benchmark",
        "",
        f"{MODEL}, {args.tokens} new tokens per stream (greedy, min = max new tokens), "
        f"median of {args.repeats} run(s). Threads: torch intra-op {args.intra_op_threads}, "
        f"inter-op {args.inter_op_threads} in the gateway and in the in-process baselines "
        "(measured in this process before the gateway started). "
        f"Runtime: {getattr(args, 'runtime_name', '?')}, "
        f"{getattr(args, 'generation_threads', args.intra_op_threads)} ONNX Runtime threads a step.",
        "",
        HEADER,
        *(_fmt(r) for r in rows),
        "",
    ]
    for row in rows:
        if row.short_streams:
            lines.append(
                f"- N={row.streams}: {row.short_streams} stream(s) ended short of {args.tokens} tokens"
            )
    top = max(rows, key=lambda r: r.streams)
    lines.append(
        f"- Targets at N={top.streams}: gateway/(a) {top.vs_sequential:.2f} (>= 6: "
        f"{'met' if top.vs_sequential >= 6 else 'NOT met'}), gateway/(b) {top.vs_static:.2f} "
        f"(>= 0.8: {'met' if top.vs_static >= 0.8 else 'NOT met'}); against its own runtime "
        f"in-process: gateway/(a') {top.vs_rt_sequential:.2f}, gateway/(b') {top.vs_rt_static:.2f}"
    )
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.md").write_text(text)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    ratios = [
        {"vs_sequential": r.vs_sequential, "vs_static": r.vs_static,
         "vs_rt_sequential": r.vs_rt_sequential, "vs_rt_static": r.vs_rt_static}
        for r in rows
    ]  # fmt: skip
    payload = {"settings": settings, "rows": [asdict(r) | x for r, x in zip(rows, ratios, strict=True)]}
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(payload, indent=2))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=STORE, help="its own model store (not a user's)")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrent streams, comma-separated")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is kept")
    parser.add_argument("--intra-op-threads", type=int, default=1, help="torch intra-op threads (both sides)")
    parser.add_argument("--inter-op-threads", type=int, default=1, help="torch inter-op threads (both sides)")
    parser.add_argument("--peers", action="store_true", help="also llama.cpp and ORT GenAI, same run")
    parser.add_argument(
        "--settings",
        default="",
        help='JSON merged into the model\'s manifest settings, e.g. \'{"spinning": "off"}\'',
    )
    args = parser.parse_args()
    args.stem = results_stem("generation", parser, args, ("concurrency", "tokens", "settings"))
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    prepare_store(args.store)  # default manifests afresh (conversion and export kept)
    describe_runtime(args)

    base = baselines(args)
    gc.collect()
    own = runtime_baselines(args)
    gc.collect()
    rows = gateway(args)
    for row in rows:
        row.sequential_tokens_per_s = base[row.streams]["sequential"]
        row.static_tokens_per_s = base[row.streams]["static"]
        row.rt_sequential_tokens_per_s = own[row.streams]["rt_sequential"]
        row.rt_static_tokens_per_s = own[row.streams]["rt_static"]
    print(report(args, rows))
    if args.peers:
        from bench.generation_peers import section

        streams = {n: prompts(n) for n in args.concurrency}
        print(section(args, rows, streams, converted_folder(args.store), MODEL))


if __name__ == "__main__":
    main()
