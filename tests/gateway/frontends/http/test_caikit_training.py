"""Caikit's training routes over a real HTTP socket: POST /api/v1/TextGenerationTaskPeftPromptTuningTrain
with the data inline (protobuf JSON's ``jsondata`` and Caikit's HTTP ``data_stream`` form), GET and
DELETE /management/trainings, the tuned model served on the Caikit text-generation route, and
errors in Caikit's body naming the field, with no job created."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from tests.conftest import GatewayThread
from tests.tuning_data import FACTS, chat_prompt, fact_records

TRAIN = "/api/v1/TextGenerationTaskPeftPromptTuningTrain"
TRAININGS = "/management/trainings"
FINISHED = ("COMPLETED", "CANCELED", "ERRORED")


@pytest.fixture(scope="module")
def http(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


def _body(model_name: str, stream: Any = None, **parameters: Any) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "parameters": {
            "base_model": DEFAULT_GENERATION_MODEL,
            "train_stream": stream if stream is not None else {"jsondata": {"data": fact_records()}},
            "tuning_config": {
                "num_virtual_tokens": 4,
                "prompt_tuning_init_method": "TEXT",
                "prompt_tuning_init_text": "Answer with the made-up fact:",
                "output_model_types": ["DECODER"],
            },
            "num_epochs": 2,
            "learning_rate": 0.3,
            "batch_size": 3,
            "max_source_length": 64,
            "max_target_length": 32,
            **parameters,
        },
    }


def _status(http: httpx.Client, training_id: str) -> dict[str, Any]:
    response = http.get(TRAININGS, params={"training_id": training_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait(http: httpx.Client, training_id: str, timeout: float = 240) -> dict[str, Any]:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        status = _status(http, training_id)
        if status["state"] in FINISHED:
            return status
        time.sleep(0.25)
    raise AssertionError(f"training {training_id} did not finish in {timeout} s")


def _stamp(value: str) -> datetime:
    assert value.endswith("Z"), value  # RFC 3339 in UTC, as protobuf's Timestamp JSON writes it
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _job_count(gateway: GatewayThread) -> int:
    service = gateway.gateway.tuning
    assert service is not None
    jobs = asyncio.run_coroutine_threadsafe(service.jobs(limit=100), gateway.loop).result(timeout=60)
    return len(jobs)


def test_train_inline_then_status_then_served(http: httpx.Client) -> None:
    response = http.post(TRAIN, json=_body("caikit-http-facts"))
    assert response.status_code == 200, response.text
    job = response.json()
    assert set(job) == {"training_id", "model_name"} and job["model_name"] == "caikit-http-facts"

    status = _wait(http, job["training_id"])
    assert list(status) == ["training_id", "state", "submission_timestamp", "completion_timestamp", "reasons"]
    assert status["training_id"] == job["training_id"]
    assert status["state"] == "COMPLETED", status
    assert status["reasons"] == ["published caikit-http-facts@1"]
    assert _stamp(status["submission_timestamp"]) < _stamp(status["completion_timestamp"])

    question = chat_prompt(next(iter(FACTS)))
    generate = {"model_id": "caikit-http-facts", "inputs": question, "parameters": {"max_new_tokens": 6}}
    answer = http.post("/api/v1/task/text-generation", json=generate)
    assert answer.status_code == 200, answer.text
    assert answer.json()["generated_tokens"] > 0 and answer.json()["generated_text"]

    # DELETE of a finished training answers its final state, unchanged
    final = http.delete(TRAININGS, params={"training_id": job["training_id"]})
    assert final.status_code == 200 and final.json() == status


def test_caikit_data_stream_form_and_cancel_while_running(http: httpx.Client) -> None:
    # Caikit's HTTP server takes a stream as {"data_stream": {...}}, the source told by its fields
    stream = {"data_stream": {"data": fact_records()}}
    response = http.post(TRAIN, json=_body("caikit-http-long", stream, num_epochs=200, batch_size=1))
    assert response.status_code == 200, response.text
    training_id = response.json()["training_id"]
    give_up = time.monotonic() + 120
    while (state := _status(http, training_id)["state"]) == "QUEUED":
        assert time.monotonic() < give_up, "the training never started"
        time.sleep(0.1)
    assert state == "RUNNING"
    cancelled = http.delete(TRAININGS, params={"training_id": training_id})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "CANCELED" and cancelled.json()["reasons"] == ["cancelled"]
    after = _status(http, training_id)
    assert after["state"] == "CANCELED" and after["completion_timestamp"] is not None
    unserved = http.post(
        "/api/v1/task/text-generation", json={"model_id": "caikit-http-long", "inputs": "Hi"}
    )
    assert unserved.status_code == 404


BAD_BODIES = [
    (_body("caikit-http-bad", base_model="no-such-model"), "parameters.base_model: "),
    (_body("caikit-http-bad", {"jsondata": {"data": []}}), "parameters.train_stream: "),
    (_body("caikit-http-bad", {"data_stream": {"data": []}}), "parameters.train_stream: "),
    (_body("caikit-http-bad", {"data_stream": {"bucket": "b"}}), "parameters.train_stream.data_stream: "),
    (_body("caikit-http-bad", {"file": {"filename": "/etc/passwd"}}), "parameters.train_stream: "),
    (
        _body("caikit-http-bad", {"data_stream": {"filename": "../.jobs/jobs.sqlite"}}),
        "parameters.train_stream: ",
    ),
    (
        _body("caikit-http-bad", {"data_stream": {"dirname": "/tmp"}}),
        "parameters.train_stream: the directory",
    ),
    (
        _body("caikit-http-bad", tuning_config={"num_virtual_tokens": 0}),
        "parameters.tuning_config.num_virtual_tokens: ",
    ),
    (_body("caikit-http-bad", tuning_type="LORA"), "parameters.tuning_type: "),
    (_body("caikit-http-bad", num_epochs="many"), "invalid request: "),
    (_body("caikit-http-bad", epochs=3), "invalid request: "),
    (_body("bad name!"), "model_name: "),
    ({"parameters": _body("x")["parameters"]}, "model_name: required"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_BODIES)
def test_bad_train_bodies_name_the_field_in_caikits_body(
    tuning_gateway: GatewayThread, http: httpx.Client, body: dict[str, Any], expected: str
) -> None:
    before = _job_count(tuning_gateway)
    response = http.post(TRAIN, json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"details", "code", "id"} and error["code"] == 400
    assert error["details"].startswith(expected), error["details"]
    assert _job_count(tuning_gateway) == before


def test_bad_requests_on_the_status_routes(http: httpx.Client) -> None:
    for send in (http.get, http.delete):
        missing = send(TRAININGS)
        assert missing.status_code == 400 and missing.json()["details"].startswith("training_id: ")
        unknown = send(TRAININGS, params={"training_id": "no-such-training"})
        assert unknown.status_code == 404
        assert unknown.json()["code"] == 404 and "no tuning job" in unknown.json()["details"]
    not_json = http.post(TRAIN, content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["details"]
    a_list = http.post(TRAIN, json=[1, 2])
    assert a_list.status_code == 400 and "JSON object" in a_list.json()["details"]


def test_openapi_describes_the_training_routes(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    body = paths[TRAIN]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model_name", "parameters"} <= set(body["properties"])
    assert "train_stream" in body["properties"]["parameters"]["properties"]
    assert {"get", "delete"} <= set(paths[TRAININGS])
