"""Adapter management over REST (``/management/adapters``) on a real gateway: two versions of a
classifier adapter published into the store as a finished job does; listed with their manifests;
a rollback over REST changes what the name serves from the next request on; bad names and
versions answer 400 / 404 in Caikit's error body."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification

from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL
from tests.conftest import GatewayThread
from tests.models import minilm_source

NAME = "mgmt-topics"
TEXT = "The chef simmered the tomato sauce for hours."


@pytest.fixture(scope="module")
def http(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


def _classifier_adapter(folder: Path, seed: int) -> Path:
    """A random LoRA classifier on MiniLM (its head differs per seed, so do its scores)."""
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_source()), num_labels=2)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"], init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(str(folder), safe_serialization=True)
    (folder / "labels.json").write_text('{"labels": ["sports", "cooking"]}')
    return folder


@pytest.fixture(scope="module")
def versions(tuning_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory) -> list[int]:
    """Two published versions of NAME (2 is current), published as a finished job does."""
    g = tuning_gateway.gateway
    numbers = []
    for seed in (21, 22):
        folder = _classifier_adapter(tmp_path_factory.mktemp(f"mgmt-{seed}"), seed)
        version = g.adapter_store.publish(
            NAME,
            folder,
            base_model=DEFAULT_EMBEDDING_MODEL,
            method="classifier",
            metrics={"val_accuracy": 0.5},
        )
        served = g.adapters.on_published(version)
        asyncio.run_coroutine_threadsafe(served, tuning_gateway.loop).result(timeout=300)
        numbers.append(version.version)
    return numbers


def _scores(http: httpx.Client, model_id: str) -> dict[str, float]:
    response = http.post("/api/v1/task/text-classification", json={"model_id": model_id, "inputs": TEXT})
    assert response.status_code == 200, response.text
    return {r["label"]: r["score"] for r in response.json()["results"]}


def test_adapters_and_their_versions_are_listed(
    tuning_gateway: GatewayThread, http: httpx.Client, versions: list[int]
) -> None:
    listed = http.get("/management/adapters")
    assert listed.status_code == 200
    assert {"name": NAME, "current_version": versions[1]} in listed.json()["adapters"]

    described = http.get(f"/management/adapters/{NAME}")
    assert described.status_code == 200, described.text
    body = described.json()
    assert body["name"] == NAME and body["current_version"] == versions[1]
    assert [v["version"] for v in body["versions"]] == versions
    assert [v["current"] for v in body["versions"]] == [False, True]
    root = tuning_gateway.gateway.adapter_store.root
    for version in body["versions"]:
        assert version["reference"] == f"{NAME}@{version['version']}"
        assert version["base_model"] == DEFAULT_EMBEDDING_MODEL and version["method"] == "classifier"
        assert version["job_id"] is None and version["metrics"] == {"val_accuracy": 0.5}
        assert version["created"] > 0
        assert "adapter_model.safetensors" in version["files"]
        for name, digest in version["files"].items():  # the sha256 of the file as stored
            stored = root / NAME / f"v{version['version']}" / name
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest


def test_a_rollback_over_rest_changes_what_the_name_serves_at_once(
    http: httpx.Client, versions: list[int]
) -> None:
    first, second = (_scores(http, f"{NAME}@{v}") for v in versions)
    assert first != second  # the versions answer differently
    assert _scores(http, NAME) == second

    rolled = http.post(f"/management/adapters/{NAME}/rollback", json={"version": versions[0]})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["current_version"] == versions[0]
    assert _scores(http, NAME) == first  # the next request
    assert _scores(http, f"{NAME}@{versions[1]}") == second  # name@N still serves N
    listed = {a["name"]: a["current_version"] for a in http.get("/management/adapters").json()["adapters"]}
    assert listed[NAME] == versions[0]

    back = http.post(f"/management/adapters/{NAME}/rollback", json={"version": versions[1]})
    assert back.status_code == 200 and back.json()["current_version"] == versions[1]
    assert _scores(http, NAME) == second


def test_unknown_adapters_and_bad_versions(http: httpx.Client, versions: list[int]) -> None:
    def refused(response: httpx.Response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"details", "code", "id"} and body["code"] == status  # Caikit's body
        assert words in body["details"], body

    refused(http.get("/management/adapters/no-such-adapter"), 404, "no-such-adapter")
    refused(
        http.post("/management/adapters/no-such-adapter/rollback", json={"version": 1}),
        404,
        "no-such-adapter",
    )
    refused(http.get(f"/management/adapters/{NAME}@1"), 400, "invalid adapter name")
    rollback = f"/management/adapters/{NAME}/rollback"
    refused(http.post(rollback, json={"version": 99}), 404, "no version 99")
    refused(http.post(rollback, json={"version": 0}), 400, "version")
    refused(http.post(rollback, json={"version": "1"}), 400, "version")
    refused(http.post(rollback, json={"version": 1.5}), 400, "version")
    refused(http.post(rollback, json={}), 400, "version")
    refused(http.post(rollback, json={"version": 1, "colour": "blue"}), 400, "colour")
    refused(http.post(rollback, content=b"{not json", headers={"content-type": "application/json"}), 400, "")
    # nothing changed
    assert http.get(f"/management/adapters/{NAME}").json()["current_version"] == versions[1]


def test_the_openapi_document_describes_the_management_routes_only(http: httpx.Client) -> None:
    document = http.get("/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert {
        "/management/adapters",
        "/management/adapters/{name}",
        "/management/adapters/{name}/rollback",
    } <= set(paths)
    rollback = paths["/management/adapters/{name}/rollback"]["post"]
    assert rollback["requestBody"]["required"] is True
    assert not [p for p in paths if p.startswith("/v1")]  # the OpenAI door stays out, as before
