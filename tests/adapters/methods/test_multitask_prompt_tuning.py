"""Multi-task prompt tuning with two tasks: it runs, saves, and reloads for inference with a task id."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.tuning import TuningSpec, run_tuning
from tests.adapters.tuning_data import FACTS, smollm_base

RECORDS = [
    {**FACTS[0], "task": "geography"},
    {**FACTS[1], "task": "history"},
    {**FACTS[2], "task": "geography"},
    {"input": "Who wrote the Zorbian anthem?", "output": " Mira Vell.", "task": "history"},
]


def test_two_tasks_run_save_and_reload_with_task_ids(store: Path, tmp_path: Path) -> None:
    base = smollm_base(store)
    output = tmp_path / "mpt"
    losses: list[float] = []
    result = run_tuning(
        TuningSpec(
            method="multitask_prompt_tuning",
            base_model_path=base.folder,
            base_model=base.model_id,
            train=RECORDS,
            output_dir=output,
            hyperparameters={
                "num_virtual_tokens": 6,
                "prompt_tuning_init_method": "TEXT",
                "prompt_tuning_init_text": "Answer the question:",
                "learning_rate": 0.03,
                "batch_size": 4,
                "num_epochs": 3,
                "validation_fraction": 0.25,
            },
        ),
        on_progress=lambda p: losses.append(p.loss),
    )
    assert len(losses) == 3 and result.metrics["steps"] == 3 and "val_loss" in result.metrics
    about = json.loads((output / "tuning.json").read_text())
    assert about["tasks"] == {"geography": 0, "history": 1} and about["num_tasks"] == 2
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["peft_type"] == "MULTITASK_PROMPT_TUNING" and config["num_tasks"] == 2
    assert sorted(p.name for p in output.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tuning.json",
    ]

    tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
    model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32)
    tuned = PeftModel.from_pretrained(model, str(output)).eval()
    inputs = tokenizer(RECORDS[0]["input"], return_tensors="pt")
    with torch.inference_mode():
        geography = tuned(**inputs, task_ids=torch.tensor([about["tasks"]["geography"]])).logits
        history = tuned(**inputs, task_ids=torch.tensor([about["tasks"]["history"]])).logits
        with warnings.catch_warnings():  # PEFT's note that prompt learning ignores generate's position ids
            warnings.filterwarnings("ignore", "Position ids are not supported", UserWarning)
            generated = tuned.generate(
                **inputs, task_ids=torch.tensor([1]), max_new_tokens=3, do_sample=False, pad_token_id=2
            )
        with pytest.raises(ValueError, match="task_ids cannot be None"):
            tuned(**inputs)
    assert geography.shape == history.shape and not torch.allclose(geography, history)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
