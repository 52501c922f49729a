"""PEFT adapters in the torch causal-LM runtime, chosen per row, checked against PEFT's own models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM

from runtimes.causal_lm import GenerationStep, NewSequence
from runtimes.gguf_convert import CONVERTED
from runtimes.onnx_generation import OnnxCausalLM
from runtimes.peft_adapters import AdapterFormatError
from runtimes.torch_generation import TorchCausalLM
from tests.generation_models import SMOLLM_WORK, smollm_runtime, solo_tokens

PROMPT = "The capital of France is"


def _base() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(SMOLLM_WORK / CONVERTED), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def runtime() -> TorchCausalLM:
    return smollm_runtime()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, runtime: TorchCausalLM) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    lora = get_peft_model(
        _base(),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    lora.save_pretrained(str(root / "lora"), safe_serialization=True)
    prompt = get_peft_model(_base(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        prompt.prompt_encoder["default"].embedding.weight.normal_(0, 0.5)
    prompt.save_pretrained(str(root / "prompt"), safe_serialization=True)
    for folder in (root / "lora", root / "prompt"):
        assert {p.suffix for p in folder.iterdir()} <= {".json", ".safetensors", ".md"}
    return {"lora": root / "lora", "prompt": root / "prompt"}


def _peft_last_logits(folder: Path, ids: list[int]) -> torch.Tensor:
    model = PeftModel.from_pretrained(_base(), str(folder)).eval()
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_rows_of_different_adapters_share_a_step_and_match_peft(
    runtime: TorchCausalLM, adapters: dict[str, Path]
) -> None:
    runtime.load_adapter("lora@1", adapters["lora"])
    runtime.load_adapter("prompt@1", adapters["prompt"])
    assert runtime.adapter_keys == {"lora@1", "prompt@1"}
    ids = tuple(runtime.encode(PROMPT))
    out = runtime.run_batch(
        GenerationStep(
            prefill=(
                NewSequence(1, ids),
                NewSequence(2, ids, adapter="lora@1"),
                NewSequence(3, ids, adapter="prompt@1"),
            )
        )
    )
    with torch.inference_mode():
        base = _base()(input_ids=torch.tensor([ids])).logits[0, -1].float()
    lora = _peft_last_logits(adapters["lora"], list(ids))
    prompt = _peft_last_logits(adapters["prompt"], list(ids))
    assert torch.allclose(out.logits[out.row(1)], base, atol=2e-3)
    assert torch.allclose(out.logits[out.row(2)], lora, atol=2e-3)
    assert torch.allclose(out.logits[out.row(3)], prompt, atol=2e-3)
    assert not torch.allclose(lora, base, atol=1e-2) and not torch.allclose(prompt, base, atol=1e-2)

    # decoding continues each row on its own adapter: the next token's logits match PEFT's too
    tokens = {seq: int(out.logits[out.row(seq)].argmax()) for seq in (1, 2, 3)}
    step = runtime.run_batch(GenerationStep(decode=tuple(tokens.items())))
    lora_next = _peft_last_logits(adapters["lora"], [*ids, tokens[2]])
    prompt_next = _peft_last_logits(adapters["prompt"], [*ids, tokens[3]])
    assert torch.allclose(step.logits[step.row(2)], lora_next, atol=2e-3)
    assert torch.allclose(step.logits[step.row(3)], prompt_next, atol=2e-3)
    runtime.run_batch(GenerationStep(release=(1, 2, 3)))

    runtime.unload_adapter("prompt@1")
    runtime.unload_adapter("lora@1")
    assert runtime.adapter_keys == frozenset()


def test_an_unknown_adapter_or_a_bad_folder_is_refused(runtime: TorchCausalLM, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not loaded"):
        runtime.run_batch(GenerationStep(prefill=(NewSequence(7, (1, 2), adapter="nope"),)))
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(AdapterFormatError, match="not servable"):
        runtime.load_adapter("x", tmp_path)


def test_the_onnx_engine_says_it_holds_no_adapters(tmp_path: Path) -> None:
    from runtimes.base import ThreadSettings
    from runtimes.causal_lm import AdapterUnsupported

    engine = OnnxCausalLM(source=tmp_path, work_dir=tmp_path, options={}, threads=ThreadSettings())
    with pytest.raises(AdapterUnsupported, match="torch-causal-lm"):
        engine.load_adapter("x", tmp_path)


def test_mixed_rows_joining_at_different_steps_match_running_alone(
    runtime: TorchCausalLM, adapters: dict[str, Path], tmp_path: Path
) -> None:
    # a second LoRA of another rank and other target layers, so the stacks pad ranks and layers
    torch.manual_seed(5)
    other = get_peft_model(
        _base(),
        LoraConfig(r=2, target_modules=["k_proj", "o_proj"], init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    other.save_pretrained(str(tmp_path / "lora2"), safe_serialization=True)
    runtime.load_adapter("lora@1", adapters["lora"])
    runtime.load_adapter("lora@2", tmp_path / "lora2")
    runtime.load_adapter("prompt@1", adapters["prompt"])
    steps = 8
    plan = [  # (joins at step, prompt, adapter)
        (0, "The capital of France is", "lora@1"),
        (0, "Once upon a time", None),
        (2, "1, 2, 3,", "prompt@1"),
        (3, "The capital of France is", "lora@2"),
        (5, "Water boils at", "lora@1"),
    ]
    ids = [tuple(runtime.encode(text)) for _, text, _ in plan]
    alone = [solo_tokens(runtime, ids[i], steps, plan[i][2]) for i in range(len(plan))]
    tokens: dict[int, list[int]] = {}
    done: set[int] = set()
    for step in range(steps + max(start for start, _, _ in plan)):
        decode = tuple((seq, got[-1]) for seq, got in tokens.items() if len(got) < steps)
        finished = tuple(seq for seq, got in tokens.items() if len(got) == steps and seq not in done)
        prefill = tuple(
            NewSequence(i, ids[i], adapter=plan[i][2])
            for i, (start, _, _) in enumerate(plan)
            if start == step
        )
        if not decode and not prefill and not finished:
            continue
        out = runtime.run_batch(GenerationStep(release=finished, decode=decode, prefill=prefill))
        done.update(finished)
        for seq in out.seq_ids:
            tokens.setdefault(seq, []).append(int(out.logits[out.row(seq)].argmax()))
    runtime.run_batch(GenerationStep(release=tuple(seq for seq in tokens if seq not in done)))
    for i in range(len(plan)):
        assert tokens[i][:steps] == alone[i], plan[i]
    for key in ("lora@1", "lora@2", "prompt@1"):
        runtime.unload_adapter(key)
