"""Tuned adapters through the KServe v2 door: an adapter is a v2 model whose versions are its
published versions (``/v2/models/{name}/versions/{N}`` is ``name@N``), answering as the Caikit
route does for the same adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread
from tests.tuning_data import chat_prompt

PROMPT = chat_prompt("Name a fruit.")


@pytest.fixture(scope="module")
def http(
    tuning_gateway: GatewayThread, tuning_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("v2-loras")
    g = tuning_gateway.gateway
    for seed in (11, 12):  # two versions of "v2-fruit"
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(tuning_store / DEFAULT_GENERATION_MODEL / CONVERTED))
        model = get_peft_model(
            base,
            LoraConfig(
                r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
            ),
        )
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.05 if seed == 11 else 0.3)
        model.save_pretrained(str(folder / str(seed)), safe_serialization=True)
        version = g.adapter_store.publish(
            "v2-fruit", folder / str(seed), base_model=DEFAULT_GENERATION_MODEL, method="lora"
        )
        asyncio.run_coroutine_threadsafe(g.adapters.on_published(version), tuning_gateway.loop).result(
            timeout=300
        )
    with httpx.Client(base_url=g.addresses.http, timeout=120) as client:
        yield client


def _caikit(http: httpx.Client, model_id: str) -> str:
    body = {"model_id": model_id, "inputs": PROMPT, "parameters": {"max_new_tokens": 6}}
    return str(http.post("/api/v1/task/text-generation", json=body).json()["generated_text"])


def _v2(http: httpx.Client, path: str) -> httpx.Response:
    body = {
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": [PROMPT]}],
        "parameters": {"max_new_tokens": 6},
    }
    return http.post(path, json=body)


def test_an_adapter_is_a_v2_model_whose_versions_are_its_published_ones(http: httpx.Client) -> None:
    metadata = http.get("/v2/models/v2-fruit").json()
    assert metadata["versions"] == ["1", "2"]
    assert [t["name"] for t in metadata["inputs"]] == ["text_input"]
    assert "v2-fruit" in [m for m in http.get("/v2/models").json()["models"]]
    assert http.get("/v2/models/v2-fruit/ready").status_code == 200

    current = _v2(http, "/v2/models/v2-fruit/infer")
    assert current.status_code == 200, current.text
    assert current.json()["outputs"][0]["data"] == [_caikit(http, "v2-fruit")]
    first = _v2(http, "/v2/models/v2-fruit/versions/1/infer")
    assert first.status_code == 200, first.text
    assert first.json()["model_version"] == "1"
    assert first.json()["outputs"][0]["data"] == [_caikit(http, "v2-fruit@1")]
    assert _caikit(http, "v2-fruit@1") != _caikit(http, "v2-fruit@2")

    missing = _v2(http, "/v2/models/v2-fruit/versions/9/infer")
    assert missing.status_code == 404 and "error" in missing.json()
    assert _v2(http, "/v2/models/v2-fruit/versions/x/infer").status_code == 404
