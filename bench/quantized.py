"""Quantized variants through the gateway: fp32 vs int8 embeddings; fp32, int4 and the shipped
ORT GenAI int4 default for generation.

    .venv/bin/python bench/quantized.py                                   # full run, 3 repeats
    .venv/bin/python bench/quantized.py --repeats 1 --seconds 2 --tokens 16 --threads 1   # smoke

One store of its own (bench/.stores/quantized/, bench/stores.py) holds the default models and
their quantized twins under other ids (``all-MiniLM-L6-v2-int8``: ``"quantization": "int8"``;
SmolLM2 on Optimum's export as ``SmolLM2-135M-Instruct-fp32`` (the default before
onnx-genai-causal-lm) and ``SmolLM2-135M-Instruct-int4`` (``"quantization": "int4"``), beside the
shipped ``SmolLM2-135M-Instruct`` on ORT GenAI's int4 graph), served by one gateway process, so
the models run side by side in one run, alternating inside every repeat (fp32, quantized, fp32,
...), and each figure is the median of --repeats runs:

- embeddings over gRPC (EmbeddingTaskPredict, short sentences, both models' batching at
  max_batch_size 32 as in bench/encoder_throughput.py): requests/s at --clients (32) closed-loop
  clients and p50 latency at one client;
- generation over gRPC (ServerStreamingTextGenerationTaskPredict, greedy, exactly --tokens tokens
  per stream, bench/generation.py's prompts): aggregate tokens/s and TTFT p50 at 1, 4 and 16
  concurrent streams; the whole generation part runs once per --threads value (the gateway's
  --intra-op-threads and --generation-threads: 2 uses the second core for one model's forward
  pass);
- the quality figures: each variant's measured check from /info/models (int8: mean and worst
  cosine to fp32 over the probe set; int4: the probe questions' answers), and the answer of
  every generation model to a fixed question asked with the chat template through the OpenAI door.

Writes bench/results/quantized.{md,json} (quantized-partial.* when an option differs from its
default). The first run exports and quantizes (a few minutes); later runs reuse all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402

from bench.generation import prompts, quantile  # noqa: E402
from bench.loadgen import closed_loop  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import process, wait_for_line  # noqa: E402
from gateway.models.defaults import GENERATION_RUNTIME, default_manifests  # noqa: E402
from gateway.models.store import ModelManifest  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = store_path("quantized")
ENCODERS = ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2-int8")
# Optimum's fp32 export, our int4 variant of it, and the shipped ORT GenAI int4 graph
GENERATORS = ("SmolLM2-135M-Instruct-fp32", "SmolLM2-135M-Instruct-int4", "SmolLM2-135M-Instruct")
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
QUESTION = "What is the capital of France?"
EXPECTED = "Paris"
LOAD_WAIT = (("x-request-timeout-ms", "900000"),)


def prepare(store: Path) -> Path:
    """The default manifests, and the quantized twins beside them (hard links seed each twin's
    folder with the default model's cached export, so a source is exported once)."""
    prepare_store(store)
    encoder, generator = default_manifests(store)
    generator_settings = {k: v for k, v in generator.settings.items() if k != "precision"}
    twins = (
        (encoder, encoder.runtime, "int8", {**encoder.settings, "quantization": "int8"}),
        (generator, GENERATION_RUNTIME, "fp32", generator_settings),
        (generator, GENERATION_RUNTIME, "int4", {**generator_settings, "quantization": "int4"}),
    )
    for base, runtime, kind, settings in twins:
        twin = ModelManifest(
            model_id=f"{base.model_id}-{kind}",
            tasks=base.tasks,
            runtime=runtime,
            source=base.source,
            folder=store / f"{base.model_id}-{kind}",
            settings=settings,
        )
        twin.write()
        for cached in base.folder.glob("*"):
            if (
                cached.is_dir()
                and not cached.name.endswith(f"-{kind}")
                and not cached.name.startswith("genai-")
            ):
                _seed(twin.folder, cached)
    return store


def _seed(folder: Path, cached: Path) -> None:
    """Hard-link a cached export or conversion folder into ``folder`` unless it is there (its
    fingerprint is checked on load as always: a stale one is made again, never trusted)."""
    target = folder / cached.name
    if target.exists():
        return
    staging = folder / f".seed-{cached.name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(cached, staging, copy_function=os.link)
    staging.rename(target)


# -- embeddings ---------------------------------------------------------------------------
async def embeddings(grpc_address: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2 as nlp
    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    runs: dict[str, dict[str, list[float]]] = {m: {"req_per_s": [], "p50_1_client_ms": []} for m in ENCODERS}
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        request = nlp.EmbeddingTaskRequest(text=SENTENCE)
        calls = {}
        for model in ENCODERS:
            metadata = (("mm-model-id", model),)
            await stub.EmbeddingTaskPredict(request, metadata=metadata + LOAD_WAIT)  # loads it
            calls[model] = lambda metadata=metadata: stub.EmbeddingTaskPredict(request, metadata=metadata)
        for repeat in range(args.repeats):
            for model in ENCODERS:
                many = await closed_loop(calls[model], args.clients, args.seconds)
                one = await closed_loop(calls[model], 1, args.seconds)
                runs[model]["req_per_s"].append(many.throughput)
                runs[model]["p50_1_client_ms"].append(one.quantile(0.5))
                print(
                    f"[{repeat + 1}/{args.repeats}] {model}: {many.throughput:.0f} req/s at {args.clients} "
                    f"clients ({many.errors} errors), p50 {one.quantile(0.5):.2f} ms at 1 client",
                    flush=True,
                )
    return {m: {k: statistics.median(v) for k, v in cells.items()} for m, cells in runs.items()}


# -- generation ---------------------------------------------------------------------------
async def _stream(stub: Any, model: str, text: str, tokens: int) -> tuple[int, float, float]:
    """(tokens, ms to the first token, finish time) of one greedy stream."""
    from gateway.wire import caikit_runtime_nlp_pb2 as nlp

    request = nlp.ServerStreamingTextGenerationTaskRequest(
        text=text, max_new_tokens=tokens, min_new_tokens=tokens, decoding_method="GREEDY"
    )
    start, ttft, seen = time.perf_counter(), float("nan"), 0
    async for chunk in stub.ServerStreamingTextGenerationTaskPredict(
        request, metadata=(("mm-model-id", model),)
    ):
        count = chunk.details.generated_tokens
        if count > seen:
            if seen == 0:
                ttft = (time.perf_counter() - start) * 1000
            seen = count
    return seen, ttft, time.perf_counter()


async def generation(grpc_address: str, args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2 as nlp
    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    runs: dict[str, dict[int, list[tuple[float, float]]]] = {
        m: {n: [] for n in args.streams} for m in GENERATORS
    }
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        for model in GENERATORS:  # load (and on a first run quantize) before timing anything
            warm = nlp.TextGenerationTaskRequest(text=prompts(1)[0], max_new_tokens=4)
            await stub.TextGenerationTaskPredict(warm, metadata=(("mm-model-id", model), *LOAD_WAIT))
        for repeat in range(args.repeats):
            for n in args.streams:
                for model in GENERATORS:
                    start = time.perf_counter()
                    streams = await asyncio.gather(
                        *(_stream(stub, model, t, args.tokens) for t in prompts(n))
                    )
                    wall = max(s[2] for s in streams) - start
                    rate = sum(s[0] for s in streams) / wall
                    ttft = quantile([s[1] for s in streams], 0.5)
                    runs[model][n].append((rate, ttft))
                    print(
                        f"[{repeat + 1}/{args.repeats}] {model} N={n}: {rate:.1f} tok/s, "
                        f"TTFT p50 {ttft:.0f} ms",
                        flush=True,
                    )
    return {
        m: {
            str(n): {
                "tokens_per_s": statistics.median(r for r, _ in cells),
                "ttft_p50_ms": statistics.median(t for _, t in cells),
            }
            for n, cells in by_n.items()
        }
        for m, by_n in runs.items()
    }


def answers(http_address: str) -> dict[str, str]:
    """Each generation model's greedy answer to QUESTION with its chat template (OpenAI door)."""
    out = {}
    for model in GENERATORS:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 32,
            "temperature": 0,
        }
        reply = httpx.post(f"{http_address}/v1/chat/completions", json=body, timeout=600)
        reply.raise_for_status()
        out[model] = reply.json()["choices"][0]["message"]["content"]
    return out


def checks(http_address: str) -> dict[str, Any]:
    """The variants' measured checks, as /info/models shows them."""
    models = httpx.get(f"{http_address}/info/models", timeout=60).json()["models"]
    return {
        m["name"]: m["metadata"].get("quantization") for m in models if m["name"] in ENCODERS + GENERATORS
    }


def serve(store: Path, threads: int, preload: tuple[str, ...]) -> Any:
    command = [
        sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(store),
        "--grpc-port", "0", "--http-port", "0", "--log-level", "warning",
        "--intra-op-threads", str(threads), "--generation-threads", str(threads),
        "--max-inflight-per-model", "1024",
        "--preload", ",".join(preload),
    ]  # fmt: skip
    return process(command)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per embedding measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens per stream")
    parser.add_argument("--streams", default="1,4,16")
    parser.add_argument("--threads", default="1,2", help="generation runs, one per intra-op thread count")
    parser.add_argument("--skip", default="", help="'embeddings' or 'generation' to leave one out")
    args = parser.parse_args()
    stem = results_stem(
        "quantized", parser, args, ("repeats", "seconds", "clients", "tokens", "streams", "threads", "skip")
    )
    args.streams = [int(n) for n in args.streams.split(",")]
    store = prepare(STORE)
    result: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "generation": {}}
    if "embeddings" not in args.skip:
        with serve(store, 1, ENCODERS) as proc:
            match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=1800)
            for model in ENCODERS:
                url = f"{match.group(2)}/management/models/{model}/batching"
                httpx.put(url, json={"max_batch_size": 32, "max_queue_rows": 4096}).raise_for_status()
            result["embeddings"] = asyncio.run(embeddings(match.group(1), args))
            result["checks"] = checks(match.group(2))
    if "generation" not in args.skip:
        for threads in (int(t) for t in args.threads.split(",")):
            with serve(store, threads, GENERATORS) as proc:
                match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=1800)
                result["generation"][str(threads)] = asyncio.run(generation(match.group(1), args))
                result["answers"] = answers(match.group(2))
                result.setdefault("checks", {}).update(checks(match.group(2)))
    from bench.quantized_report import write

    write(RESULTS, stem, result)


if __name__ == "__main__":
    main()
