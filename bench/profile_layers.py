"""Where the gateway's CPU goes per encoder request, by layer, from a sampling profiler (py-spy).

    .venv/bin/python bench/profile_layers.py                       # gRPC and REST, 32 clients
    .venv/bin/python bench/profile_layers.py --transports REST --seconds 20 --label after
    .venv/bin/python bench/profile_layers.py --from-raw bench/results/profile_layers-REST.txt

Starts Taskgate (its own store, bench/.stores/profile_layers/; 2 model workers sharing one ORT
pool, as bench/encoder_throughput.py runs it), drives it with ``--clients`` closed-loop clients
sending the short embedding request, and records the gateway process with ``py-spy record -f raw
--threads`` (root: py-spy reads another process's memory) while it reads each thread's CPU time
(/proc/PID/task/TID/stat) and counts the requests answered. Each sampled stack is given to one
layer: walking from the innermost frame outwards, the first frame a rule in ``RULES`` names
decides it (a frame of a general library, e.g. ``json``, ``asyncio`` or ``typing``, names none,
so its caller decides; a stack nothing names is the event loop's own work, transport, when the
loop is in it). Each thread's measured CPU is shared out over the layers by that thread's samples
(py-spy counts a runnable thread as busy, so on a loaded machine sample counts are proportions,
not time); threads with CPU time and no Python stack (ORT's intra-op pool, gRPC core's threads)
are a row of their own. The table shows CPU ms per request by layer.

Writes bench/results/profile_layers[-label].{md,json} and the raw py-spy output beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.encoder_throughput import INPUTS  # noqa: E402
from bench.loadgen import closed_loop  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import GRPC, REST, Taskgate  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = store_path("profile_layers")

# (layer, pattern on one raw frame "function (path:line)"); the innermost matching frame decides.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (layer, re.compile(pattern))
    for layer, pattern in (
        ("model (ORT run)", r"onnxruntime/|\brun_batch \(runtimes/"),
        ("tokenize", r"tokenizers|runtimes/encoder_tokenizer\.py"),
        ("batcher", r"gateway/batcher\.py|gateway/encoding\.py|\bpad_rows \(|concurrent/futures/"),
        (
            "convert back",
            r"gateway/frontends/(http|grpc)/convert\.py|fastapi/encoders\.py|\bserialize_response \("
            r"|\brender \(starlette/responses\.py|\binit_headers \(starlette/responses\.py"
            r"|orjson|\bSerializeToString\b|\b_dumps \(gateway/frontends/http/task_fast_path\.py",
        ),
        (
            "parse / validate",
            r"pydantic|fastapi/dependencies/|\brequest_body_to_args\b|\bdecode_request\b"
            r"|\b(body|json) \(starlette/requests\.py|gateway/frontends/http/schemas\.py"
            r"|\bdeserialize \(gateway/frontends/grpc/guard\.py|\bFromString\b|msgspec",
        ),
        ("core", r"gateway/core\.py|gateway/ops/|gateway/metrics\.py|prometheus_client|gateway/models/"),
        (
            "transport",
            r"uvicorn|httptools|starlette|fastapi|grpc|gateway/frontends/",
        ),
    )
)
# a stack no rule names: the event loop's own work (polling, callbacks into compiled transports:
# grpc's Cython, uvloop) is transport; anything else is other
LOOP = re.compile(r"asyncio/|uvloop|selectors\.py")
NATIVE = "native threads (ORT pool, gRPC core)"  # threads with CPU time and no Python stack
LAYERS = (*(layer for layer, _ in RULES), "other", NATIVE)
SERVING = ("transport", "parse / validate", "tokenize", "batcher", "convert back", "core", "other")
_THREAD = re.compile(r"thread \((\d+)\)")
# a model worker blocked in its queue's get (runnable while it waits for the GIL on waking):
# waiting, not work; left out so the thread's CPU goes to what it sampled doing
WAITING = re.compile(r"(\b_worker \(concurrent/futures/thread\.py:\d+\)|\bget \(queue\.py:\d+\))$")


def layer_of(stack: str) -> str:
    """The layer of one collapsed stack (frames root first, joined by ';')."""
    for frame in reversed(stack.split(";")):
        for layer, pattern in RULES:
            if pattern.search(frame):
                return layer
    return "transport" if LOOP.search(stack) else "other"


def parse_raw(text: str) -> dict[int, Counter[str]]:
    """py-spy's raw (collapsed) output, recorded with ``--threads``: ``thread (TID)[: name];frame;
    ... count`` per line -> samples per layer, per OS thread id (0 when the line names none)."""
    samples: dict[int, Counter[str]] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread = _THREAD.match(stack)
        tid = int(thread.group(1)) if thread else 0
        frames = stack.split(";", 1)[1] if thread and ";" in stack else ("" if thread else stack)
        if WAITING.search(frames):
            continue
        samples.setdefault(tid, Counter())[layer_of(frames)] += int(count)
    return samples


def attribute(samples: dict[int, Counter[str]], cpu_s: dict[int, float]) -> dict[str, float]:
    """CPU seconds per layer: each thread's measured CPU shared out by its own samples (py-spy
    counts a thread busy while it is runnable, which on a loaded machine is not running: its
    sample counts are only proportions within the thread). A thread with CPU time and no samples
    runs no Python (ORT's intra-op pool, gRPC core's threads)."""
    out = dict.fromkeys(LAYERS, 0.0)
    for tid, cpu in cpu_s.items():
        counts = samples.get(tid)
        if not counts:
            out[NATIVE] += cpu
            continue
        total = sum(counts.values())
        for layer, n in counts.items():
            out[layer] += cpu * n / total
    return out


def table(samples: dict[int, Counter[str]], cpu_ms: dict[str, float] | None) -> list[str]:
    """The per-layer table; ``cpu_ms`` (CPU ms per request by layer) None: sample shares only."""
    merged: Counter[str] = Counter()
    for counts in samples.values():
        merged.update(counts)
    total = sum(merged.values()) or 1
    lines = ["| layer | samples | share of samples | CPU ms / request |", "|---|---|---|---|"]
    for layer in LAYERS:
        ms = f"{cpu_ms[layer]:.3f}" if cpu_ms is not None else "-"
        lines.append(f"| {layer} | {merged[layer]} | {merged[layer] / total:.1%} | {ms} |")
    serving = sum(merged[layer] for layer in SERVING)
    ms = f"{sum(cpu_ms[layer] for layer in SERVING):.3f}" if cpu_ms is not None else "-"
    lines.append(f"| **serving (all but model)** | {serving} | {serving / total:.1%} | {ms} |")
    return lines


def _thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of process ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def profile(system: Taskgate, running: object, transport: str, args: argparse.Namespace) -> dict:
    pid: int = running.pid  # type: ignore[attr-defined]
    raw_path = RESULTS / f"{args.stem}-{transport}.txt"
    async with system.client(running, transport, INPUTS["short"]) as call:  # type: ignore[arg-type]
        await closed_loop(call, args.clients, 1.0, warmup_s=1.0)  # warm connections and the model
        spy = subprocess.Popen(  # noqa: ASYNC220 (starting it does not wait; the load runs meanwhile)
            [args.py_spy, "record", "-p", str(pid), "-r", str(args.rate), "-f", "raw", "--nonblocking",
             "--threads", "-o", str(raw_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        marks: dict[int, float] = {}

        async def mark_start() -> None:
            await asyncio.sleep(1.0)  # the warm-up below: py-spy attaches meanwhile
            marks.update(_thread_cpu_s(pid))

        starter = asyncio.ensure_future(mark_start())
        sample = await closed_loop(call, args.clients, args.seconds, warmup_s=1.0)
        cpu_s = {tid: cpu - marks.get(tid, 0.0) for tid, cpu in _thread_cpu_s(pid).items()}
        await starter
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        _, err = spy.communicate(timeout=60)
    if not raw_path.is_file():
        raise SystemExit(f"py-spy wrote nothing (run as root?): {err.strip()[-500:]}")
    samples = parse_raw(raw_path.read_text())
    requests = len(sample.latencies_ms)
    by_layer = attribute(samples, cpu_s)
    return {
        "transport": transport,
        "clients": args.clients,
        "requests": requests,
        "req_per_s": sample.throughput,
        "errors": sample.errors,
        "cpu_s": sum(cpu_s.values()),
        "cpu_ms_per_request": 1000 * sum(cpu_s.values()) / requests if requests else None,
        "cpu_ms_by_layer": {k: 1000 * v / requests for k, v in by_layer.items()} if requests else None,
        "samples": {str(tid): dict(counts) for tid, counts in samples.items()},
        "raw": str(raw_path.relative_to(ROOT)),
    }


def report(runs: list[dict], args: argparse.Namespace) -> str:
    lines = [f"# Gateway CPU per encoder request by layer ({args.label or 'current'})", ""]
    lines.append(
        f"py-spy at {args.rate} Hz, {args.clients} closed-loop clients, short input (16 tokens), "
        f"2 model workers x 1 ORT thread; CPU per request = the gateway process's CPU time / requests."
    )
    for run in runs:
        ms = run["cpu_ms_per_request"]
        lines += [
            "",
            f"## {run['transport']}: {run['req_per_s']:.0f} req/s, {run['errors']} errors, "
            f"{ms:.3f} CPU ms / request (all threads)"
            if ms
            else f"## {run['transport']}: no requests",
            "",
            *table({int(t): Counter(c) for t, c in run["samples"].items()}, run["cpu_ms_by_layer"]),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transports", default=f"{GRPC},{REST}")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="profiled seconds per transport")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--label", default="", help="results name suffix, e.g. before / after")
    parser.add_argument(
        "--serve-args", default="", help="more `taskgate serve` flags, e.g. '--event-loop asyncio'"
    )
    parser.add_argument("--from-raw", type=Path, help="only print the table of a saved raw profile")
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    )
    args = parser.parse_args()
    if args.from_raw:
        print("\n".join(table(parse_raw(args.from_raw.read_text()), None)))
        return
    args.stem = "profile_layers" + (f"-{args.label}" if args.label else "")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    system = Taskgate(True, prepare_store(STORE), extra=tuple(args.serve_args.split()))
    runs = []
    with system.serve() as running:
        for transport in args.transports.split(","):
            runs.append(asyncio.run(profile(system, running, transport, args)))
    text = report(runs, args)
    (RESULTS / f"{args.stem}.md").write_text(text)
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(runs, indent=2))
    print(text)


if __name__ == "__main__":
    main()
