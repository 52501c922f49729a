"""Tuning jobs by state at /metrics: a real classifier job (seconds) on the tuning gateway,
created over the OpenAI fine-tuning door; the gauge follows it to COMPLETED, and its requests
are counted under the tuning door."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL
from tests.conftest import GatewayThread

pytestmark = pytest.mark.timeout(600)
STATES = ("QUEUED", "RUNNING", "COMPLETED", "CANCELED", "ERRORED")
DATA = [
    {"text": "The striker scored a goal", "label": "sports"},
    {"text": "The chef baked fresh bread", "label": "cooking"},
    {"text": "The team won the final", "label": "sports"},
    {"text": "She simmered the tomato soup", "label": "cooking"},
] * 4


@pytest.fixture(scope="module")
def http(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


def jobs_by_state(http: httpx.Client) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("taskgate_tuning_jobs{"):
            state = line.split('state="', 1)[1].split('"', 1)[0]
            counts[state] = float(line.rsplit(" ", 1)[1])
    return counts


def test_the_jobs_by_state_gauge_follows_a_job(http: httpx.Client) -> None:
    before = jobs_by_state(http)
    assert set(before) == set(STATES)  # every state shown, zero or not
    created = http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": DEFAULT_EMBEDDING_MODEL,
            "suffix": "obs-topics",
            "method": {"type": "classifier", "classifier": {"hyperparameters": {"n_epochs": 1}}},
            "training_data": DATA,
        },
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    during = jobs_by_state(http)
    assert during["QUEUED"] + during["RUNNING"] == before["QUEUED"] + before["RUNNING"] + 1
    status = ""
    for _ in range(1200):  # polled until the job ends (a classifier on MiniLM: seconds)
        status = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert status == "succeeded"
    after = jobs_by_state(http)
    assert after["COMPLETED"] == before["COMPLETED"] + 1
    assert after["QUEUED"] + after["RUNNING"] == before["QUEUED"] + before["RUNNING"]
    shown = http.get("/metrics").text
    assert 'door="tuning"' in shown and 'protocol="http"' in shown
    # the adapter it published serves by name: counted under its base model and its reference
    served = http.post(
        "/api/v1/task/text-classification", json={"model_id": "obs-topics", "inputs": "A late goal"}
    )
    assert served.status_code == 200, served.text
    wanted = {
        "model": DEFAULT_EMBEDDING_MODEL,
        "adapter": "obs-topics@1",
        "task": "text-classification",
        "protocol": "http",
        "door": "caikit",
        "code": "OK",
    }
    count = 0.0
    for _ in range(100):  # the record is finished just after the answer's last byte
        count = sum(
            sample.value
            for family in text_string_to_metric_families(http.get("/metrics").text)
            for sample in family.samples
            if sample.name == "taskgate_requests_total" and sample.labels == wanted
        )
        if count:
            break
        time.sleep(0.05)
    assert count == 1
