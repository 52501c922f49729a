"""LoRA on SmolLM2: the loss falls, the adapter is safetensors + JSON only, and the base model with
the adapter (loaded by PEFT) answers made-up facts it could not know before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.tuning import Progress, TuningSpec, run_tuning
from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from tests.adapters.tuning_data import FACTS, smollm_base

# measured: greedy decoding reproduces all three facts from step 8 on (seeds 42, 7, 1)
FACT_STEPS = 15
FACT_LEARNING_RATE = 5e-3


def _greedy(model: Any, tokenizer: Any, prompt: str) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def test_lora_teaches_smollm2_made_up_facts(store: Path, tmp_path: Path) -> None:
    base = smollm_base(store)
    seen: list[Progress] = []
    output = tmp_path / "facts"
    result = run_tuning(
        TuningSpec(
            method="lora",
            base_model_path=base.folder,
            base_model=base.model_id,
            train=FACTS,
            validation=FACTS,
            output_dir=output,
            hyperparameters={"learning_rate": FACT_LEARNING_RATE, "batch_size": 3, "num_epochs": FACT_STEPS},
        ),
        on_progress=seen.append,
    )
    assert [p.step for p in seen] == list(range(1, FACT_STEPS + 1))
    assert {p.total_steps for p in seen} == {FACT_STEPS} and seen[-1].epoch == FACT_STEPS
    assert seen[0].learning_rate == FACT_LEARNING_RATE and seen[-1].eta_s == 0
    assert seen[-1].loss < seen[0].loss / 10, [p.loss for p in seen]
    assert result.metrics["steps"] == FACT_STEPS and result.metrics["val_loss"] < 0.2
    assert result.base_model == DEFAULT_GENERATION_MODEL

    assert sorted(p.name for p in output.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tuning.json",
    ]
    assert not list(tmp_path.glob(".facts*"))  # no staging folder left beside it
    about = json.loads((output / "tuning.json").read_text())
    assert about["method"] == "lora" and about["base_model"] == DEFAULT_GENERATION_MODEL
    assert about["verbalizer"] == "{{input}}" and about["eos_token"] == "<|im_end|>"
    assert about["hyperparameters"]["target_modules"] == ["q_proj", "v_proj"]
    assert about["metrics"]["val_loss"] == result.metrics["val_loss"]

    tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
    model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32).eval()
    prompt = tokenizer(FACTS[0]["input"], return_tensors="pt")
    with torch.inference_mode():
        before = model(**prompt).logits
    answers_before = [_greedy(model, tokenizer, fact["input"]) for fact in FACTS]
    tuned = PeftModel.from_pretrained(model, str(output)).eval()
    with torch.inference_mode():
        after = tuned(**prompt).logits
    assert not torch.allclose(before, after, atol=1e-3)
    answers = [_greedy(tuned, tokenizer, fact["input"]) for fact in FACTS]
    assert answers == [fact["output"] for fact in FACTS], answers
    assert answers_before != answers
