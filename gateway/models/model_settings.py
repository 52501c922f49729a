"""The settings a model manifest may carry, type-checked when they are written (a deploy, a
management update) and again when the model loads, never when a batch forms.

    check_settings("onnx-encoder", {"batching": {"max_batch_size": 8}, "pinned": True})

Unknown keys and wrong types raise ``InvalidInput`` naming the key, so a typo is an error the
user sees at once instead of a setting silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.batcher import BatchSettings
from gateway.errors import InvalidInput
from runtimes import genai_generation, genai_graph, quantize, remote_v2

Check = Callable[[str, Any], None]


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidInput(f"setting {name!r} must be true or false, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 31:
        raise InvalidInput(f"setting {name!r} must be a positive integer, got {value!r}")


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidInput(f"setting {name!r} must be a non-empty string of at most 256 characters")


def _batching(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise InvalidInput(f"setting {name!r} must be an object")
    BatchSettings.from_mapping(value)


_COMMON: dict[str, Check] = {"pinned": _boolean, "warmup": _boolean}
_ENCODER: dict[str, Check] = {"batching": _batching, "max_tokens": _positive_int}
_CAUSAL_LM: dict[str, Check] = {
    "eos_token": _text,
    "add_bos_token": _boolean,
    "max_batch_size": _positive_int,
    "max_tokens_per_step": _positive_int,
    "max_queue": _positive_int,
    "max_context": _positive_int,
}


def _quantization(runtime: str) -> Check:
    def check(name: str, value: Any) -> None:
        try:
            quantize.check_choice(runtime, value)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    return check


def _cosine(name: str, value: Any) -> None:
    try:
        quantize.check_cosine(name, value, quantize.DEFAULT_MIN_COSINE)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


# quantized variants (runtimes.quantize): int8 encoders with their cosine thresholds, int4 LMs
_ENCODER_QUANTIZED: dict[str, Check] = {
    quantize.SETTING: _quantization("onnx-encoder"),
    quantize.MIN_COSINE_SETTING: _cosine,
    quantize.MIN_ROW_COSINE_SETTING: _cosine,
}
_CAUSAL_LM_QUANTIZED: dict[str, Check] = {quantize.SETTING: _quantization("onnx-causal-lm")}


def _precision(name: str, value: Any) -> None:
    try:
        genai_graph.check_precision(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _spinning(name: str, value: Any) -> None:
    try:
        genai_generation.check_spinning(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _remote_v2(name: str, value: Any) -> None:
    try:
        remote_v2.check_option(name, value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


BY_RUNTIME: dict[str, dict[str, Check]] = {
    "onnx-encoder": {**_ENCODER, **_ENCODER_QUANTIZED},
    "onnx-causal-lm": {**_CAUSAL_LM, **_CAUSAL_LM_QUANTIZED},
    "onnx-genai-causal-lm": {**_CAUSAL_LM, genai_graph.PRECISION_SETTING: _precision, "spinning": _spinning},
    "torch-causal-lm": _CAUSAL_LM,
    "torch-classifier": {**_ENCODER, "adapter": _text},
    "kserve-v2": {**_ENCODER, **dict.fromkeys(remote_v2.OPTIONS, _remote_v2)},
}


def check_settings(runtime: str, settings: Any) -> None:
    """Raise ``InvalidInput`` unless ``settings`` suits ``runtime``."""
    if not isinstance(settings, dict):
        raise InvalidInput("'settings' must be an object")
    known = {**_COMMON, **BY_RUNTIME.get(runtime, {})}
    for name, value in settings.items():
        check = known.get(name) if isinstance(name, str) else None
        if check is None:
            allowed = ", ".join(sorted(known))
            raise InvalidInput(f"unknown setting {name!r} for runtime {runtime!r}; known: {allowed}")
        check(name, value)
