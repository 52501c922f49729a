"""Chat prompts: messages rendered with the model's own chat template, protocol-neutral.

A frontend turns its chat request into ``ChatMessage``s; ``render_chat_prompt`` renders them with
the generation runtime's template (``CausalLMRuntime.render_chat``) and says how many new tokens
the model's context leaves after the prompt. The text is then generated like any prompt; the
model ends its turn with its EOS token (SmolLM2: ``<|im_end|>``), where generation stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import InvalidInput
from runtimes.causal_lm import CausalLMRuntime, ChatTemplateError, NoChatTemplate


@dataclass(frozen=True)
class ChatMessage:
    role: str  # as the template knows it: system, user, assistant
    content: str


@dataclass(frozen=True)
class ChatPrompt:
    text: str  # the rendered prompt, ending with the assistant's turn
    prompt_tokens: int
    max_new_tokens: int  # what the context (and the server's cap) leaves for the answer


def render_chat_prompt(
    runtime: CausalLMRuntime, model_id: str, messages: Sequence[ChatMessage], max_new_tokens: int
) -> ChatPrompt:
    """Render and measure the prompt (tokenizes: run it off the event loop). ``max_new_tokens``
    is the server's cap; the answer gets at most that, and no more than the context leaves."""
    if not messages:
        raise InvalidInput("'messages' must hold at least one message")
    try:
        text = runtime.render_chat([{"role": m.role, "content": m.content} for m in messages])
    except NoChatTemplate:
        raise InvalidInput(
            f"model {model_id!r} has no chat template; use the completions API with a plain prompt"
        ) from None
    except ChatTemplateError as exc:
        raise InvalidInput(f"model {model_id!r}: {exc}") from None
    tokens = len(runtime.encode(text))
    room = runtime.limits.max_context - tokens
    if room < 1:
        raise InvalidInput(
            f"the chat prompt has {tokens} tokens: it fills the model's context of "
            f"{runtime.limits.max_context} tokens; shorten the messages"
        )
    return ChatPrompt(text, tokens, min(room, max_new_tokens))
