"""Tuned adapters through the OpenAI door: named ``name`` / ``name@N`` as ``model``, listed by
``/v1/models``, answering like the Caikit route for the same adapter (the same core), with the
official ``openai`` client over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread

NAME = "oa-colours"
MESSAGES = [{"role": "user", "content": "Name a colour."}]


def _hf(tuning_store: Path) -> Path:
    return tuning_store / DEFAULT_GENERATION_MODEL / CONVERTED


@pytest.fixture(scope="module")
def published(
    tuning_gateway: GatewayThread, tuning_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> int:
    """A LoRA on SmolLM2 large enough to change its greedy answers, published as serving does."""
    torch.manual_seed(11)
    base = AutoModelForCausalLM.from_pretrained(str(_hf(tuning_store)), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("oa-lora")
    model.save_pretrained(str(folder), safe_serialization=True)
    g = tuning_gateway.gateway
    version = g.adapter_store.publish(NAME, folder, base_model=DEFAULT_GENERATION_MODEL, method="lora")
    asyncio.run_coroutine_threadsafe(g.adapters.on_published(version), tuning_gateway.loop).result(
        timeout=300
    )
    return version.version


@pytest.fixture(scope="module")
def client(tuning_gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    url = f"{tuning_gateway.gateway.addresses.http}/v1"
    with openai.OpenAI(base_url=url, api_key="dummy", max_retries=0, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def caikit(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=300) as c:
        # the base model loads (and builds its graph) once, waited for here: a request waits for
        # a load only until its deadline, and a slow machine took longer (503 "still loading")
        loaded = c.post(f"/management/models/{DEFAULT_GENERATION_MODEL}/load", timeout=1800)
        assert loaded.status_code == 200 and loaded.json()["state"] == "LOADED", loaded.text
        yield c


def _caikit_text(caikit: httpx.Client, model: str, prompt: str, tokens: int) -> str:
    body = {"model_id": model, "inputs": prompt, "parameters": {"max_new_tokens": tokens}}
    response = caikit.post("/api/v1/task/text-generation", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["generated_text"])


def test_adapters_are_listed_and_retrieved(client: openai.OpenAI, published: int) -> None:
    ids = {m.id for m in client.models.list()}
    assert {NAME, DEFAULT_GENERATION_MODEL} <= ids
    card = client.models.retrieve(f"{NAME}@{published}")
    assert card.id == f"{NAME}@{published}" and card.owned_by == "taskgate" and card.created > 0
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(f"{NAME}@{published + 1}")


def test_completion_and_chat_on_an_adapter_answer_like_the_caikit_route(
    client: openai.OpenAI, caikit: httpx.Client, tuning_store: Path, published: int
) -> None:
    prompt = "Colours of the rainbow:"
    tuned = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0).choices[0].text
    assert tuned == _caikit_text(caikit, NAME, prompt, 6)
    assert tuned != _caikit_text(caikit, DEFAULT_GENERATION_MODEL, prompt, 6)  # the adapter is applied

    tokenizer = AutoTokenizer.from_pretrained(str(_hf(tuning_store)))
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    model = f"{NAME}@{published}"
    chat = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6, temperature=0)
    assert chat.model == model
    assert chat.choices[0].message.content == _caikit_text(caikit, model, rendered, 6)
    streamed = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=6, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content


def test_an_adapter_for_the_wrong_task(client: openai.OpenAI, published: int) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=NAME, input="x")
    assert err.value.code == "model_not_supported"
