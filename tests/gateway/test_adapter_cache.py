"""The generation adapters' cache on a real gateway: a byte budget (least recently used out),
pinning, hits and misses in the metrics, and several adapters answering in one running batch."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForCausalLM

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.settings import RegistrySettings
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread, gateway_settings
from tests.tuning_data import chat_prompt

NAMES = ("cache-a", "cache-b", "cache-c")


@pytest.fixture(scope="module")
def small_cache(tuning_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    """A gateway whose adapter cache holds two of these adapters (1.8 MB each), not three."""
    settings = gateway_settings(tuning_store)
    settings = dataclasses.replace(settings, registry=RegistrySettings(adapter_cache_bytes=4_000_000))
    server = GatewayThread(settings)
    server.start()
    folder = tmp_path_factory.mktemp("loras")
    base_folder = tuning_store / DEFAULT_GENERATION_MODEL / CONVERTED
    for seed, name in enumerate(NAMES):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
        model = get_peft_model(
            base,
            LoraConfig(
                r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
            ),
        )
        model.save_pretrained(str(folder / name), safe_serialization=True)
        server.gateway.adapter_store.publish(
            name, folder / name, base_model=DEFAULT_GENERATION_MODEL, method="lora"
        )
    yield server
    server.stop()


def _generate(http: httpx.Client, model_id: str) -> httpx.Response:
    body = {"model_id": model_id, "inputs": chat_prompt("Hello"), "parameters": {"max_new_tokens": 4}}
    return http.post("/api/v1/task/text-generation", json=body)


def _held(server: GatewayThread) -> dict[str, int]:
    return {key: nbytes for key, nbytes, _, _ in server.gateway.adapters.cache.held()}


def _metric(http: httpx.Client, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_the_budget_evicts_the_least_recently_used_and_spares_the_pinned(small_cache: GatewayThread) -> None:
    with httpx.Client(base_url=small_cache.gateway.addresses.http, timeout=120) as http:
        cache = small_cache.gateway.adapters.cache
        for name in NAMES:
            assert _generate(http, name).status_code == 200
            assert cache.held_bytes <= cache.budget_bytes
        assert set(_held(small_cache)) == {"cache-b@1", "cache-c@1"}  # a was least recently used
        assert _metric(http, "taskgate_adapter_cache_total", adapter="cache-a@1", result="miss") == 1
        assert _metric(http, "taskgate_adapter_loaded_bytes", adapter="cache-a@1") == 0

        cache.pin("cache-a", True)
        try:
            for name in ("cache-a", "cache-b", "cache-c", "cache-c"):
                assert _generate(http, name).status_code == 200
            assert "cache-a@1" in _held(small_cache)  # pinned: never the one evicted
            assert cache.held_bytes <= cache.budget_bytes
            assert _metric(http, "taskgate_adapter_cache_total", adapter="cache-c@1", result="hit") >= 1
            assert _metric(http, "taskgate_adapter_requests_total", adapter="cache-c@1") == 3
            assert _metric(http, "taskgate_adapter_generated_tokens_total", adapter="cache-c@1") > 0
        finally:
            cache.pin("cache-a", False)


def test_concurrent_requests_of_several_adapters_all_answer(small_cache: GatewayThread) -> None:
    # more adapters in flight than the budget holds: in-use adapters are not evicted, the budget
    # is passed while they run, and every request answers like the same adapter alone
    with httpx.Client(base_url=small_cache.gateway.addresses.http, timeout=120) as http:
        alone = {name: _generate(http, name).json()["generated_text"] for name in NAMES}
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda name: (name, _generate(http, name)), [*NAMES, *NAMES]))
        for name, response in answers:
            assert response.status_code == 200, response.text
            assert response.json()["generated_text"] == alone[name]
    cache = small_cache.gateway.adapters.cache
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), small_cache.loop).result()
    assert all(inflight == 0 for _, _, _, inflight in cache.held())
