"""Prometheus metrics of one gateway (its own registry, so two gateways in a process never clash).

Per model: batch sizes and times, queued rows, dropped rows by reason, cache hits and misses,
load-wait / load / unload times; process-wide: models loaded and their bytes (the SageMaker
multi-model endpoint and ModelMesh metrics are the reference).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
MODEL = ["model"]


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.batch_size = Histogram(
            "taskgate_batch_size", "Rows per model batch", MODEL, buckets=BATCH_SIZES, registry=registry
        )
        self.batch_seconds = Histogram(
            "taskgate_batch_seconds", "Time to run one model batch", MODEL, registry=registry
        )
        self.queue_rows = Gauge("taskgate_queue_rows", "Rows waiting for a batch", MODEL, registry=registry)
        self.rows_dropped = Counter(
            "taskgate_rows_dropped_total",
            "Rows that never reached the model, by reason (shed, expired, cancelled)",
            [*MODEL, "reason"],
            registry=registry,
        )
        self.rows_failed = Counter(
            "taskgate_rows_failed_total", "Rows whose model run failed", MODEL, registry=registry
        )
        self.cache = Counter(
            "taskgate_model_cache_total",
            "Model lookups by result (hit: loaded, miss: had to load)",
            [*MODEL, "result"],
            registry=registry,
        )
        self.load_wait = Histogram(
            "taskgate_model_load_wait_seconds", "Time requests waited for a load", MODEL, registry=registry
        )
        self.load_seconds = Histogram(
            "taskgate_model_load_seconds", "Time to load a model", MODEL, registry=registry
        )
        self.unload_seconds = Histogram(
            "taskgate_model_unload_seconds", "Time to unload a model", MODEL, registry=registry
        )
        self.loaded_models = Gauge("taskgate_models_loaded", "Models loaded now", registry=registry)
        self.loaded_bytes = Gauge(
            "taskgate_models_loaded_bytes", "Bytes held by loaded models", registry=registry
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
