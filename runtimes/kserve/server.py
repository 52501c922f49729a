"""The ``taskgate kserve`` command (also ``python -m runtimes.kserve``): one model folder served
as a KServe predictor (OIP v2 over REST and gRPC) under kserve's ModelServer.

    taskgate kserve --model_name minilm --model_dir /mnt/models --http_port 8080 --grpc_port 8081

Flags follow KServe's spelling (``--model_name``, ``--model_dir``, ``--http_port``, ``--grpc_port``).
Both servers bind ``--host``, 127.0.0.1 unless told otherwise; a container must pass
``--host 0.0.0.0`` so the pod's port is reachable. A ServingRuntime's container runs:

    taskgate kserve --host 0.0.0.0 --model_name {{.Name}} --model_dir /mnt/models
                    --http_port 8080 --grpc_port 8081

KServe mounts the model at /mnt/models, which may be read-only: ``--work_dir`` then names a
writable folder for the ONNX export the first load makes (the default is the model folder).

Importing this module is cheap: kserve (which parses ``sys.argv`` when imported) is imported
only when the server starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtimes.base import ThreadSettings

DEFAULT_MODEL_DIR = "/mnt/models"


@dataclass(frozen=True)
class HostingSettings:
    model_name: str
    model_dir: Path
    work_dir: Path
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    grpc_threads: int = 4
    threads: ThreadSettings = field(default_factory=lambda: ThreadSettings(model_workers=1))
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ValueError(f"--{name} must be within 1..65535, got {port}")
        if self.enable_grpc and self.http_port == self.grpc_port:
            raise ValueError(f"--http_port and --grpc_port are both {self.http_port}")
        if not self.model_name:
            raise ValueError("--model_name must not be empty")
        if self.grpc_threads < 1:
            raise ValueError(f"--grpc_threads must be at least 1, got {self.grpc_threads}")


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_name", default="model", help="the model's name in /v2/models/{name}")
    parser.add_argument(
        "--model_dir", default=DEFAULT_MODEL_DIR, help="the Taskgate model folder (manifest.json + files)"
    )
    parser.add_argument("--work_dir", default=None, help="writable folder for exports (default: model_dir)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address both servers bind (a container sets 0.0.0.0)"
    )
    parser.add_argument("--http_port", type=int, default=8080, help="REST (OIP v2) port")
    parser.add_argument("--grpc_port", type=int, default=8081, help="gRPC (OIP v2) port")
    parser.add_argument("--enable_grpc", type=_boolean, default=True, help="serve gRPC too")
    parser.add_argument("--grpc_threads", type=int, default=4, help="gRPC server threads")
    parser.add_argument("--model_workers", type=int, default=1, help="threads running the model")
    parser.add_argument("--intra_op_threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--log_level", default="info", help="logging level")


def settings_from(args: argparse.Namespace) -> HostingSettings:
    model_dir = Path(args.model_dir).absolute()
    return HostingSettings(
        model_name=args.model_name,
        model_dir=model_dir,
        work_dir=Path(args.work_dir).absolute() if args.work_dir else model_dir,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        grpc_threads=args.grpc_threads,
        threads=ThreadSettings(intra_op_threads=args.intra_op_threads, model_workers=args.model_workers),
        log_level=args.log_level,
    )


def serve(settings: HostingSettings) -> int:
    """Load the model, then serve until SIGTERM / SIGINT."""
    logging.basicConfig(  # before kserve's: it then keeps this configuration
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from runtimes.kserve.model import TaskgateModel
    from runtimes.kserve.model_server import BoundModelServer

    model = TaskgateModel(settings.model_name, settings.model_dir, settings.work_dir, settings.threads)
    try:
        model.load()
    except (ValueError, OSError) as exc:  # a bad folder or manifest: say what, no trace
        print(f"taskgate kserve: cannot serve {settings.model_dir}: {exc}", file=sys.stderr, flush=True)
        return 1
    server = BoundModelServer(
        settings.host,
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        enable_grpc=settings.enable_grpc,
        max_threads=settings.grpc_threads,
    )
    grpc = f"  gRPC {settings.host}:{settings.grpc_port}" if settings.enable_grpc else ""
    print(
        f"Taskgate kserve: model {settings.model_name} loaded; starting HTTP "
        f"http://{settings.host}:{settings.http_port}{grpc}",
        flush=True,
    )
    server.start([model])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtimes.kserve", description="serve a Taskgate model as a KServe predictor"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
