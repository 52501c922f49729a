"""Tuning beside serving (issue 8): what a LoRA job on SmolLM2 costs the requests one Taskgate
process serves, under the tuning worker's settings, and how soon a published adapter serves.

    .venv/bin/python bench/tuning_beside_serving.py           # 3 settings, 3 repeats (~15 min)
    .venv/bin/python bench/tuning_beside_serving.py --quick   # smoke run: 2 settings, seconds

For each worker setting (--settings THREADS:NICE,...; the default ``1:10`` is --tuning-threads 1
--tuning-nice 10) a Taskgate process serves all-MiniLM-L6-v2 (encoder, ONNX Runtime) and
SmolLM2-135M-Instruct (generation, its default runtime), both preloaded, with its other settings
at their defaults. Measured --repeats times while idle, then again while a LoRA job on SmolLM2
runs (created through the OpenAI-shaped API: ``POST /v1/files``, ``POST /v1/fine_tuning/jobs``,
enough epochs to outlast the measurement, cancelled after):

- encoder: --clients closed-loop clients on ``POST /api/v1/task/embedding`` for --seconds:
  p50 / p99 latency and requests/s;
- generation: --streams concurrent gRPC streams (ServerStreamingTextGenerationTaskPredict) of
  exactly --tokens tokens: tokens/s.

The job's step time comes from its live feed (``GET .../events?stream=true``), each progress
event stamped on arrival: alone (its first --alone-steps steps after the first, no requests),
and while serving (the time from the first load's start to the last's end over the steps it
advanced meanwhile, interpolated between events).

Publish -> first request: short LoRA jobs (2 steps); the time from the job seen ``succeeded``
by polling (every 20 ms), and from its ``published`` event arriving on the live feed, to the
end of the first successful text-generation request naming the adapter (one new token, Caikit
REST route; the request's own time included).

Writes bench/results/tuning_beside_serving.{md,json} (-partial for --quick or other settings).
Uses its own store, bench/.stores/tuning_beside_serving/, never ./model-store.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generation import one_stream, prompts  # noqa: E402
from bench.loadgen import closed_loop  # noqa: E402
from bench.rawhttp import RawHttpClient  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import process, wait_for_line  # noqa: E402
from bench.tuning_beside_serving_report import Load, PublishLatency, SettingResult, write_report  # noqa: E402
from bench.tuning_client import JobFeed, cancel, create_lora, upload, wait_status  # noqa: E402
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL as ENCODER  # noqa: E402
from gateway.models.defaults import DEFAULT_GENERATION_MODEL as GENERATOR  # noqa: E402

STORE = store_path("tuning_beside_serving")
TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
PROMPT = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor",
         "indigo", "jasper", "krill", "lichen", "marble", "nectar", "onyx", "pepper"]  # fmt: skip
RECORDS = [{"input": f"The code word of item {i} is", "output": f" {w}."} for i, w in enumerate(WORDS)]
LONG_JOB = {"num_epochs": 10_000, "batch_size": 8, "learning_rate": 1e-4, "seed": 1}  # ~20,000 steps
SHORT_JOB = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-4, "seed": 1}


# -- loads ---------------------------------------------------------------------------------
async def encoder_load(raw: RawHttpClient, args: argparse.Namespace) -> tuple[Any, float, float]:
    request = raw.request_bytes("/api/v1/task/embedding", {"model_id": ENCODER, "inputs": TEXT})
    start = time.perf_counter()
    sample = await closed_loop(lambda: raw.send(request), args.clients, args.seconds, warmup_s=0.5)
    return sample, start + 0.5, time.perf_counter()


async def generation_load(stub: Any, args: argparse.Namespace) -> tuple[float, int, float, float]:
    start = time.perf_counter()
    streams = await asyncio.gather(*(one_stream(stub, t, args.tokens) for t in prompts(args.streams)))
    end = time.perf_counter()
    tokens = sum(s.tokens for s in streams)
    short = sum(s.tokens != args.tokens for s in streams)
    return tokens / (end - start), short, start, end


async def measure_loads(raw: RawHttpClient, stub: Any, args: argparse.Namespace) -> Load:
    """--repeats rounds of the encoder load then the generation load; medians, and the windows."""
    encoder, rates, errors, short = [], [], 0, 0
    encoder_windows, generation_windows = [], []
    for _ in range(args.repeats):
        sample, start, end = await encoder_load(raw, args)
        encoder.append((sample.quantile(0.5), sample.quantile(0.99), sample.throughput))
        encoder_windows.append((start, end))
        errors += sample.errors
        rate, missing, start, end = await generation_load(stub, args)
        rates.append(rate)
        short += missing
        generation_windows.append((start, end))
    p50, p99, rps = (statistics.median(column) for column in zip(*encoder, strict=True))
    return Load(
        encoder_p50_ms=p50,
        encoder_p99_ms=p99,
        encoder_rps=rps,
        encoder_errors=errors,
        generation_tokens_per_s=statistics.median(rates),
        short_streams=short,
        encoder_windows=encoder_windows,
        generation_windows=generation_windows,
    )


def step_time(feed: JobFeed, start: float, end: float) -> float | None:
    """Seconds per optimizer step from ``start`` to ``end`` (progress interpolated between events)."""
    first, last = feed.step_at(start), feed.step_at(end)
    if first is None or last is None or last <= first:
        return None
    return (end - start) / (last - first)


def _step(at_least: int) -> Any:
    return lambda e: isinstance((e.get("data") or {}).get("step"), int) and e["data"]["step"] >= at_least


# -- one setting ---------------------------------------------------------------------------
async def measure_setting(
    http_url: str, grpc_url: str, threads: int, nice: int, args: argparse.Namespace
) -> SettingResult:
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    label = f"{threads}:{nice}"
    raw = RawHttpClient(http_url)
    async with (
        httpx.AsyncClient(base_url=http_url, timeout=120) as http,
        grpc.aio.insecure_channel(grpc_url) as channel,
    ):
        stub = nlp_grpc.NlpServiceStub(channel)
        await asyncio.gather(*(one_stream(stub, t, 4) for t in prompts(2)))  # warm up both models
        await encoder_load(raw, argparse.Namespace(clients=2, seconds=0.5))
        idle = await measure_loads(raw, stub, args)
        print(f"[{label}] idle: {idle.line()}", flush=True)

        file_id = await upload(http, RECORDS)
        job = await create_lora(http, GENERATOR, file_id, f"bench-load-{uuid.uuid4().hex[:8]}", LONG_JOB)
        feed = JobFeed(http, job).start()
        try:
            first, _ = await feed.wait_for(_step(1), args.job_timeout)
            last, _ = await feed.wait_for(_step(1 + args.alone_steps), args.job_timeout)
            alone = (last - first) / args.alone_steps
            print(f"[{label}] job {job}: {alone:.2f} s/step alone", flush=True)
            busy = await measure_loads(raw, stub, args)
            windows = busy.encoder_windows + busy.generation_windows
            start, end = min(w[0] for w in windows), max(w[1] for w in windows)
            while feed.steps()[-1][0] <= end:  # a progress event after the last window
                await feed.wait_for(_step(feed.steps()[-1][1] + 1), args.job_timeout)
            print(f"[{label}] busy: {busy.line()}", flush=True)
        finally:
            await cancel(http, job)
            await wait_status(http, job, args.job_timeout)
            await feed.close()
        result = SettingResult(
            label=label,
            threads=threads,
            nice=nice,
            idle=idle,
            busy=busy,
            step_alone_s=alone,
            step_serving_s=step_time(feed, start, end),
        )
        if args.publish_repeats and not args.published:
            args.published = await publish_latency(http, file_id, args)
    await raw.close()
    return result


# -- publish -> first request --------------------------------------------------------------
async def first_success(
    http: httpx.AsyncClient, name: str, since: float, timeout_s: float = 60
) -> tuple[float, int]:
    """Seconds from ``since`` to the first 200 naming adapter ``name``; and the refusals before."""
    body = {"model_id": name, "inputs": PROMPT, "parameters": {"max_new_tokens": 1}}
    refused = 0
    while time.perf_counter() - since < timeout_s:
        response = await http.post("/api/v1/task/text-generation", json=body)
        if response.status_code == 200:
            return time.perf_counter() - since, refused
        refused += 1
    raise TimeoutError(f"adapter {name} not served within {timeout_s} s: {response.text[:200]}")


async def publish_latency(http: httpx.AsyncClient, file_id: str, args: argparse.Namespace) -> PublishLatency:
    polled, evented, refused = [], [], 0
    for _ in range(args.publish_repeats):
        name = f"bench-poll-{uuid.uuid4().hex[:8]}"
        job = await create_lora(http, GENERATOR, file_id, name, SHORT_JOB)
        if await wait_status(http, job, args.job_timeout, every_s=0.02) != "succeeded":
            raise RuntimeError(f"short job {job} did not succeed")
        latency, before = await first_success(http, name, time.perf_counter())
        polled.append(latency)
        refused += before

        name = f"bench-event-{uuid.uuid4().hex[:8]}"
        job = await create_lora(http, GENERATOR, file_id, name, SHORT_JOB)
        feed = JobFeed(http, job).start()
        try:
            arrived, _ = await feed.wait_for(
                lambda e: str(e.get("message", "")).startswith("published"), args.job_timeout
            )
            latency, before = await first_success(http, name, arrived)
        finally:
            await feed.close()
        evented.append(latency)
        refused += before
        print(f"publish -> first request: {polled[-1]:.3f} s (poll), {evented[-1]:.3f} s (event)", flush=True)
    return PublishLatency(polled, evented, refused)


def run_setting(threads: int, nice: int, args: argparse.Namespace) -> SettingResult:
    command = [
        sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(args.store),
        "--grpc-port", "0", "--http-port", "0", "--preload", f"{ENCODER},{GENERATOR}",
        "--log-level", "warning", "--tuning-threads", str(threads), "--tuning-nice", str(nice),
    ]  # fmt: skip
    with process(command) as proc:
        match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=900)
        return asyncio.run(measure_setting(match.group(2), match.group(1), threads, nice, args))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=STORE, help="its own model store (not a user's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: settings 1:10 and 1:0, seconds")
    parser.add_argument(
        "--settings", default="1:10,1:0,2:10", help="tuning worker THREADS:NICE, comma-separated"
    )
    parser.add_argument("--clients", type=int, default=8, help="encoder: closed-loop clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="encoder: seconds per repeat")
    parser.add_argument("--streams", type=int, default=4, help="generation: concurrent streams")
    parser.add_argument("--tokens", type=int, default=64, help="generation: tokens per stream")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both loads; medians")
    parser.add_argument("--alone-steps", type=int, default=3, help="job steps timed with no requests")
    parser.add_argument("--publish-repeats", type=int, default=3, help="short jobs per publish measure")
    parser.add_argument("--job-timeout", type=float, default=900.0, help="longest wait for a job event")
    args = parser.parse_args()
    if args.quick:
        args.settings, args.seconds, args.streams, args.tokens = "1:10,1:0", 2.0, 2, 16
        args.repeats, args.alone_steps, args.publish_repeats = 1, 1, 1
    scope = ("quick", "settings", "clients", "seconds", "streams", "tokens", "repeats")
    args.stem = results_stem("tuning_beside_serving", parser, args, scope)
    args.published = None
    prepare_store(args.store)
    results = []
    for pair in args.settings.split(","):
        threads, nice = (int(x) for x in pair.split(":"))
        results.append(run_setting(threads, nice, args))
    print(write_report(args, results, args.published))


if __name__ == "__main__":
    main()
