"""The whole loop over real sockets: a LoRA job created with the official openai client teaches
SmolLM2 made-up facts; the job's adapter answers them on the Caikit route and the OpenAI route
as soon as the job succeeds (tests/adapters/methods/test_lora.py shows the base does not know them)."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from tests.adapters.tuning_data import FACTS
from tests.conftest import GatewayThread

HYPERPARAMETERS = {"learning_rate": 5e-3, "batch_size": 3, "num_epochs": 15}  # measured: 3/3 from step 8


def _answer(http: httpx.Client, model_id: str, prompt: str) -> str:
    body = {"model_id": model_id, "inputs": prompt, "parameters": {"max_new_tokens": 8}}
    response = http.post("/api/v1/task/text-generation", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["generated_text"])


def test_a_lora_job_teaches_facts_and_its_adapter_answers_them(tuning_gateway: GatewayThread) -> None:
    address = tuning_gateway.gateway.addresses.http
    client = openai.OpenAI(base_url=f"{address}/v1", api_key="dummy", max_retries=0)
    data = "".join(json.dumps(fact) + "\n" for fact in FACTS).encode()
    uploaded = client.files.create(file=("facts.jsonl", io.BytesIO(data)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_GENERATION_MODEL,
        training_file=uploaded.id,
        suffix="facts",
        method={"type": "lora", "lora": {"hyperparameters": HYPERPARAMETERS}},  # type: ignore[typeddict-item]
    )
    give_up = time.monotonic() + 300
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < give_up, "the job did not finish in 300 s"
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    succeeded_at = time.perf_counter()
    assert job.status == "succeeded", job
    assert job.fine_tuned_model == "facts"

    with httpx.Client(base_url=address, timeout=120) as http:
        first = _answer(http, "facts", FACTS[0]["input"])
        print(f"job succeeded (seen by polling) -> first answer: {time.perf_counter() - succeeded_at:.3f} s")
        assert first.startswith(FACTS[0]["output"]), first
        for fact in FACTS[1:]:
            assert _answer(http, "facts", fact["input"]).startswith(fact["output"])
        assert not any(
            _answer(http, DEFAULT_GENERATION_MODEL, fact["input"]).startswith(fact["output"])
            for fact in FACTS
        )
    completion = client.completions.create(
        model="facts", prompt=FACTS[1]["input"], max_tokens=8, temperature=0
    )
    assert completion.choices[0].text.startswith(FACTS[1]["output"])
    events = [event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any(message.startswith("step 15/15") for message in events), events[:5]
