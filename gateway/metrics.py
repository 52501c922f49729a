"""Prometheus metrics of one gateway (its own registry, so two gateways in a process never clash).

Per model: batch sizes and times, queued rows, dropped rows by reason, cache hits and misses,
load-wait / load / unload times; process-wide: models loaded and their bytes (the SageMaker
multi-model endpoint and ModelMesh metrics are the reference).
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.request_metrics import RequestMetrics, Sample, SampledGauges, StateCounts

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
DROP_REASONS = ("shed", "expired", "cancelled")
MODEL = ["model"]
ADAPTER = ["adapter"]


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
        self.loop_lag = Histogram(
            "taskgate_event_loop_lag_seconds",
            "How late the event loop woke a timer (time it could not serve requests)",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.loop_lag_max = Gauge(
            "taskgate_event_loop_lag_max_seconds", "Largest event-loop lag seen", registry=registry
        )
        # tuned adapters, labelled by their reference (name@N: bounded by the published versions)
        self.adapter_requests = Counter(
            "taskgate_adapter_requests_total", "Requests served with an adapter", ADAPTER, registry=registry
        )
        self.adapter_tokens = Counter(
            "taskgate_adapter_generated_tokens_total",
            "Tokens generated with an adapter",
            ADAPTER,
            registry=registry,
        )
        self.adapter_cache = Counter(
            "taskgate_adapter_cache_total",
            "Adapter lookups: hit (in memory) or miss (loaded for the request)",
            [*ADAPTER, "result"],
            registry=registry,
        )
        self.adapter_load_wait = Histogram(
            "taskgate_adapter_load_wait_seconds", "Time a request waited for its adapter to load", ADAPTER,
            registry=registry,
        )  # fmt: skip
        self.adapter_bytes = Gauge(
            "taskgate_adapter_loaded_bytes", "Bytes an adapter holds in memory (0: evicted)", ADAPTER,
            registry=registry,
        )  # fmt: skip
        # requests by outcome, the latency split, generation (gateway/request_metrics.py)
        self.requests = RequestMetrics(registry)
        self._sampled = SampledGauges()
        registry.register(self._sampled)
        # every series labelled by model, with its other labels' possible values
        self._per_model: list[tuple[Any, list[tuple[str, ...]]]] = [
            (self.batch_size, [()]),
            (self.batch_seconds, [()]),
            (self.queue_rows, [()]),
            (self.rows_dropped, [(reason,) for reason in DROP_REASONS]),
            (self.rows_failed, [()]),
            (self.cache, [("hit",), ("miss",)]),
            (self.load_wait, [()]),
            (self.load_seconds, [()]),
            (self.unload_seconds, [()]),
        ]

    def forget_model(self, model_id: str) -> None:
        """Remove every series of a model that left the store (label values stay bounded)."""
        for metric, extras in self._per_model:
            for extra in extras:
                with contextlib.suppress(KeyError):
                    metric.remove(model_id, *extra)
        self.requests.forget(model_id)

    def watch_generation(self, sample: Sample) -> None:
        """``sample()``: (model, waiting, running) per generation scheduler, read at each scrape."""
        self._sampled.generation = sample

    def watch_jobs(self, counts: StateCounts, states: tuple[str, ...]) -> None:
        """``counts()``: tuning jobs by state (every state in ``states`` is shown, 0 if absent)."""
        self._sampled.jobs = counts
        self._sampled.job_states = states

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
