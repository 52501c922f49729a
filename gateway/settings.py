"""Settings: parsed once in ``main()`` from flags and the environment into frozen objects.

Nothing here runs at import time. Every setting has a flag and an environment variable
(``TASKGATE_<NAME>``); a flag wins over the environment, the environment over the default.
Components receive the narrow slice they need (``ServerSettings``, ``ThreadSettings``,
``RequestLimits``), never the whole object.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.models.eviction import POLICIES
from gateway.models.store import is_model_id
from gateway.ops.access import ApiKeys
from runtimes.base import ThreadSettings


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    grpc_port: int = 8085
    http_port: int = 8080
    max_request_bytes: int = 4 * 1024 * 1024
    max_deploy_bytes: int = 256 * 1024 * 1024  # model files in one deploy request
    log_level: str = "info"
    log_format: str = "text"  # "json": every log line one JSON object
    access_log: bool = True  # one line per finished request (logger taskgate.access)
    log_payloads: bool = False  # access lines carry request and response bodies (cut to 2 KiB)
    modelmesh_endpoint: str = ""  # "port:N" or "unix:PATH": serve the ModelMesh SPI there too
    modelmesh_models_dir: str = "/models"  # ModelMesh's modelPath must lie under it (its puller's)
    shutdown_timeout_s: float = 20.0  # SIGTERM: in-flight requests may finish this long
    tls_cert_file: str = ""  # PEM; with tls_key_file: HTTPS and gRPC over TLS
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA bundle: clients must present a certificate it signed (mTLS)
    http_backlog: int = 4096  # the HTTP listener's accept queue (the kernel caps it at somaxconn)
    grpc_max_concurrent_rpcs: int = 0  # grpcio's own bound on calls at once (0: none; no retry-after)

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be within 0..65535, got {port}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be at least 1024, got {self.max_request_bytes}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, got {self.log_format!r}")
        if not 1 <= self.http_backlog <= 65535:
            raise ValueError(f"http_backlog must be within 1..65535, got {self.http_backlog}")
        if self.grpc_max_concurrent_rpcs < 0:
            raise ValueError(
                f"grpc_max_concurrent_rpcs must not be negative, got {self.grpc_max_concurrent_rpcs}"
            )
        if not 0 <= self.shutdown_timeout_s <= 3600:
            raise ValueError(f"shutdown_timeout_s must be within 0-3600, got {self.shutdown_timeout_s}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{name}: no file {path!r}")


@dataclass(frozen=True)
class RequestLimits:
    """Input limits (larger is PAYLOAD_TOO_LARGE) and admission (more in flight is OVERLOADED)."""

    max_inputs: int = 256
    max_text_chars: int = 100_000
    max_inflight_per_model: int = 64
    max_inflight: int = 256  # requests and streams in flight, whole process (0: none)
    default_timeout_s: float = 60.0
    max_new_tokens: int = 2048  # the most tokens one generation request may ask for

    def __post_init__(self) -> None:
        if self.default_timeout_s <= 0:
            raise ValueError(f"default_timeout_s must be positive, got {self.default_timeout_s}")
        for name in ("max_inputs", "max_text_chars", "max_inflight_per_model", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_inflight < 0:
            raise ValueError(f"max_inflight must not be negative, got {self.max_inflight}")


@dataclass(frozen=True)
class RegistrySettings:
    """The multiplexer: memory budget (0: none), eviction policy, concurrent loads, failed-load
    back-off."""

    memory_budget_bytes: int = 0
    eviction_policy: str = "lfu-size"  # gateway/models/eviction.py: lfu-size or lru
    eviction_aging_requests: int = 1000  # lfu-size halves its request counts this often
    max_concurrent_loads: int = 2
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    measure_rss: bool = True  # size a model by the memory its load added (else by its files)
    room_wait_s: float = 10.0  # a load waits this long for a busy model to go idle and make room
    malloc_arenas: int = 2  # glibc malloc arenas when a budget is set (0: leave glibc's default)
    drain_timeout_s: float = 30.0  # an unloading model's requests may finish this long
    adapter_cache_bytes: int = 256 * 1024 * 1024  # generation adapters held in memory, all hosts

    def __post_init__(self) -> None:
        if self.memory_budget_bytes < 0:
            raise ValueError(f"memory_budget_bytes must not be negative, got {self.memory_budget_bytes}")
        if self.max_concurrent_loads < 1:
            raise ValueError(f"max_concurrent_loads must be at least 1, got {self.max_concurrent_loads}")
        if self.eviction_policy not in POLICIES:
            raise ValueError(
                f"eviction_policy must be one of {', '.join(POLICIES)}, got {self.eviction_policy!r}"
            )
        if self.eviction_aging_requests < 1:
            raise ValueError(
                f"eviction_aging_requests must be at least 1, got {self.eviction_aging_requests}"
            )
        if not 0 < self.retry_initial_s <= self.retry_max_s:
            raise ValueError("retry_initial_s must be positive and at most retry_max_s")
        if self.room_wait_s < 0:
            raise ValueError(f"room_wait_s must not be negative, got {self.room_wait_s}")
        if self.malloc_arenas < 0:
            raise ValueError(f"malloc_arenas must not be negative, got {self.malloc_arenas}")
        if self.adapter_cache_bytes < 0:
            raise ValueError(f"adapter_cache_bytes must not be negative, got {self.adapter_cache_bytes}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must not be negative, got {self.drain_timeout_s}")


@dataclass(frozen=True)
class TuningSettings:
    """Tuning jobs: how many run at once, how many may wait, and what a worker may take."""

    max_concurrent_jobs: int = 1
    max_queued_jobs: int = 16
    threads: int = 1  # torch threads of a tuning worker
    nice: int = 10  # a worker's priority below serving's (0-19)
    max_train_records: int = 100_000  # records of one job's training data

    def __post_init__(self) -> None:
        for name in ("max_concurrent_jobs", "max_queued_jobs", "threads", "max_train_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be within 0-19, got {self.nice}")


@dataclass(frozen=True)
class SingleModelSettings:
    """Single-model mode (a KServe predictor): serve the one model in ``model_dir`` as ``name``
    (gateway/single_model.py); ``settings`` are runtime settings added to its manifest."""

    model_dir: Path
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(
                f"{env_name('model-dir')} / --model-dir needs a model name: set {env_name('model-name')} / "
                "--model-name (KServe sets INFERENCE_SERVICE_NAME)"
            )
        if not is_model_id(self.name):
            raise ValueError(
                f"model name {self.name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit, without '..'"
            )
        if not isinstance(self.settings, dict):
            raise ValueError(f"{env_name('model-settings')} / --model-settings must be a JSON object")


@dataclass(frozen=True)
class Settings:
    model_store: Path = Path("model-store")
    preload: tuple[str, ...] = ()
    single_model: SingleModelSettings | None = None  # --model-dir: serve one model as a predictor
    server: ServerSettings = field(default_factory=ServerSettings)
    runtime: ThreadSettings = field(default_factory=ThreadSettings)
    limits: RequestLimits = field(default_factory=RequestLimits)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    tuning: TuningSettings = field(default_factory=TuningSettings)
    api_keys: ApiKeys | None = None  # None: no authentication (gateway/access.py)


def _flag(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


# (flag, type, help, settings slice, attribute); the env name is derived from the flag
_OPTIONS: tuple[tuple[str, Callable[[str], Any], str, str, str], ...] = (
    ("host", str, "address both servers bind to", "server", "host"),
    ("grpc-port", int, "gRPC port (Caikit's default 8085)", "server", "grpc_port"),
    ("http-port", int, "HTTP port (Caikit's default 8080)", "server", "http_port"),
    ("max-request-bytes", int, "largest request body accepted", "server", "max_request_bytes"),
    ("max-deploy-bytes", int, "largest model-deploy request accepted", "server", "max_deploy_bytes"),
    ("log-level", str, "logging level", "server", "log_level"),
    ("log-format", str, "text or json (one JSON object per line)", "server", "log_format"),
    ("access-log", _flag, "log one line per finished request (1) or not (0)", "server", "access_log"),
    ("log-payloads", _flag, "access lines include request / response bodies (1)", "server", "log_payloads"),
    (
        "modelmesh-endpoint",
        str,
        "extra listener for ModelMesh: port:N or unix:PATH",
        "server",
        "modelmesh_endpoint",
    ),
    (
        "modelmesh-models-dir",
        str,
        "directory ModelMesh pulls models into; modelPath must lie under it",
        "server",
        "modelmesh_models_dir",
    ),
    (
        "shutdown-timeout-s",
        float,
        "on SIGTERM, how long in-flight requests may finish",
        "server",
        "shutdown_timeout_s",
    ),
    ("tls-cert-file", str, "PEM certificate: serve HTTPS and gRPC over TLS", "server", "tls_cert_file"),
    ("tls-key-file", str, "PEM private key of the certificate", "server", "tls_key_file"),
    ("tls-client-ca-file", str, "PEM CA: require client certificates (mTLS)", "server", "tls_client_ca_file"),
    ("http-backlog", int, "the HTTP listener's accept queue (capped by somaxconn)", "server", "http_backlog"),
    (
        "grpc-max-concurrent-rpcs",
        int,
        "grpcio's own bound on calls at once, a backstop above --max-inflight (0: none)",
        "server",
        "grpc_max_concurrent_rpcs",
    ),
    ("intra-op-threads", int, "threads inside one model call", "runtime", "intra_op_threads"),
    ("inter-op-threads", int, "threads across graph branches", "runtime", "inter_op_threads"),
    ("model-workers", int, "model calls that may run at once", "runtime", "model_workers"),
    (
        "generation-threads",
        int,
        "threads inside one generation step of onnx-genai-causal-lm (0: intra-op threads x model workers)",
        "runtime",
        "generation_threads",
    ),
    ("max-inputs", int, "most texts / documents in one request", "limits", "max_inputs"),
    ("max-text-chars", int, "longest text accepted, in characters", "limits", "max_text_chars"),
    (
        "max-inflight-per-model",
        int,
        "requests admitted at once per model",
        "limits",
        "max_inflight_per_model",
    ),
    (
        "max-inflight",
        int,
        "task requests and streams in flight, whole process; more: 429 / RESOURCE_EXHAUSTED (0: none)",
        "limits",
        "max_inflight",
    ),
    ("default-timeout-s", float, "deadline of a request that names none", "limits", "default_timeout_s"),
    ("max-new-tokens", int, "most tokens one generation request may ask for", "limits", "max_new_tokens"),
    ("memory-budget-bytes", int, "bytes loaded models may hold (0: none)", "registry", "memory_budget_bytes"),
    ("max-concurrent-loads", int, "model loads that may run at once", "registry", "max_concurrent_loads"),
    (
        "eviction-policy",
        str,
        "which idle model a load evicts: lfu-size (fewest requests per byte) or lru",
        "registry",
        "eviction_policy",
    ),
    (
        "eviction-aging-requests",
        int,
        "lfu-size halves its per-model request counts every this many requests",
        "registry",
        "eviction_aging_requests",
    ),
    ("load-retry-initial-s", float, "first back-off after a failed load", "registry", "retry_initial_s"),
    ("load-retry-max-s", float, "longest back-off after failed loads", "registry", "retry_max_s"),
    (
        "measure-rss",
        _flag,
        "size models by resident memory added (1) or files (0)",
        "registry",
        "measure_rss",
    ),
    ("room-wait-s", float, "how long a load waits for busy models to free room", "registry", "room_wait_s"),
    (
        "malloc-arenas",
        int,
        "glibc malloc arenas under a memory budget (0: default)",
        "registry",
        "malloc_arenas",
    ),
    (
        "drain-timeout-s",
        float,
        "how long an unloading model's requests may finish",
        "registry",
        "drain_timeout_s",
    ),
    (
        "adapter-cache-bytes",
        int,
        "bytes of generation adapters held in memory (LRU)",
        "registry",
        "adapter_cache_bytes",
    ),
    ("max-concurrent-jobs", int, "tuning jobs that may run at once", "tuning", "max_concurrent_jobs"),
    ("max-queued-jobs", int, "tuning jobs that may wait; more are refused", "tuning", "max_queued_jobs"),
    ("tuning-threads", int, "torch threads of a tuning worker", "tuning", "threads"),
    ("tuning-nice", int, "a tuning worker's priority below serving (0-19)", "tuning", "nice"),
    ("max-train-records", int, "records of one tuning job's data", "tuning", "max_train_records"),
)


# KServe (>= 0.17) sets the InferenceService's name in every predictor container
KSERVE_NAME_ENV = "INFERENCE_SERVICE_NAME"


def env_name(flag: str) -> str:
    return "TASKGATE_" + flag.upper().replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every setting as a flag; defaults are resolved later, in ``from_args``."""
    parser.add_argument(
        "--model-store",
        help=f"directory of model folders (env {env_name('model-store')}, default ./model-store)",
    )
    parser.add_argument(
        "--preload",
        help=f"comma-separated model ids to load at start-up (env {env_name('preload')})",
    )
    parser.add_argument(
        "--model-dir",
        help=f"serve the one model in this folder, e.g. /mnt/models (env {env_name('model-dir')})",
    )
    parser.add_argument(
        "--model-name",
        help=f"its model id (env {env_name('model-name')}, else {KSERVE_NAME_ENV})",
    )
    parser.add_argument(
        "--model-settings",
        help=f"JSON object of runtime settings for it (env {env_name('model-settings')})",
    )
    parser.add_argument(
        "--api-keys-file",
        help="JSON / TOML file of API keys (sha256) with tenants, rights and limits "
        f"(env {env_name('api-keys-file')})",
    )
    parser.add_argument("--api-keys", help=f"the same document inline, as JSON (env {env_name('api-keys')})")
    for flag, kind, text, _, _ in _OPTIONS:
        parser.add_argument(f"--{flag}", type=kind, help=f"{text} (env {env_name(flag)})")


