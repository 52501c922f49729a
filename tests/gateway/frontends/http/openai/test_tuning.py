"""OpenAI's fine-tuning API over Taskgate's jobs, with the official ``openai`` client over a real
socket: a JSONL file uploaded, a classifier job on MiniLM followed live (SSE) and served by its
``fine_tuned_model`` on the Caikit route; OpenAI's ``supervised`` and hyper-parameter names
mapped; paging, cancel, a full queue; bad requests refused naming ``param`` with no job made."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL
from gateway.tuning.service import MAX_FILE_BYTES
from tests.conftest import MAX_REQUEST_BYTES, GatewayThread
from tests.tuning_data import topic_records

FAST = {"num_epochs": 3, "batch_size": 8, "learning_rate": 2e-3}
SLOW = {"num_epochs": 50, "batch_size": 4, "learning_rate": 1e-3}
FINISHED = ("succeeded", "failed", "cancelled")


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _classifier(hyperparameters: dict[str, Any]) -> Any:
    return {"type": "classifier", "classifier": {"hyperparameters": hyperparameters}}


@pytest.fixture(scope="module")
def client(tuning_gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    url = f"{tuning_gateway.gateway.addresses.http}/v1"
    with openai.OpenAI(base_url=url, api_key="dummy", max_retries=0, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def http(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def files(client: openai.OpenAI) -> dict[str, str]:
    train = client.files.create(file=("topics.jsonl", _jsonl(topic_records(64, seed=1))), purpose="fine-tune")
    held_out = _jsonl(topic_records(24, seed=2, held_out=True))
    validation = client.files.create(file=("topics-val.jsonl", held_out), purpose="fine-tune")
    return {"train": train.id, "validation": validation.id}


def _wait(client: openai.OpenAI, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 240) -> Any:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {until} in {timeout} s")


def _wait_for_step(client: openai.OpenAI, job_id: str) -> Any:
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.progress.get("step"):
            return job
        assert job.status not in FINISHED, job.reasons
        time.sleep(0.1)
    raise AssertionError("the job never reached its first step")


def _all_jobs(client: openai.OpenAI) -> list[str]:
    return [job.id for job in client.fine_tuning.jobs.list(limit=100)]


def test_a_training_file_is_uploaded_and_retrieved(client: openai.OpenAI, files: dict[str, str]) -> None:
    uploaded = client.files.retrieve(files["train"])
    assert uploaded.object == "file" and uploaded.purpose == "fine-tune" and uploaded.status == "processed"
    assert uploaded.filename == "topics.jsonl"
    assert uploaded.bytes == len(_jsonl(topic_records(64, seed=1)))
    assert uploaded.created_at > 0 and uploaded.records == 64

    with pytest.raises(openai.BadRequestError) as err:  # a malformed line, named
        client.files.create(
            file=("bad.jsonl", b'{"text": "a", "label": "b"}\n{"text": \n'), purpose="fine-tune"
        )
    assert err.value.param == "file" and "line 2" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("t.jsonl", _jsonl(topic_records(2, seed=1))), purpose="assistants")
    assert err.value.param == "purpose"
    # training data rides the deploy limit, not the task limit: over --max-request-bytes is fine
    larger = _jsonl(topic_records(2, seed=1)) * (MAX_REQUEST_BYTES // 100)
    assert client.files.create(file=("larger.jsonl", larger), purpose="fine-tune").bytes > MAX_REQUEST_BYTES
    big = b"{}\n" * (MAX_FILE_BYTES // 3 + 1)  # over the training-file limit
    with pytest.raises(openai.APIStatusError) as status:
        client.files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert status.value.status_code == 413 and status.value.code == "request_too_large"  # OpenAI's body
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-" + "0" * 24)


def test_a_classifier_job_is_followed_live_and_its_model_serves(
    client: openai.OpenAI, http: httpx.Client, files: dict[str, str]
) -> None:
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_EMBEDDING_MODEL,
        training_file=files["train"],
        validation_file=files["validation"],
        suffix="oa-topics",
        method=_classifier(FAST),
    )
    assert job.object == "fine_tuning.job" and job.id.startswith("ftjob-")
    assert job.status in ("queued", "running") and job.fine_tuned_model is None
    assert job.model == DEFAULT_EMBEDDING_MODEL and job.training_file == files["train"]
    assert job.method is not None and job.method.type == "classifier"
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 8
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(2.0)  # 2e-3 / the default 1e-3

    # the live feed, attached while the job runs: the past replayed, then followed to the end
    _wait(client, job.id, until=("running", *FINISHED))
    events = []
    saw_running_after_attach = False
    path = f"/v1/fine_tuning/jobs/{job.id}/events"
    with http.stream("GET", path, params={"stream": "true"}) as feed:
        assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
        lines = feed.iter_lines()
        for line in lines:
            if line == "data: [DONE]":
                break
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 1:  # what follows this point happened after the attach
                    saw_running_after_attach = client.fine_tuning.jobs.retrieve(job.id).status == "running"
        assert not any(lines)  # the feed ends with the job: nothing after [DONE]
    assert saw_running_after_attach
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # nothing lost or repeated
    steps = [e["data"]["step"] for e in events if e["type"] == "metrics" and "step" in e["data"]]
    assert steps == list(range(1, 25))  # 3 epochs of 64 records at batch 8
    assert events[-1]["message"] == "published oa-topics@1"
    assert all(e["object"] == "fine_tuning.job.event" for e in events)

    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.reasons
    assert done.fine_tuned_model == "oa-topics" and done.adapter == "oa-topics@1"
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert done.error is None and done.seed == 42
    assert done.state == "COMPLETED" and done.metrics["val_accuracy"] >= 0.9
    assert done.progress["step"] == done.progress["total_steps"] == 24
    assert {"epoch", "loss", "learning_rate", "eta_s"} <= set(done.progress)

    # events, newest first as OpenAI lists them, in pages that join up
    listed = client.fine_tuning.jobs.list_events(job.id, limit=100)
    assert [e.id for e in listed.data] == [e["id"] for e in reversed(events)]
    assert listed.data[0].message == "published oa-topics@1" and listed.has_more is False
    paged = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=7)]  # auto-paging
    assert paged == [e.id for e in listed.data]
    # attached after the end: the whole story, then the end
    replay = http.get(path, params={"stream": "true"}).text
    assert replay.count("data: {") == len(events) and replay.endswith("data: [DONE]\n\n")
    resumed = http.get(path, params={"stream": "true"}, headers={"last-event-id": events[-3]["id"]}).text
    assert resumed.count("data: {") == 2

    # fine_tuned_model serves at once on the Caikit route, with held-out accuracy
    held_out = topic_records(20, seed=3, held_out=True)
    right = 0
    for row in held_out:
        body = {"model_id": done.fine_tuned_model, "inputs": row["text"]}
        response = http.post("/api/v1/task/text-classification", json=body)
        assert response.status_code == 200, response.text
        right += response.json()["results"][0]["label"] == row["label"]
    assert right / len(held_out) >= 0.9
    # and its version records the job
    version = http.get("/management/adapters/oa-topics").json()["versions"][0]
    assert version["job_id"] == job.id and version["metrics"]["val_accuracy"] >= 0.9


def test_a_job_whose_gate_is_not_beaten_succeeds_without_a_model(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_EMBEDDING_MODEL,
        training_file=None,
        suffix="oa-gated",
        method=_classifier({"num_epochs": 1, "batch_size": 16, "validation_fraction": 0.25}),
        extra_body={
            "training_data": topic_records(48, seed=4),
            "gate": {"metric": "val_accuracy", "threshold": 1.01},
        },
    )
    done = _wait(client, job.id)
    assert done.status == "succeeded" and done.fine_tuned_model is None and done.adapter is None
    assert done.reasons[0].startswith("not published: val_accuracy")
    assert done.training_file is None
    assert http.get("/management/adapters/oa-gated").status_code == 404
    # event cursors are this job's event ids; the live feed takes no limit
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.list_events(job.id, after="ftevent-nope")
    assert err.value.param == "after"
    path = f"/v1/fine_tuning/jobs/{job.id}/events"
    streamed = http.get(path, params={"stream": "true", "limit": 3})
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "limit"


def test_paging_mapping_cancel_and_a_full_queue(tuning_gateway: GatewayThread, client: openai.OpenAI) -> None:
    records = topic_records(32, seed=5)
    extra = {"training_data": records}
    running = client.fine_tuning.jobs.create(
        model=DEFAULT_EMBEDDING_MODEL, training_file=None, suffix="oa-slow",
        method=_classifier(SLOW), extra_body=extra,
    )  # fmt: skip
    _wait_for_step(client, running.id)
    assert client.fine_tuning.jobs.retrieve(running.id).estimated_finish is not None

    # OpenAI's "supervised" on an encoder is the classifier; its hyper-parameter names map
    supervised = client.fine_tuning.jobs.create(
        model=DEFAULT_EMBEDDING_MODEL,
        training_file=None,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 2.0}
            },
        },
        seed=7,
        extra_body=extra,
    )
    assert supervised.status == "queued"  # one job runs at a time
    assert supervised.method is not None and supervised.method.type == "classifier"
    config = supervised.method.classifier["hyperparameters"]
    assert config["num_epochs"] == 2 and config["batch_size"] == 16 and config["seed"] == 7
    assert config["learning_rate"] == pytest.approx(2e-3)
    assert supervised.adapter_name.startswith(f"{DEFAULT_EMBEDDING_MODEL}-ft-")
    third = client.fine_tuning.jobs.create(
        model=DEFAULT_EMBEDDING_MODEL, training_file=None, method=_classifier(FAST),
        extra_body=extra,
    )  # fmt: skip

    # newest first, in pages that join up
    page = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == [third.id, supervised.id] and page.has_more is True
    following = client.fine_tuning.jobs.list(limit=2, after=supervised.id)
    assert following.data[0].id == running.id
    everything = _all_jobs(client)
    assert everything[:3] == [third.id, supervised.id, running.id] and len(set(everything)) == len(everything)

    # a name a running job will publish is taken
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_EMBEDDING_MODEL, training_file=None, suffix="oa-slow",
            method=_classifier(FAST), extra_body=extra,
        )  # fmt: skip
    assert err.value.param == "suffix"

    # the queue holds 16: the next is 429, and makes no job
    queued = [supervised.id, third.id]
    while len(queued) < tuning_gateway.gateway.settings.tuning.max_queued_jobs:
        filler = client.fine_tuning.jobs.create(
            model=DEFAULT_EMBEDDING_MODEL, training_file=None, method=_classifier(FAST),
            extra_body=extra,
        )  # fmt: skip
        queued.append(filler.id)
    before = _all_jobs(client)
    with pytest.raises(openai.RateLimitError) as full:
        client.fine_tuning.jobs.create(
            model=DEFAULT_EMBEDDING_MODEL, training_file=None, method=_classifier(FAST),
            extra_body=extra,
        )  # fmt: skip
    assert full.value.code == "rate_limit_exceeded" and full.value.response.headers["retry-after"]
    assert _all_jobs(client) == before

    # queued jobs cancel at once; the running one after its current step
    for job_id in queued:
        assert client.fine_tuning.jobs.cancel(job_id).status == "cancelled"
    client.fine_tuning.jobs.cancel(running.id)
    cancelled = _wait(client, running.id, timeout=60)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    assert cancelled.reasons == ["cancelled"] and cancelled.error is None
    assert client.fine_tuning.jobs.cancel(running.id).status == "cancelled"  # a finished job stays


def test_bad_requests_name_the_param_and_make_no_job(
    client: openai.OpenAI, http: httpx.Client, files: dict[str, str]
) -> None:
    before = _all_jobs(client)
    wrong_fields = client.files.create(
        file=("wrong.jsonl", _jsonl([{"txt": "a", "label": "b"}] * 4)), purpose="fine-tune"
    )
    fine = {"model": DEFAULT_EMBEDDING_MODEL, "training_file": files["train"], "method": _classifier(FAST)}
    hyper = "method.classifier.hyperparameters"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "no-such-model"}, "model"),
        ({"method": {"type": "lora"}}, "model"),  # LoRA tunes a causal LM; MiniLM is an encoder
        ({"model": DEFAULT_GENERATION_MODEL}, "model"),  # the classifier tunes an encoder
        ({"training_file": wrong_fields.id}, "training_file"),
        ({"training_file": "file-" + "0" * 24}, "training_file"),
        ({"method": _classifier({"learning_rate": -1})}, f"{hyper}.learning_rate"),
        ({"method": _classifier({"epochs": 3})}, hyper),
        ({"method": _classifier({"n_epochs": 2, "num_epochs": 2})}, f"{hyper}.n_epochs"),
        ({"method": _classifier({"learning_rate_multiplier": -1})}, f"{hyper}.learning_rate_multiplier"),
        ({"suffix": DEFAULT_GENERATION_MODEL}, "suffix"),  # a model's id
        ({"suffix": "not a name!"}, "suffix"),
        ({"method": {"type": "dpo"}}, "method.type"),
        ({"method": {"type": "dance"}}, "method.type"),
        ({"method": {"type": "lora", "classifier": {}}}, "method.classifier"),
        ({"seed": 3, "method": _classifier({"seed": 4})}, "seed"),
        ({"extra_body": {"gate": {"metric": "speed"}}}, "gate"),
        ({"extra_body": {"colour": "blue"}}, "colour"),
        ({"extra_body": {"training_data": [{"text": "a", "label": "b"}]}}, "training_data"),  # and a file
        ({"training_file": None}, "training_file"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
    ]
    for change, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(**(fine | change))
        assert err.value.param == param, (change, err.value.message)
        assert err.value.type == "invalid_request_error" and err.value.message
    assert _all_jobs(client) == before

    # the body itself, as OpenAI writes it
    raw = http.post("/v1/fine_tuning/jobs", json={"model": "no-such-model", "training_file": files["train"]})
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert (
        error["param"] == "model"
        and error["type"] == "invalid_request_error"
        and "no-such-model" in error["message"]
    )
    assert http.post("/v1/fine_tuning/jobs", content=b"{not json").json()["error"]["code"] == "invalid_value"

    missing = "ftjob-" + "0" * 24
    for call in (
        lambda: client.fine_tuning.jobs.retrieve(missing),
        lambda: client.fine_tuning.jobs.retrieve("nope"),
        lambda: client.fine_tuning.jobs.cancel(missing),
        lambda: client.fine_tuning.jobs.list_events(missing),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.list(after=missing)
    assert err.value.param == "after"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.list(limit=0)
    assert err.value.param == "limit"
