"""Prometheus metrics of one gateway (its own registry, so two gateways in a process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_size = Histogram(
            "taskgate_batch_size",
            "Rows per model batch",
            ["model"],
            buckets=BATCH_SIZES,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "taskgate_batch_seconds", "Time to run one model batch", ["model"], registry=self.registry
        )
        self.queue_rows = Gauge(
            "taskgate_queue_rows", "Rows waiting for a batch", ["model"], registry=self.registry
        )
        self.rows_dropped = Counter(
            "taskgate_rows_dropped_total",
            "Rows that never reached the model, by reason (shed, expired, cancelled)",
            ["model", "reason"],
            registry=self.registry,
        )
        self.rows_failed = Counter(
            "taskgate_rows_failed_total", "Rows whose model run failed", ["model"], registry=self.registry
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
