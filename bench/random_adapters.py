"""Random PEFT adapters for the adapter benchmarks, written as PEFT writes them (safetensors).

- ``lora_adapters``: LoRA r=8 on ``q_proj`` / ``v_proj`` of a causal LM, A drawn as PEFT's
  ``init_lora_weights=False`` leaves it (kaiming uniform) and B ~ N(0, 0.05) so that greedy text
  differs from the base's (a zero B, PEFT's default, would change nothing);
- ``prompt_adapters``: prompt tuning with random virtual-token embeddings ~ N(0, 0.5);
- ``classifier_adapter``: LoRA r=8 on ``query`` / ``value`` of a MiniLM sequence classifier plus
  its head (PEFT's SEQ_CLS saves it) and the ``labels.json`` Taskgate's classifier adapters carry.

One PEFT model per kind is built and re-drawn per adapter (seed = its index), so 64 adapters
cost one base load. Folders are cached: a folder that already holds its weights is kept.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

WEIGHTS = "adapter_model.safetensors"
LORA_TARGETS = ["q_proj", "v_proj"]
VIRTUAL_TOKENS = 8


def _missing(root: Path, prefix: str, count: int) -> list[int]:
    return [i for i in range(count) if not (root / f"{prefix}-{i:02d}" / WEIGHTS).is_file()]


def _save(model: Any, target: Path) -> None:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def lora_adapters(base_folder: Path, root: Path, count: int) -> dict[str, Path]:
    """``count`` random LoRA adapters of the causal LM in ``base_folder``: {"lora-NN": folder}."""
    folders = {f"lora-{i:02d}": root / f"lora-{i:02d}" for i in range(count)}
    todo = _missing(root, "lora", count)
    if todo:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
        config = LoraConfig(
            r=8, lora_alpha=32, target_modules=LORA_TARGETS, init_lora_weights=False, task_type="CAUSAL_LM"
        )
        model = get_peft_model(base, config)
        for i in todo:
            torch.manual_seed(1000 + i)
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_A" in name:
                        torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5))
                    elif "lora_B" in name:
                        param.normal_(0, 0.05)
            _save(model, folders[f"lora-{i:02d}"])
    return folders


def prompt_adapters(base_folder: Path, root: Path, count: int) -> dict[str, Path]:
    """``count`` random prompt-tuning adapters: {"prompt-NN": folder}."""
    folders = {f"prompt-{i:02d}": root / f"prompt-{i:02d}" for i in range(count)}
    todo = _missing(root, "prompt", count)
    if todo:
        import torch
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
        config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=VIRTUAL_TOKENS)
        model = get_peft_model(base, config)
        for i in todo:
            torch.manual_seed(2000 + i)
            with torch.no_grad():
                model.prompt_encoder["default"].embedding.weight.normal_(0, 0.5)
            _save(model, folders[f"prompt-{i:02d}"])
    return folders


def classifier_adapter(base_folder: Path, target: Path, labels: tuple[str, ...]) -> Path:
    """A random LoRA classifier adapter of the MiniLM classifier in ``base_folder``."""
    if (target / WEIGHTS).is_file():
        return target
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(7)
    base = AutoModelForSequenceClassification.from_pretrained(str(base_folder), num_labels=len(labels))
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=8, target_modules=["query", "value"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    _save(model, target)
    (target / "labels.json").write_text(json.dumps({"labels": list(labels)}))
    return target


def classifier_base(minilm: Path, target: Path, labels: tuple[str, ...]) -> Path:
    """MiniLM with a seeded random two-label head and MiniLM's tokenizer (the test store's
    ``minilm-classifier`` recipe), as a Hugging Face folder the ONNX encoder exports."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, staging / name)
    staging.rename(target)
    return target
