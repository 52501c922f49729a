"""OpenAI requests -> the core's inputs, and the core's results -> OpenAI's JSON. Pure functions.

Sampling: ``temperature`` 0 is greedy decoding; otherwise (OpenAI's default is 1) tokens are
sampled with ``temperature`` and ``top_p``. ``seed`` makes sampling reproducible; choice ``i`` of
``n`` samples with ``seed + i`` so the choices differ and each is reproducible (a negative seed
is taken modulo 2**64). ``stop`` sequences end the text and are cut from it, as OpenAI does.
Parameters the engine cannot honour are refused with a 400 naming them, never ignored.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.frontends.http.common import Json
from gateway.frontends.http.openai.errors import OpenAIParamError, unsupported
from gateway.frontends.http.openai.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    EmbeddingRequest,
)
from gateway.generation.chat import ChatMessage
from gateway.generation.params import MAX_STOP_SEQUENCE_CHARS, MAX_STOP_SEQUENCES, GenerationParams
from gateway.generation.results import FinishReason, GenerationOutput
from gateway.results import EmbeddingOutput

MAX_CHOICES = 16  # generations per request (prompts x n): they share one model's running batch
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
MIN_TEMPERATURE = 0.05  # the engine's smallest temperature other than 0 (greedy)
OWNER = "taskgate"
_SEED_RANGE = (-(2**63), 2**64 - 1)
_CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


# -- requests -----------------------------------------------------------------------------------
def check_generation(body: CompletionRequest | ChatCompletionRequest) -> None:
    """Refuse what the engine cannot honour; check ranges OpenAI documents."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise unsupported(name, f"a non-zero {name}")
    if body.logit_bias:
        raise unsupported("logit_bias", "logit_bias")
    if body.n is not None and not 1 <= body.n <= MAX_CHOICES:
        raise OpenAIParamError(f"n must be within [1, {MAX_CHOICES}], got {body.n}", param="n")
    if body.temperature is not None and not (
        body.temperature == 0 or MIN_TEMPERATURE <= body.temperature <= 2
    ):
        raise OpenAIParamError(
            f"temperature must be 0 (greedy) or within [{MIN_TEMPERATURE}, 2], got {body.temperature}",
            param="temperature",
        )
    if body.top_p is not None and not 0 < body.top_p <= 1:
        raise OpenAIParamError(f"top_p must be within (0, 1], got {body.top_p}", param="top_p")
    if body.seed is not None and not _SEED_RANGE[0] <= body.seed <= _SEED_RANGE[1]:
        raise OpenAIParamError("seed must be a 64-bit integer", param="seed")
    if body.stream_options is not None and not body.stream:
        raise OpenAIParamError("stream_options is only allowed with stream: true", param="stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name, None)
        if value is not None and value < 1:
            raise OpenAIParamError(f"{name} must be at least 1, got {value}", param=name)
    stops = stop_sequences(body.stop)
    if len(stops) > MAX_STOP_SEQUENCES or any(not s or len(s) > MAX_STOP_SEQUENCE_CHARS for s in stops):
        raise OpenAIParamError(
            f"stop takes at most {MAX_STOP_SEQUENCES} non-empty strings of at most "
            f"{MAX_STOP_SEQUENCE_CHARS} characters",
            param="stop",
        )


def check_completion(body: CompletionRequest) -> list[str]:
    """The prompts of a completion request (one or many texts), after its own checks."""
    check_generation(body)
    if body.logprobs is not None:
        raise unsupported("logprobs", "logprobs")
    if body.suffix:
        raise unsupported("suffix", "suffix (insertion)")
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise unsupported("best_of", "best_of other than n")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise OpenAIParamError("prompt must be a string or a non-empty list of strings", param="prompt")
    texts = [p for p in prompts if isinstance(p, str)]
    if any(not text.strip() for text in texts):
        raise OpenAIParamError("prompt must not be empty (nor only whitespace)", param="prompt")
    if len(texts) * (body.n or 1) > MAX_CHOICES:
        raise OpenAIParamError(
            f"{len(texts)} prompts x n={body.n or 1} is more than {MAX_CHOICES} completions", param="n"
        )
    return texts


def check_chat(body: ChatCompletionRequest) -> list[ChatMessage]:
    """The messages of a chat request in the template's roles, after its own checks."""
    check_generation(body)
    if body.logprobs:
        raise unsupported("logprobs", "logprobs")
    if body.top_logprobs is not None:
        raise unsupported("top_logprobs", "top_logprobs")
    if body.tools:
        raise unsupported("tools", "tool calling")
    if body.tool_choice not in (None, "none"):
        raise unsupported("tool_choice", "tool_choice other than 'none'")
    kind = (body.response_format or {}).get("type", "text")
    if body.response_format is not None and (kind != "text" or set(body.response_format) != {"type"}):
        raise unsupported("response_format", f"response_format {kind!r} (only 'text')")
    if not body.messages:
        raise OpenAIParamError("messages must hold at least one message", param="messages")
    return [_chat_message(i, m) for i, m in enumerate(body.messages)]


def _chat_message(index: int, message: ChatMessageIn) -> ChatMessage:
    where = f"messages[{index}]"
    role = _CHAT_ROLES.get(message.role)
    if role is None:
        raise OpenAIParamError(
            f"{where}.role {message.role!r} is not supported (only system, developer, user, assistant)",
            param=f"{where}.role",
            code="unsupported_value",
        )
    if message.name is not None:
        raise unsupported(f"{where}.name", "a participant name")
    if message.tool_calls:
        raise unsupported(f"{where}.tool_calls", "tool calling")
    content = message.content
    if content is None:
        raise OpenAIParamError(f"{where}.content is required", param=f"{where}.content")
    if isinstance(content, str):
        return ChatMessage(role, content)
    texts = []
    for j, part in enumerate(content):
        if (
            part.get("type") != "text"
            or not isinstance(part.get("text"), str)
            or set(part) != {"type", "text"}
        ):
            raise unsupported(f"{where}.content[{j}]", "content other than text parts")
        texts.append(part["text"])
    return ChatMessage(role, "\n".join(texts))


def stop_sequences(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def generation_params(
    body: CompletionRequest | ChatCompletionRequest, max_tokens: int, choice: int, *, echo: bool = False
) -> GenerationParams:
    temperature = 1.0 if body.temperature is None else body.temperature
    common: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "stop_sequences": stop_sequences(body.stop),
        "include_stop_sequence": False,
        "preserve_input_text": echo,
    }
    if temperature == 0:
        return GenerationParams(decoding_method="GREEDY", **common)  # top_p and seed cannot matter
    seed = None if body.seed is None else (body.seed + choice) % 2**64
    return GenerationParams(
        decoding_method="SAMPLING",
        temperature=temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=seed,
        **common,
    )


def embedding_inputs(body: EmbeddingRequest) -> list[str]:
    if body.dimensions is not None and body.dimensions < 1:
        raise OpenAIParamError(f"dimensions must be at least 1, got {body.dimensions}", param="dimensions")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or not all(isinstance(i, str) for i in inputs):
        raise OpenAIParamError(
            "input must be a string or a non-empty list of strings (token-id inputs are not supported)",
            param="input",
        )
    texts = [i for i in inputs if isinstance(i, str)]
    if any(not text.strip() for text in texts):
        raise OpenAIParamError("input must not hold an empty string", param="input")
    return texts


# -- results ------------------------------------------------------------------------------------
def finish_reason(reason: FinishReason) -> str:
    """EOS and stop sequences are "stop"; the token limit, the context and the deadline "length"."""
    if reason in (FinishReason.MAX_TOKENS, FinishReason.TOKEN_LIMIT, FinishReason.TIME_LIMIT):
        return "length"
    return "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> Json:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(rid: str, created: int, model: str, outputs: Sequence[GenerationOutput], n: int) -> Json:
    """Choices in order: prompt i's n choices have indexes i*n .. i*n+n-1."""
    prompt_tokens = sum(out.input_token_count for out in outputs[::n])
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "text": out.generated_text,
                "logprobs": None,
                "finish_reason": finish_reason(out.finish_reason),
            }
            for i, out in enumerate(outputs)
        ],
        "usage": usage(prompt_tokens, sum(out.generated_tokens for out in outputs)),
    }


def chat_completion(rid: str, created: int, model: str, outputs: Sequence[GenerationOutput]) -> Json:
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": out.generated_text},
                "logprobs": None,
                "finish_reason": finish_reason(out.finish_reason),
            }
            for i, out in enumerate(outputs)
        ],
        "usage": usage(outputs[0].input_token_count, sum(out.generated_tokens for out in outputs)),
    }


def embeddings(out: EmbeddingOutput, model: str, encoding: str | None, dimensions: int | None) -> Json:
    width = int(out.vectors[0].shape[0])
    if dimensions is not None and dimensions != width:
        raise OpenAIParamError(
            f"model {model!r} makes {width}-dimensional embeddings; it cannot shorten them to {dimensions}",
            param="dimensions",
            code="unsupported_value",
        )
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(v, encoding)}
            for i, v in enumerate(out.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": out.input_token_count, "total_tokens": out.input_token_count},
    }


def _vector(values: np.ndarray, encoding: str | None) -> list[float] | str:
    if encoding == "base64":  # little-endian float32 bytes, as OpenAI sends them
        return base64.b64encode(values.astype("<f4").tobytes()).decode("ascii")
    return values.astype(np.float32).tolist()


def model_card(model_id: str, created: int) -> Json:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}