def from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Resolve flag > environment > default into one frozen ``Settings``."""

    def pick(flag: str) -> Any:
        value = getattr(args, flag.replace("-", "_"), None)
        if value is not None:
            return value
        return environ.get(env_name(flag))

    slices: dict[str, dict[str, Any]] = {
        "server": {},
        "runtime": {},
        "limits": {},
        "registry": {},
        "tuning": {},
    }
    for flag, kind, _, dest, attr in _OPTIONS:
        raw = pick(flag)
        if raw is None:
            continue
        try:
            slices[dest][attr] = kind(raw)
        except ValueError as exc:
            name = getattr(kind, "__name__", "value").strip("_")
            raise ValueError(f"{env_name(flag)} / --{flag}: {raw!r} is not a valid {name}") from exc
    store = pick("model-store")
    preload = _split(pick("preload"))
    single = _single_model(pick("model-dir"), pick("model-name") or environ.get(KSERVE_NAME_ENV, ""), pick)
    if single is not None and single.name not in preload:
        preload = (single.name, *preload)  # loaded (exported) before the ports open: ready = loaded
    return Settings(
        model_store=Path(store) if store else Path("model-store"),
        preload=preload,
        single_model=single,
        server=ServerSettings(**slices["server"]),
        runtime=ThreadSettings(**slices["runtime"]),
        limits=RequestLimits(**slices["limits"]),
        registry=RegistrySettings(**slices["registry"]),
        tuning=TuningSettings(**slices["tuning"]),
        api_keys=_api_keys(pick("api-keys-file"), pick("api-keys")),
    )


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="taskgate serve")
    add_arguments(parser)
    return from_args(parser.parse_args(argv), os.environ if environ is None else environ)


def _single_model(model_dir: str | None, name: str, pick: Callable[[str], Any]) -> SingleModelSettings | None:
    if not model_dir:
        return None
    raw = pick("model-settings")
    try:
        options = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ValueError(f"{env_name('model-settings')} / --model-settings is not JSON: {exc}") from None
    return SingleModelSettings(model_dir=Path(model_dir), name=name, settings=options)


def _api_keys(path: str | None, inline: str | None) -> ApiKeys | None:
    if path and inline:
        raise ValueError(
            f"give {env_name('api-keys-file')} / --api-keys-file or {env_name('api-keys')}, not both"
        )
    if path:
        return ApiKeys.load(Path(path))
    return ApiKeys.parse(inline) if inline else None


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())
