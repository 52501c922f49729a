"""What the access log costs: two Taskgate processes side by side on one store and model, one
writing no access lines (``--log-level warning``: the request record and its metrics still run)
and one writing a JSON access line per request (``--log-level info --log-format json``, into a
file, as under a container runtime that keeps the log); 32 closed-loop clients over REST (Caikit's
embedding route) and over gRPC, the two servers interleaved in each repeat; prints throughput and
latency of each and the ratio logged / quiet (medians of the repeats).

    .venv/bin/python bench/observability.py                 # 3 repeats x 8 s per server and transport
    .venv/bin/python bench/observability.py --repeats 1 --seconds 2 --clients 8     # a smoke run

Writes bench/results/observability.{md,json} (a smaller run: observability-partial). Uses its own
store (bench/.stores/observability/); ./model-store is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import closed_loop  # noqa: E402
from bench.rawhttp import RawHttpClient  # noqa: E402
from bench.results_name import results_stem  # noqa: E402
from bench.stores import prepare_store, store_path  # noqa: E402
from bench.systems import MODEL, Running, process, wait_for_line  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
STORE = store_path("observability")
RESULTS = ROOT / "bench" / "results"
SERVERS = {
    "quiet": ["--log-level", "warning"],
    "access-json": ["--log-level", "info", "--log-format", "json"],
}
Row = tuple[float, float, float, int]  # req/s, p50 ms, p99 ms, errors


@contextlib.contextmanager
def _serve(flags: list[str], log_file: Path) -> Iterator[Running]:
    """``taskgate serve`` on loopback ports chosen by the OS, its log lines (stderr) into
    ``log_file``; the "serving" line (stdout) tells the ports."""
    command = [
        "sh", "-c", f'exec "$0" "$@" 2>>"{log_file}"', sys.executable, "-m", "gateway.cli", "serve",
        "--model-store", str(STORE), "--grpc-port", "0", "--http-port", "0", "--preload", MODEL, *flags,
    ]  # fmt: skip
    with process(command) as proc:
        match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=900)
        yield Running(match.group(1), match.group(2), proc.pid)


async def _rest(http: str, clients: int, seconds: float) -> Row:
    client = RawHttpClient(http)
    request = client.request_bytes("/api/v1/task/embedding", {"model_id": MODEL, "inputs": TEXT})
    call: Callable[[], Awaitable[object]] = lambda: client.send(request)  # noqa: E731
    try:
        await call()
        sample = await closed_loop(call, clients, seconds)
    finally:
        await client.close()
    return sample.throughput, sample.quantile(0.5), sample.quantile(0.99), sample.errors


async def _grpc(address: str, clients: int, seconds: float) -> Row:
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2 as nlp
    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        request = nlp.EmbeddingTaskRequest(text=TEXT)
        metadata = (("mm-model-id", MODEL),)
        call: Callable[[], Awaitable[object]] = lambda: stub.EmbeddingTaskPredict(request, metadata=metadata)  # noqa: E731
        await call()
        sample = await closed_loop(call, clients, seconds)
    return sample.throughput, sample.quantile(0.5), sample.quantile(0.99), sample.errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    prepare_store(STORE)
    runs: dict[tuple[str, str], list[Row]] = {}
    logs = Path(tempfile.mkdtemp(prefix="taskgate-observability-"))
    with (
        _serve(SERVERS["quiet"], logs / "quiet.log") as quiet,
        _serve(SERVERS["access-json"], logs / "access-json.log") as logged,
    ):
        served = {"quiet": quiet, "access-json": logged}
        for repeat in range(args.repeats):
            for transport in ("rest", "grpc"):
                for name, running in served.items():  # interleaved: drift hits both alike
                    if transport == "rest":
                        assert running.http
                        row = asyncio.run(_rest(running.http, args.clients, args.seconds))
                    else:
                        assert running.grpc
                        row = asyncio.run(_grpc(running.grpc, args.clients, args.seconds))
                    runs.setdefault((transport, name), []).append(row)
                    rps, p50, p99, errors = row
                    print(
                        f"  repeat {repeat + 1} {transport:4s} {name:11s} {rps:7.1f} req/s  "
                        f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}"
                    )
    table = []
    for transport in ("rest", "grpc"):
        medians = {
            name: [statistics.median(r[i] for r in runs[(transport, name)]) for i in range(3)]
            for name in SERVERS
        }
        base = medians["quiet"][0]
        for name in SERVERS:
            rps, p50, p99 = medians[name]
            table.append(
                {
                    "transport": transport,
                    "server": name,
                    "rps": rps,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "rps_vs_quiet": rps / base if base else float("nan"),
                }
            )
    head = f"{args.clients} clients, {MODEL} embeddings, medians of {args.repeats} runs of {args.seconds:g} s"
    lines = [
        head,
        "",
        "| transport | server | req/s | p50 ms | p99 ms | req/s ÷ quiet |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['transport']} | {row['server']} | {row['rps']:.1f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['rps_vs_quiet']:.3f} |"
        )
    print("\n" + "\n".join(lines))
    access_lines = sum(1 for line in (logs / "access-json.log").open() if "taskgate.access" in line)
    quiet_lines = sum(1 for line in (logs / "quiet.log").open() if "taskgate.access" in line)
    stem = results_stem("observability", parser, args, ("repeats", "seconds", "clients"))
    out: Path = args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    payload = {
        "args": {**vars(args), "results_dir": str(out)},
        "rows": table,
        "access_lines": {"access-json": access_lines, "quiet": quiet_lines},
    }
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}/{stem}.md and .json; access lines: {access_lines} logged, {quiet_lines} quiet")


if __name__ == "__main__":
    main()
