"""Prompt tuning on SmolLM2: the loss falls over a few steps and PEFT loads the virtual tokens back."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.tuning import Progress, TuningSpec, run_tuning
from tests.adapters.tuning_data import FACTS, smollm_base


def test_prompt_tuning_loss_falls_and_the_prompt_reloads(store: Path, tmp_path: Path) -> None:
    base = smollm_base(store)
    seen: list[Progress] = []
    output = tmp_path / "prompt"
    hyperparameters = {
        "num_virtual_tokens": 8,
        "prompt_tuning_init_method": "TEXT",  # PEFT's RANDOM init is N(0, 1): far from SmolLM2's embeddings
        "prompt_tuning_init_text": "Answer with the made-up fact:",
        "learning_rate": 0.03,
        "batch_size": 3,
        "num_epochs": 5,
    }
    result = run_tuning(
        TuningSpec(
            method="prompt_tuning",
            base_model_path=base.folder,
            base_model=base.model_id,
            train=FACTS,
            validation=FACTS,
            output_dir=output,
            hyperparameters=hyperparameters,
        ),
        on_progress=seen.append,
    )
    losses = [p.loss for p in seen]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.5, losses
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert result.metrics["val_loss"] < losses[0]
    assert sorted(p.name for p in output.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tuning.json",
    ]
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 8
    # the base model by its id, not the trainer's folder paths
    assert config["tokenizer_name_or_path"] == config["base_model_name_or_path"] == base.model_id

    tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
    model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32).eval()
    inputs = tokenizer(FACTS[0]["input"] + FACTS[0]["output"], return_tensors="pt")
    labels = inputs["input_ids"].clone()
    with torch.inference_mode():
        base_loss = float(model(**inputs, labels=labels).loss)
        tuned = PeftModel.from_pretrained(model, str(output)).eval()
        logits = tuned(**inputs).logits
        tuned_loss = float(tuned(**inputs, labels=labels).loss)
    assert logits.shape[1] == inputs["input_ids"].shape[1] + 8  # the virtual tokens come first
    assert tuned_loss != base_loss
