"""Adapters published into the adapter store are served by name on the task APIs, over real
sockets: LoRA and prompt adapters on SmolLM2 through its PyTorch twin, a classifier adapter on
MiniLM; ``name@N``, rollback, and the publish-to-serve latency."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from peft import LoraConfig, PeftModel, PromptTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from adapters.store import AdapterVersion
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread
from tests.models import minilm_source

PROMPT = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
LABELS = ["sports", "cooking"]


@pytest.fixture(scope="module")
def http(tuning_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuning_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


def _hf(tuning_store: Path) -> Path:
    return tuning_store / DEFAULT_GENERATION_MODEL / CONVERTED


def _publish(gateway: GatewayThread, name: str, folder: Path, base: str, method: str) -> AdapterVersion:
    """Publish as a finished job does: into the store, then tell serving (on the gateway's loop)."""
    g = gateway.gateway
    version = g.adapter_store.publish(name, folder, base_model=base, method=method)
    asyncio.run_coroutine_threadsafe(g.adapters.on_published(version), gateway.loop).result(timeout=300)
    return version


def _lora(tuning_store: Path, target: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(_hf(tuning_store)), dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    with torch.no_grad():  # big enough to change greedy text
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(str(target), safe_serialization=True)
    return target


def _greedy_reference(tuning_store: Path, adapter: Path | None, tokens: int) -> str:
    folder = _hf(tuning_store)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode(), warnings.catch_warnings():
        # PEFT's prompt tuning drops the position ids generate passes (and says so); positions then
        # count the virtual tokens, as the served engine's do
        warnings.filterwarnings("ignore", "Position ids are not supported", UserWarning)
        out = model.generate(input_ids=ids, max_new_tokens=tokens, do_sample=False, eos_token_id=2)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def _generate(http: httpx.Client, model_id: str, tokens: int = 8) -> httpx.Response:
    body = {"model_id": model_id, "inputs": PROMPT, "parameters": {"max_new_tokens": tokens}}
    return http.post("/api/v1/task/text-generation", json=body)


def test_a_lora_adapter_is_served_by_name_and_version(
    tuning_gateway: GatewayThread, tuning_store: Path, http: httpx.Client, tmp_path: Path
) -> None:
    folder = _lora(tuning_store, tmp_path / "v1", seed=1)
    started = time.perf_counter()
    version = _publish(tuning_gateway, "colours", folder, DEFAULT_GENERATION_MODEL, "lora")
    first = _generate(http, "colours")
    latency = time.perf_counter() - started
    assert first.status_code == 200, first.text
    expected = _greedy_reference(tuning_store, folder, 8)
    assert first.json()["generated_text"] == expected
    assert expected != _greedy_reference(tuning_store, None, 8)  # the adapter changed the answer
    assert _generate(http, f"colours@{version.version}").json()["generated_text"] == expected
    print(f"publish (store + serving) -> first answer: {latency:.2f} s")

    # a second version serves at once under the name; rollback brings the first back at once
    folder2 = _lora(tuning_store, tmp_path / "v2", seed=2)
    _publish(tuning_gateway, "colours", folder2, DEFAULT_GENERATION_MODEL, "lora")
    second = _greedy_reference(tuning_store, folder2, 8)
    assert _generate(http, "colours").json()["generated_text"] == second
    assert _generate(http, "colours@1").json()["generated_text"] == expected
    g = tuning_gateway.gateway
    back = g.adapter_store.rollback("colours", 1)
    asyncio.run_coroutine_threadsafe(g.adapters.on_published(back), tuning_gateway.loop).result(timeout=60)
    assert _generate(http, "colours").json()["generated_text"] == expected


def test_a_prompt_adapter_is_served(
    tuning_gateway: GatewayThread, tuning_store: Path, http: httpx.Client, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(str(_hf(tuning_store)), dtype=torch.float32)
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(0, 0.5)
    model.save_pretrained(str(tmp_path / "prompt"), safe_serialization=True)
    _publish(tuning_gateway, "prompted", tmp_path / "prompt", DEFAULT_GENERATION_MODEL, "prompt_tuning")
    response = _generate(http, "prompted", tokens=6)
    assert response.status_code == 200, response.text
    assert response.json()["generated_text"] == _greedy_reference(tuning_store, tmp_path / "prompt", 6)


def test_a_classifier_adapter_serves_classification(
    tuning_gateway: GatewayThread, http: httpx.Client, tmp_path: Path
) -> None:
    torch.manual_seed(4)
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_source()), num_labels=2)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    folder = tmp_path / "clf"
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "labels.json").write_text('{"labels": ["sports", "cooking"]}')
    _publish(tuning_gateway, "topics", folder, DEFAULT_EMBEDDING_MODEL, "classifier")

    text = "The striker scored twice in the final."
    response = http.post("/api/v1/task/text-classification", json={"model_id": "topics", "inputs": text})
    assert response.status_code == 200, response.text
    served = {r["label"]: r["score"] for r in response.json()["results"]}
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_source()))
    reference = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(str(minilm_source()), num_labels=2), str(folder)
    ).eval()
    with torch.inference_mode():
        probabilities = torch.softmax(reference(**tokenizer(text, return_tensors="pt")).logits[0], -1)
    for index, label in enumerate(LABELS):
        assert served[label] == pytest.approx(float(probabilities[index]), abs=1e-4)
    tokens = http.post("/api/v1/task/tokenization", json={"model_id": "topics", "inputs": "hello world"})
    assert tokens.status_code == 200 and tokens.json()["token_count"] == 2


def test_adapter_names_that_do_not_fit_are_refused(tuning_gateway: GatewayThread, http: httpx.Client) -> None:
    assert _generate(http, "nothing-here").status_code == 404
    assert _generate(http, "nothing@3").status_code == 404
    bad = _generate(http, "x@0")
    assert bad.status_code in (400, 404), bad.text
    # a classifier adapter cannot generate (and a generation adapter cannot classify)
    wrong = _generate(http, "topics")
    assert wrong.status_code in (400, 404), wrong.text
