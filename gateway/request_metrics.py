"""Request metrics: counts by outcome and the latency split (queue / model / overhead), per model.

``overhead = total - queue - model`` is what the gateway itself adds (parsing, tokenization,
serialization, the event loop): SageMaker's OverheadLatency against its ModelLatency, per model.
Generation adds tokens, time to first token and the gaps between tokens. Sampled at scrape
time: sequences waiting / running per generation scheduler and tuning jobs by state.

Label values are bounded: ``model`` is a model id the registry resolved ("unknown" when a task
request named none it knows, "" for requests that are not tasks), ``adapter`` a published
reference (``name@N``) or "", ``task`` / ``protocol`` / ``door`` fixed sets, ``code`` a gRPC
status name from the one table. A model's series go when it leaves the store (``forget``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.ops.request_log import RequestRecord

REQUEST_LABELS = ["model", "adapter", "task", "protocol", "door", "code"]
SPLIT_LABELS = ["model", "task"]
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SHORT_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
TOKEN_GAP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)

Sample = Callable[[], Iterable[tuple[str, int, int]]]  # (model, waiting, running) per scheduler
StateCounts = Callable[[], Mapping[str, int]]


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "taskgate_requests_total", "Requests by outcome", REQUEST_LABELS, registry=registry
        )
        self.seconds = Histogram(
            "taskgate_request_seconds", "Time from a request's arrival to its last byte",
            SPLIT_LABELS, buckets=SECONDS, registry=registry,
        )  # fmt: skip
        self.queue = Histogram(
            "taskgate_request_queue_seconds", "Time a request waited for the model (batch queue, "
            "generation queue)", SPLIT_LABELS, buckets=SHORT_SECONDS, registry=registry,
        )  # fmt: skip
        self.model = Histogram(
            "taskgate_request_model_seconds", "Time the model worked on a request (its batch run; "
            "generation: prefill to last token)", SPLIT_LABELS, buckets=SECONDS, registry=registry,
        )  # fmt: skip
        self.overhead = Histogram(
            "taskgate_request_overhead_seconds", "Total minus queue minus model time: what the "
            "gateway added", SPLIT_LABELS, buckets=SHORT_SECONDS, registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "taskgate_generated_tokens_total", "Tokens generated", ["model"], registry=registry
        )
        self.ttft = Histogram(
            "taskgate_time_to_first_token_seconds", "From a generation request's arrival to its "
            "first token", ["model"], buckets=SECONDS, registry=registry,
        )  # fmt: skip
        self.inter_token = Histogram(
            "taskgate_inter_token_seconds", "Gap between a sequence's consecutive tokens", ["model"],
            buckets=TOKEN_GAP_SECONDS, registry=registry,
        )  # fmt: skip
        self._lock = threading.Lock()
        # label values -> their children: one dict look-up per request instead of five labels()
        # calls; bounded as the label values are, emptied of a model's entries by ``forget``
        self._requests: dict[tuple[str, ...], Any] = {}
        self._splits: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def observe(self, record: RequestRecord, total_s: float) -> None:
        model = record.model or ("unknown" if record.task else "")
        labels = (model, record.adapter, record.task, record.protocol, record.door, record.code)
        counter = self._requests.get(labels)
        if counter is None:
            counter = self.requests.labels(*labels)
            with self._lock:
                self._requests[labels] = counter
        counter.inc()
        split = (model, record.task)
        children = self._splits.get(split)
        if children is None:
            children = (
                self.seconds.labels(*split),
                self.queue.labels(*split),
                self.model.labels(*split),
                self.overhead.labels(*split),
            )
            with self._lock:
                self._splits[split] = children
        seconds, queue, model_time, overhead = children
        seconds.observe(total_s)
        if not record.model or not (record.queue_s or record.model_s):
            return  # never reached the model (refused, shed, failed before): not in the split
        queue.observe(record.queue_s)
        model_time.observe(record.model_s)
        overhead.observe(max(0.0, total_s - record.queue_s - record.model_s))
        if record.ttft_s is not None:
            self.ttft.labels(model).observe(record.ttft_s)
        if record.tokens:
            self.tokens.labels(model).inc(record.tokens)
        if record.gaps:
            gaps = self.inter_token.labels(model)
            for gap in record.gaps:
                gaps.observe(gap)

    def forget(self, model_id: str) -> None:
        """Remove the series of a model that left the store."""
        with self._lock:
            labels = [key for key in self._requests if key[0] == model_id]
            splits = [key for key in self._splits if key[0] == model_id]
            for key in labels:
                del self._requests[key]
            for split in splits:
                del self._splits[split]
        for key in labels:
            with contextlib.suppress(KeyError):
                self.requests.remove(*key)
        for split in splits:
            for histogram in (self.seconds, self.queue, self.model, self.overhead):
                with contextlib.suppress(KeyError):
                    histogram.remove(*split)
        for metric in (self.tokens, self.ttft, self.inter_token):
            with contextlib.suppress(KeyError):
                metric.remove(model_id)


class SampledGauges(Collector):
    """Gauges read at scrape time: generation sequences per scheduler, tuning jobs by state."""

    def __init__(self) -> None:
        self.generation: Sample | None = None
        self.jobs: StateCounts | None = None
        self.job_states: tuple[str, ...] = ()

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily(
            "taskgate_generation_sequences_waiting",
            "Generation requests queued for a model",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            "taskgate_generation_sequences_running", "Sequences in a model's running batch", labels=["model"]
        )
        for model, queued, active in self.generation() if self.generation is not None else ():
            waiting.add_metric([model], queued)
            running.add_metric([model], active)
        jobs = GaugeMetricFamily("taskgate_tuning_jobs", "Tuning jobs by state", labels=["state"])
        counts = self.jobs() if self.jobs is not None else {}
        for state in self.job_states:
            jobs.add_metric([state], counts.get(state, 0))
        return [waiting, running, jobs]
