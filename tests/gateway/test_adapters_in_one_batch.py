"""Requests naming different adapters through different doors (OpenAI completions and chat,
Caikit REST and gRPC) share the base's running batch: some forward pass held rows of several
adapters, and every answer equals that adapter's answer alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import openai
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.tuning.serving import PEFT_HOST_SUFFIX
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread
from tests.tuning_data import chat_prompt

NAMES = ("batch-a", "batch-b", "batch-c")
PROMPT = chat_prompt("Tell me about the sea.")
TOKENS = 24


@pytest.fixture(scope="module")
def published(
    tuning_gateway: GatewayThread, tuning_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("batch-loras")
    g = tuning_gateway.gateway
    for seed, name in enumerate(NAMES, start=21):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(tuning_store / DEFAULT_GENERATION_MODEL / CONVERTED))
        model = get_peft_model(
            base,
            LoraConfig(
                r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
            ),
        )
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.normal_(0, 0.1)
        model.save_pretrained(str(folder / name), safe_serialization=True)
        version = g.adapter_store.publish(
            name, folder / name, base_model=DEFAULT_GENERATION_MODEL, method="lora"
        )
        asyncio.run_coroutine_threadsafe(g.adapters.on_published(version), tuning_gateway.loop).result(
            timeout=300
        )


def _caikit_rest(address: str, name: str) -> str:
    body = {
        "model_id": name,
        "inputs": PROMPT,
        "parameters": {"max_new_tokens": TOKENS, "min_new_tokens": TOKENS},
    }
    with httpx.Client(base_url=address, timeout=120) as http:
        response = http.post("/api/v1/task/text-generation", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["generated_text"])


def _caikit_grpc(address: str, name: str) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        request = nlp.TextGenerationTaskRequest(text=PROMPT, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
        return str(stub.TextGenerationTaskPredict(request, metadata=(("mm-model-id", name),)).generated_text)


def _openai(address: str, name: str) -> str:
    client = openai.OpenAI(base_url=f"{address}/v1", api_key="dummy", max_retries=0)
    out = client.completions.create(model=name, prompt=PROMPT, max_tokens=TOKENS, temperature=0)
    return out.choices[0].text


def test_doors_name_adapters_per_request_in_one_batch(tuning_gateway: GatewayThread, published: None) -> None:
    g = tuning_gateway.gateway
    http_address, grpc_address = g.addresses.http, g.addresses.grpc
    alone = {name: _caikit_rest(http_address, name) for name in NAMES}
    key = DEFAULT_GENERATION_MODEL + PEFT_HOST_SUFFIX  # the base's PyTorch twin holds the adapters
    host = asyncio.run_coroutine_threadsafe(g.registry.get(key), tuning_gateway.loop).result(timeout=60)
    before = sum(count for distinct, count in host.runtime.adapter_mix.items() if distinct >= 2)
    calls = [
        (_openai, http_address, "batch-a"),
        (_caikit_rest, http_address, "batch-b"),
        (_caikit_grpc, grpc_address, "batch-c"),
        (_caikit_grpc, grpc_address, "batch-a"),
        (_openai, http_address, "batch-c"),
        (_caikit_rest, http_address, "batch-b"),
    ]
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda call: (call[2], call[0](call[1], call[2])), calls))
    mixed = sum(count for distinct, count in host.runtime.adapter_mix.items() if distinct >= 2) - before
    assert mixed > 0, dict(host.runtime.adapter_mix)  # rows of several adapters in one forward pass
    for name, text in answers:
        assert text == alone[name], name
