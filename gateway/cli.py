"""The ``taskgate`` command: ``serve``, ``init-store``, ``kserve``, ``tune``, ``adapters publish``,
``k8s tune-job``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from adapters import publish_cli, tune_cli, tune_job  # light: torch and peft load when one tunes
from gateway import settings as settings_module
from gateway.ops.log_format import configure_logging
from runtimes.kserve import server as kserve_server  # light: kserve itself loads when it serves


def _environment_defaults() -> None:
    # Must happen before torch / ONNX Runtime load their thread pools.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def _serve(config: settings_module.Settings) -> None:
    from gateway.app import Gateway

    gateway = Gateway(config)
    addresses = await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # the first drains (gateway/shutdown.py); a second cuts the drain short
        if stop.is_set():
            gateway.drain.hurry()
        stop.set()

    for sig in (
        signal.SIGINT,
        signal.SIGTERM,
    ):  # before the line below: a SIGTERM right after it stops cleanly
        loop.add_signal_handler(sig, on_signal)
    print(f"Taskgate serving: gRPC {addresses.grpc}  HTTP {addresses.http}", flush=True)
    await stop.wait()
    print(f"Taskgate stopping: draining {gateway.drain.inflight} requests in flight", flush=True)
    await gateway.shutdown()
    print("Taskgate stopped", flush=True)


EVENT_LOOPS = ("uvloop", "asyncio")


def run_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run ``main`` to completion on a new loop of the kind named (``EVENT_LOOPS``). grpc.aio
    and uvicorn both serve on uvloop; it measured less CPU per request (bench/profile_layers.py)."""
    if event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskgate", description="Taskgate model-serving gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC and HTTP servers")
    settings_module.add_arguments(serve)
    serve.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="uvloop",
        help="the loop both servers run on: uvloop (libuv; less CPU per request) or asyncio's own",
    )
    init = commands.add_parser("init-store", help="write the default models' manifests")
    init.add_argument("--model-store", help="model store directory (env TASKGATE_MODEL_STORE)")
    hosted = commands.add_parser("kserve", help="serve one model folder as a KServe predictor (OIP v2)")
    kserve_server.add_arguments(hosted)
    tune_cli.add_arguments(commands.add_parser("tune", help="tune an adapter from a spec (JSON)"))
    publish_cli.add_arguments(commands.add_parser("adapters", help="publish a tuned adapter into a store"))
    tune_job.add_arguments(commands.add_parser("k8s", help="print Kubernetes objects (a tuning Job)"))
    args = parser.parse_args(argv)
    _environment_defaults()
    if args.command == "tune":
        return tune_cli.run(args)
    if args.command in ("adapters", "k8s"):
        return (publish_cli if args.command == "adapters" else tune_job).run(args)
    if args.command == "kserve":
        try:
            hosting = kserve_server.settings_from(args)
        except ValueError as exc:
            parser.error(str(exc))
        return kserve_server.serve(hosting)
    try:
        config = settings_module.from_args(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(config.server.log_level, config.server.log_format)
    if args.command == "init-store":
        from gateway.models.defaults import write_default_manifests

        ids = write_default_manifests(config.model_store)
        print(f"model store {config.model_store}: {', '.join(ids)}")
        return 0
    from gateway.models.single_model import SingleModelError

    try:
        run_loop(_serve(config), args.event_loop)
    except SingleModelError as exc:  # the model folder cannot be served: say why, no trace
        print(f"taskgate serve: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
