"""Chat prompts rendered with a real model's own chat template (SmolLM2), and the failures:
no template, a template that refuses the messages, a prompt that fills the context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import InvalidInput
from gateway.generation.chat import ChatMessage, render_chat_prompt
from runtimes.base import ThreadSettings
from runtimes.torch_generation import TorchCausalLM
from tests.generation_models import CHAT_SAY_HI, SMOLLM_SETTINGS, SMOLLM_WORK

LoadRuntime = Callable[..., TorchCausalLM]  # (chat template or None, **options) -> loaded runtime
SAY_HI = [ChatMessage("user", "Say hi")]
STRICT_TEMPLATE = (
    "{% if messages[0]['role'] != 'user' %}{{ raise_exception('the first message must be the user\\'s') }}"
    "{% endif %}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
)


def _folder_like_smollm(target: Path, template: str | None) -> Path:
    """SmolLM2's converted folder (files linked, not copied) with another chat template or none."""
    source = SMOLLM_WORK / "hf-from-gguf"
    target.mkdir()
    for item in source.iterdir():
        if item.name != "chat_template.jinja":
            (target / item.name).symlink_to(item)
    if template is not None:
        (target / "chat_template.jinja").write_text(template)
    return target


@pytest.fixture
def runtime_from(tmp_path: Path) -> Iterator[LoadRuntime]:
    loaded: list[TorchCausalLM] = []

    def load(template: str | None, **options: object) -> TorchCausalLM:
        folder = _folder_like_smollm(tmp_path / f"model-{len(loaded)}", template)
        runtime = TorchCausalLM(
            source=folder,
            work_dir=tmp_path / "work",
            options={**SMOLLM_SETTINGS, **options},
            threads=ThreadSettings(intra_op_threads=1, inter_op_threads=1, model_workers=1),
        )
        runtime.load()
        loaded.append(runtime)
        return runtime

    yield load
    for runtime in loaded:
        runtime.unload()


def test_smollm_renders_its_own_template(smollm: TorchCausalLM) -> None:
    prompt = render_chat_prompt(smollm, "smollm", SAY_HI, max_new_tokens=2048)
    assert prompt.text.startswith("<|im_start|>system\n")  # SmolLM2's template adds its system turn
    assert prompt.text.endswith(CHAT_SAY_HI)
    assert prompt.prompt_tokens == len(smollm.encode(prompt.text))
    assert prompt.max_new_tokens == min(2048, smollm.limits.max_context - prompt.prompt_tokens)
    own_system = render_chat_prompt(smollm, "smollm", [ChatMessage("system", "Be brief."), *SAY_HI], 5)
    assert own_system.text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert own_system.max_new_tokens == 5  # the server's cap, when the context leaves more


def test_a_model_without_a_template_is_invalid_input_naming_that(runtime_from: LoadRuntime) -> None:
    runtime = runtime_from(None)
    with pytest.raises(InvalidInput, match="'bare' has no chat template"):
        render_chat_prompt(runtime, "bare", SAY_HI, 16)


def test_a_template_that_refuses_the_messages_and_a_full_context(runtime_from: LoadRuntime) -> None:
    runtime = runtime_from(STRICT_TEMPLATE, max_context=8)
    with pytest.raises(InvalidInput, match="the first message must be the user's"):
        render_chat_prompt(runtime, "strict", [ChatMessage("assistant", "Hi"), *SAY_HI], 16)
    assert render_chat_prompt(runtime, "strict", SAY_HI, 16).text == "Say hi\n"
    with pytest.raises(InvalidInput, match="fills the model's context of 8 tokens"):
        render_chat_prompt(runtime, "strict", [ChatMessage("user", "word " * 20)], 16)
