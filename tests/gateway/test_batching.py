"""Dynamic batching on the real model behind the real gateway (metrics read from /metrics)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.models import CLASSIFIER, MINILM, SHORT_POSITIONS

META = (("mm-model-id", MINILM),)
TEXTS = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market'} today" for i in range(32)]


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _embed_alone(stub: nlp_grpc.NlpServiceStub, text: str) -> np.ndarray:
    reply = stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text=text), metadata=META)
    return np.array(reply.result.data_npfloat32sequence.values)


def test_batches_form_under_concurrency_and_match_unbatched(
    channel: grpc.Channel, http: httpx.Client
) -> None:
    stub = nlp_grpc.NlpServiceStub(channel)
    alone = [_embed_alone(stub, text) for text in TEXTS]
    batches_before = metric(http, "taskgate_batch_size_count", model=MINILM)
    rows_before = metric(http, "taskgate_batch_size_sum", model=MINILM)
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        together = list(pool.map(lambda text: _embed_alone(stub, text), TEXTS))
    batches = metric(http, "taskgate_batch_size_count", model=MINILM) - batches_before
    rows = metric(http, "taskgate_batch_size_sum", model=MINILM) - rows_before
    assert rows == len(TEXTS)
    assert batches < len(TEXTS), f"{len(TEXTS)} concurrent requests ran in {batches} batches"
    for single, batched in zip(alone, together, strict=True):
        # same values up to float32 rounding of a different batch shape
        assert np.allclose(single, batched, atol=1e-5)


def test_expired_deadline_is_refused_before_the_model(http: httpx.Client) -> None:
    body = {"model_id": MINILM, "inputs": "warm the batch-time estimate"}
    assert http.post("/api/v1/task/embedding", json=body).status_code == 200
    batches_before = metric(http, "taskgate_batch_size_count", model=MINILM)
    expired_before = metric(http, "taskgate_rows_dropped_total", model=MINILM, reason="expired")
    response = http.post("/api/v1/task/embedding", json=body, headers={"x-request-timeout-ms": "0.5"})
    assert response.status_code == 504, response.text
    assert metric(http, "taskgate_batch_size_count", model=MINILM) == batches_before
    assert metric(http, "taskgate_rows_dropped_total", model=MINILM, reason="expired") >= expired_before
    zero = http.post("/api/v1/task/embedding", json=body, headers={"x-request-timeout-ms": "0"})
    assert zero.status_code == 504


def test_cancelled_request_never_reaches_the_model(channel: grpc.Channel, http: httpx.Client) -> None:
    stub = nlp_grpc.NlpServiceStub(channel)
    long_texts = ["word " * 250] * 32  # one full batch each (max_batch_size 32)
    rows_before = metric(http, "taskgate_batch_size_sum", model=MINILM)
    cancelled_before = metric(http, "taskgate_rows_dropped_total", model=MINILM, reason="cancelled")
    # occupy both model workers with long batches, then queue a request and cancel it
    busy = [
        stub.EmbeddingTasksPredict.future(
            nlp.EmbeddingTasksRequest(texts=long_texts, truncate_input_tokens=-1), metadata=META
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 30
    time.sleep(0.2)  # both long requests arrive ...
    while metric(http, "taskgate_queue_rows", model=MINILM) > 0:  # ... and are dispatched
        assert time.monotonic() < deadline
        time.sleep(0.01)
    doomed = stub.EmbeddingTaskPredict.future(nlp.EmbeddingTaskRequest(text="never run me"), metadata=META)
    while metric(http, "taskgate_queue_rows", model=MINILM) < 1:
        assert time.monotonic() < deadline, "the request never queued"
        time.sleep(0.005)
    assert doomed.cancel()
    for call in busy:
        call.result(timeout=60)
    # the next request triggers a dispatch pass, which drops the cancelled row
    _embed_alone(stub, "after the cancel")
    rows = metric(http, "taskgate_batch_size_sum", model=MINILM) - rows_before
    assert rows == 2 * 32 + 1, "the cancelled row must not have been run"
    cancelled = metric(http, "taskgate_rows_dropped_total", model=MINILM, reason="cancelled")
    assert cancelled == cancelled_before + 1


def test_batching_settings_are_validated_and_live(http: httpx.Client) -> None:
    url = f"/management/models/{MINILM}/batching"
    before = http.get(url).json()
    assert set(before) == {"max_batch_size", "max_queue_delay_ms", "max_queue_rows"}
    bad = http.put(url, json={"max_batch_size": 0})
    assert bad.status_code == 400 and "max_batch_size" in bad.json()["details"]
    assert http.put(url, json={"max_batch_size": 2, "max_queue_rows": 8}).json()["max_batch_size"] == 2
    try:
        response = http.post("/api/v1/task/embedding-tasks", json={"model_id": MINILM, "inputs": ["a"] * 9})
        assert response.status_code == 429  # 9 rows can never fit a queue of 8
    finally:
        assert http.put(url, json=before).json() == {**before, "persisted": False}
    missing = http.get("/management/models/no-such-model/batching")
    assert missing.status_code == 404


@pytest.mark.parametrize("bad", [{"max_batch_size": 2.5}, {"max_batch_size": "8"}, {"max_queue_rows": True}])
def test_batching_settings_are_type_checked_when_written(http: httpx.Client, bad: dict) -> None:
    url = f"/management/models/{MINILM}/batching"
    before = http.get(url).json()
    response = http.put(url, json=bad)
    assert response.status_code == 400, response.text
    assert next(iter(bad)) in response.json()["details"]
    assert http.get(url).json() == before
    ok = http.post("/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "still batching"})
    assert ok.status_code == 200


def test_a_live_batching_change_persists_only_when_asked(http: httpx.Client, store: Path) -> None:
    url = f"/management/models/{SHORT_POSITIONS}/batching"  # not MiniLM: restoring reloads it
    manifest = store / SHORT_POSITIONS / "manifest.json"
    written = manifest.read_text()
    before = http.get(url).json()
    try:
        live = http.put(url, json={"max_queue_delay_ms": 0.5})
        assert live.json()["persisted"] is False and live.json()["max_queue_delay_ms"] == 0.5
        assert manifest.read_text() == written  # live only: the manifest is as it was
        kept = http.put(url, json={"max_queue_delay_ms": 0.25, "persist": True})
        assert kept.json()["persisted"] is True
        assert json.loads(manifest.read_text())["settings"]["batching"]["max_queue_delay_ms"] == 0.25
    finally:
        manifest.write_text(written)
        http.put(url, json=before)


def test_a_live_change_made_before_the_first_request_holds(http: httpx.Client) -> None:
    # the model is loaded but has no batcher yet: the change must reach the batcher made later
    http.post(f"/management/models/{CLASSIFIER}/unload")
    url = f"/management/models/{CLASSIFIER}/batching"
    before = http.get(url).json()
    try:
        assert http.put(url, json={"max_queue_delay_ms": 0.75}).json()["max_queue_delay_ms"] == 0.75
        assert http.get(url).json()["max_queue_delay_ms"] == 0.75
        body = {"model_id": CLASSIFIER, "inputs": "a fine day"}
        assert http.post("/api/v1/task/text-classification", json=body).status_code == 200
        assert http.get(url).json()["max_queue_delay_ms"] == 0.75  # the batcher runs with it
        http.post(f"/management/models/{CLASSIFIER}/unload")  # a live change lasts while loaded
        assert http.get(url).json()["max_queue_delay_ms"] == before["max_queue_delay_ms"]
    finally:
        http.put(url, json={k: v for k, v in before.items() if k != "persisted"})


def test_http_client_that_disconnects_is_dropped_before_the_model(
    channel: grpc.Channel, http: httpx.Client
) -> None:
    stub = nlp_grpc.NlpServiceStub(channel)
    _embed_alone(stub, "the model is loaded")
    long_texts = ["word " * 250] * 64  # two full batches each: four batches, two of them queued
    rows_before = metric(http, "taskgate_batch_size_sum", model=MINILM)
    cancelled_before = metric(http, "taskgate_rows_dropped_total", model=MINILM, reason="cancelled")
    busy = [
        stub.EmbeddingTasksPredict.future(
            nlp.EmbeddingTasksRequest(texts=long_texts, truncate_input_tokens=-1), metadata=META
        )
        for _ in range(2)
    ]
    time.sleep(0.3)  # the long requests are queued and running; ours would wait behind them
    outcome: list[BaseException] = []

    def impatient() -> None:
        body = {"model_id": MINILM, "inputs": "never run me"}
        with httpx.Client(base_url=str(http.base_url), timeout=1.0) as client:
            try:
                client.post("/api/v1/task/embedding", json=body)
            except httpx.TimeoutException as exc:  # the client gives up and closes the connection
                outcome.append(exc)

    thread = threading.Thread(target=impatient)
    thread.start()
    thread.join()
    assert outcome, "the request should have waited behind the long batches"
    for call in busy:
        call.result(timeout=60)
    _embed_alone(stub, "after the disconnect")  # a dispatch pass drops the abandoned row
    assert metric(http, "taskgate_batch_size_sum", model=MINILM) - rows_before == 2 * 64 + 1
    cancelled = metric(http, "taskgate_rows_dropped_total", model=MINILM, reason="cancelled")
    assert cancelled == cancelled_before + 1
