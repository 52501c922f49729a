"""Request bodies of the OpenAI-compatible door (pydantic, strict), as the official client sends them.

Field names and types follow ``openai`` 3.51 (``types/completion_create_params.py``,
``types/chat/completion_create_params.py``, ``types/embedding_create_params.py``). Types are
strict (a string is not a number, 2.0 is not an integer), as OpenAI's own API is.

Fields outside these models are refused, as OpenAI refuses them: a parameter of OpenAI's API that
this server does not implement (audio, functions, reasoning_effort, ...) is a 400
``unsupported_parameter`` naming it; any other unknown field a 400
``unrecognized_request_argument``. Parameters that are modelled but that the engine cannot honour
with a given value (penalties, logit_bias, tools, logprobs, ...) are refused by
``gateway.frontends.http.openai.convert`` with the field as ``param``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.frontends.http.openai.errors import OpenAIParamError

# OpenAI parameters this server knows but does not implement (refused by name, not as "unknown")
UNSUPPORTED_PARAMETERS = frozenset(
    {
        "audio",
        "function_call",
        "functions",
        "metadata",
        "modalities",
        "moderation",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "safety_identifier",
        "service_tier",
        "store",
        "verbosity",
        "web_search_options",
    }
)
_MAX_ERRORS_SHOWN = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool | None = None


class _GenerationRequest(_Strict):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # an end-user id for the caller's own bookkeeping: accepted, not used


class CompletionRequest(_GenerationRequest):
    # token-id prompts (lists of integers) parse, and are refused with a clear message
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None


class ChatMessageIn(_Strict):
    role: str
    # text, or content parts ({"type": "text", "text": ...}; other kinds are refused)
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # refused: no tool calling
    tool_call_id: str | None = None  # of role "tool", which is refused


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessageIn]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None


_FIELDS = frozenset(
    name
    for model in (StreamOptions, CompletionRequest, ChatMessageIn, ChatCompletionRequest, EmbeddingRequest)
    for name in model.model_fields
)
RequestT = TypeVar("RequestT", bound=_Strict)


def parse_request(model: type[RequestT], raw: bytes) -> RequestT:
    """The body as ``model``, or an ``OpenAIParamError`` naming the first field at fault."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise param_error(exc, _FIELDS, UNSUPPORTED_PARAMETERS) from None


def param_error(
    exc: ValidationError, fields: frozenset[str], unsupported: frozenset[str] = frozenset()
) -> OpenAIParamError:
    """A pydantic refusal as OpenAI's 400, naming the field (``fields``: the request's field
    names, so union tags in error locations are dropped; ``unsupported``: known OpenAI
    parameters this server refuses)."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return OpenAIParamError(f"the request body is not valid JSON: {first['msg']}", param=None)
    if first["type"] == "model_type" and not first["loc"]:
        return OpenAIParamError("the request body must be a JSON object", param=None)
    if first["type"] == "extra_forbidden":
        name = _param(first["loc"], fields, keep_last=True)
        if len(first["loc"]) == 1 and name in unsupported:
            return OpenAIParamError(
                f"the parameter {name!r} is not supported by this server",
                param=name,
                code="unsupported_parameter",
            )
        return OpenAIParamError(
            f"Unrecognized request argument supplied: {name}",
            param=name,
            code="unrecognized_request_argument",
        )
    # a union reports one error per alternative: say them once per field
    by_param: dict[str, list[str]] = {}
    for error in errors:
        by_param.setdefault(_param(error["loc"], fields), []).append(error["msg"])
    shown = list(by_param.items())[:_MAX_ERRORS_SHOWN]
    message = "; ".join(f"{param}: {' or '.join(dict.fromkeys(msgs))}" for param, msgs in shown)
    code = "missing_required_parameter" if first["type"] == "missing" else "invalid_type"
    return OpenAIParamError(f"invalid request: {message}", param=shown[0][0] or None, code=code)


def _param(loc: tuple[int | str, ...], fields: frozenset[str], keep_last: bool = False) -> str:
    """``("messages", 0, "content", "str")`` -> ``messages[0].content`` (union tags dropped)."""
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in fields or (keep_last and index == len(loc) - 1):
            out += f".{part}" if out else part
    return out
