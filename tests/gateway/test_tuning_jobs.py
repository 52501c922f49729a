"""Tuning jobs end to end on a real gateway: a classifier job on MiniLM trains in a worker
process, publishes, and is served by name over REST; gating, cancel, a killed worker and a
restart. (The wire APIs over these jobs have their own tests.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest

from adapters.jobs.store import JobRecord, JobState
from gateway.errors import InvalidInput
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL
from gateway.tuning.service import DataRef, JobInput, TuningService
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.tuning_data import topic_records

T = TypeVar("T")
FAST = {"num_epochs": 2, "batch_size": 16, "learning_rate": 2e-3}


@pytest.fixture(scope="module")
def http(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


def _run(gateway: GatewayThread, work: Coroutine[Any, Any, T], timeout: float = 300) -> T:
    return asyncio.run_coroutine_threadsafe(work, gateway.loop).result(timeout=timeout)


def _service(gateway: GatewayThread) -> TuningService:
    service = gateway.gateway.tuning
    assert service is not None
    return service


def _classifier_job(name: str, **extra: Any) -> JobInput:
    return JobInput(
        name=name,
        method="classifier",
        base_model=DEFAULT_EMBEDDING_MODEL,
        train=DataRef(records=topic_records(64, seed=1)),
        validation=DataRef(records=topic_records(24, seed=2, held_out=True)),
        hyperparameters=extra.pop("hyperparameters", FAST),
        **extra,
    )


def _wait(gateway: GatewayThread, job_id: str, timeout: float = 240) -> JobRecord:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        record = _run(gateway, _service(gateway).job(job_id))
        if record.state.finished:
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_a_classifier_job_publishes_and_serves(tuning_gateway: GatewayThread, http: httpx.Client) -> None:
    service = _service(tuning_gateway)
    record = _run(tuning_gateway, service.create_job(_classifier_job("topic-clf")))
    assert record.state is JobState.QUEUED
    done = _wait(tuning_gateway, record.id)
    completed_at = time.perf_counter()
    assert done.state is JobState.COMPLETED, done.reasons
    assert done.result["adapter"] == "topic-clf@1"
    assert done.result["metrics"]["val_accuracy"] >= 0.9
    assert done.progress["step"] == done.progress["total_steps"] > 0
    # served on the next request, by name, with held-out accuracy
    held_out = topic_records(20, seed=3, held_out=True)
    right = 0
    for index, row in enumerate(held_out):
        response = http.post(
            "/api/v1/task/text-classification", json={"model_id": "topic-clf", "inputs": row["text"]}
        )
        if index == 0:
            print(f"job COMPLETED seen -> first classification: {time.perf_counter() - completed_at:.3f} s")
        assert response.status_code == 200, response.text
        right += response.json()["results"][0]["label"] == row["label"]
    assert right / len(held_out) >= 0.9
    # and over gRPC, Caikit's TextClassificationTaskPredict with the adapter as mm-model-id
    with grpc.insecure_channel(tuning_gateway.gateway.addresses.grpc) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        reply = stub.TextClassificationTaskPredict(
            nlp.TextClassificationTaskRequest(text=held_out[0]["text"]),
            metadata=(("mm-model-id", "topic-clf"),),
        )
    assert reply.results[0].label == held_out[0]["label"]
    events = _run(tuning_gateway, service.events(record.id))
    assert any("published topic-clf@1" in e.message for e in events)
    assert any(e.message.startswith("step ") for e in events)


def test_a_gated_job_that_does_not_improve_publishes_nothing(tuning_gateway: GatewayThread) -> None:
    service = _service(tuning_gateway)
    job = _classifier_job("topic-gated", gate={"metric": "val_accuracy", "threshold": 1.01})
    done = _wait(tuning_gateway, _run(tuning_gateway, service.create_job(job)).id)
    assert done.state is JobState.COMPLETED
    assert done.reasons[0].startswith("not published: val_accuracy")
    assert not tuning_gateway.gateway.adapter_store.exists("topic-gated")


def test_bad_requests_name_the_field_before_any_job_exists(tuning_gateway: GatewayThread) -> None:
    service = _service(tuning_gateway)
    before = len(_run(tuning_gateway, service.jobs(limit=100)))
    cases = [
        (_classifier_job("ok", hyperparameters={"learning_rate": -1}), "hyperparameters"),
        (_classifier_job("ok", hyperparameters={"epochs": 3}), "hyperparameters"),
        (_classifier_job("bad name!"), "name"),
        (_classifier_job(DEFAULT_EMBEDDING_MODEL), "name"),
        (
            JobInput("x", "classifier", "no-such-model", DataRef(records=[{"text": "a", "label": "b"}])),
            "model",
        ),
        (
            JobInput("x", "lora", DEFAULT_EMBEDDING_MODEL, DataRef(records=[{"input": "a", "output": "b"}])),
            "model",
        ),
        (JobInput("x", "classifier", DEFAULT_EMBEDDING_MODEL, DataRef(records=[])), "training_file"),
        (
            JobInput("x", "classifier", DEFAULT_EMBEDDING_MODEL, DataRef(records=[{"txt": "a"}])),
            "training_file",
        ),
        (JobInput("x", "dance", DEFAULT_EMBEDDING_MODEL, DataRef(records=[{"text": "a"}])), "method"),
        (
            JobInput("x", "classifier", DEFAULT_EMBEDDING_MODEL, DataRef(dataset="../../etc/passwd")),
            "training_file",
        ),
        (JobInput("x", "classifier", DEFAULT_EMBEDDING_MODEL, DataRef(file_id="file-0")), "training_file"),
    ]
    for job, param in cases:
        with pytest.raises(InvalidInput) as error:
            _run(tuning_gateway, service.create_job(job))
        assert error.value.param == param, (job, error.value.message)
    assert len(_run(tuning_gateway, service.jobs(limit=100))) == before


def test_cancel_and_a_killed_worker(tuning_gateway: GatewayThread) -> None:
    service = _service(tuning_gateway)
    slow = {"num_epochs": 50, "batch_size": 4, "learning_rate": 1e-3}
    job = _run(tuning_gateway, service.create_job(_classifier_job("topic-cancel", hyperparameters=slow)))
    _wait_for_step(tuning_gateway, job.id)
    _run(tuning_gateway, service.cancel(job.id))
    cancelled = _wait(tuning_gateway, job.id, timeout=60)
    assert cancelled.state is JobState.CANCELED
    assert not tuning_gateway.gateway.adapter_store.exists("topic-cancel")

    job = _run(tuning_gateway, service.create_job(_classifier_job("topic-killed", hyperparameters=slow)))
    _wait_for_step(tuning_gateway, job.id)
    jobs = tuning_gateway.gateway.jobs
    assert jobs is not None
    pid = jobs.worker_pid(job.id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = _wait(tuning_gateway, job.id, timeout=60)
    assert killed.state is JobState.ERRORED
    assert "signal 9" in killed.reasons[0]
    assert not tuning_gateway.gateway.adapter_store.exists("topic-killed")


def _wait_for_step(gateway: GatewayThread, job_id: str) -> None:
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        record = _run(gateway, _service(gateway).job(job_id))
        if record.progress.get("step"):
            return
        assert not record.state.finished, record.reasons
        time.sleep(0.1)
    raise AssertionError("the job never reached its first step")


def test_a_restart_keeps_jobs_and_adapters(tuning_gateway: GatewayThread, tuning_store: Path) -> None:
    # a second gateway on the same store (the first keeps running): finished jobs and adapters stay
    other = GatewayThread(gateway_settings(tuning_store))
    other.start()
    try:
        service = other.gateway.tuning
        assert service is not None
        listed = {job.name: job for job in _run(other, service.jobs(limit=100))}
        assert listed["topic-clf"].state is JobState.COMPLETED
        assert _run(other, service.current_version("topic-clf")) == 1
    finally:
        other.stop()
