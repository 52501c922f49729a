"""GenerationParams: Caikit's defaults, and a clear INVALID_ARGUMENT for each bad value."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ErrorKind, InvalidInput
from gateway.generation.params import GenerationParams


def test_defaults_are_caikits() -> None:
    params = GenerationParams()
    assert (params.max_new_tokens, params.min_new_tokens, params.truncate_input_tokens) == (20, 0, 0)
    assert params.decoding_method == "GREEDY" and not params.sampling
    assert (params.top_k, params.top_p, params.typical_p, params.temperature) == (0, 1.0, 1.0, 1.0)
    assert params.repetition_penalty == 1.0 and params.seed is None and params.max_time is None
    assert params.include_stop_sequence is True and params.preserve_input_text is False


def test_zero_means_off_for_the_probability_knobs() -> None:
    params = GenerationParams(decoding_method="SAMPLING", top_p=0.0, typical_p=0.0, repetition_penalty=0.0)
    assert (params.effective_top_p, params.effective_typical_p, params.effective_repetition_penalty) == (
        1,
        1,
        1,
    )
    assert GenerationParams(temperature=0.0).effective_temperature == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"min_new_tokens": -1}, "min_new_tokens must not be negative"),
        (
            {"max_new_tokens": 5, "min_new_tokens": 6},
            r"min_new_tokens \(6\) must not exceed max_new_tokens \(5\)",
        ),
        ({"truncate_input_tokens": -3}, "truncate_input_tokens must be 0"),
        ({"decoding_method": "BEAM"}, "decoding_method must be GREEDY or SAMPLING, got 'BEAM'"),
        ({"decoding_method": "SAMPLING", "top_k": -1}, "top_k must be 0"),
        ({"decoding_method": "SAMPLING", "top_p": 1.5}, "top_p must be within"),
        ({"decoding_method": "SAMPLING", "typical_p": -0.1}, "typical_p must be within"),
        ({"decoding_method": "SAMPLING", "temperature": 0.01}, "temperature must be at least 0.05"),
        ({"repetition_penalty": -1.0}, "repetition_penalty must be positive"),
        ({"max_time": 0.0}, "max_time must be within"),
        ({"max_time": 500}, "max_time must be within"),
        ({"decoding_method": "SAMPLING", "seed": -1}, "seed must be an unsigned 64-bit integer"),
        ({"decoding_method": "SAMPLING", "seed": 2**64}, "seed must be an unsigned 64-bit integer"),
        ({"stop_sequences": ("",)}, r"stop_sequences\[0\] is empty"),
        ({"stop_sequences": ("x" * 241,)}, "at most 240"),
        ({"stop_sequences": tuple(str(i) for i in range(17))}, "at most 16 stop_sequences"),
        ({"exponential_decay_length_penalty": (2, 0.5)}, "decay_factor must be within"),
        ({"exponential_decay_length_penalty": (-1, 1.5)}, "start_index must be a non-negative integer"),
        ({"temperature": 0.7}, "temperature only apply to decoding_method SAMPLING"),
        ({"top_k": 5, "top_p": 0.9, "seed": 3}, "top_k, top_p, seed only apply to decoding_method SAMPLING"),
        ({"max_new_tokens": "20"}, "max_new_tokens must be an integer"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer"),
        ({"top_p": float("nan")}, "top_p must be a finite number"),
        ({"include_stop_sequence": "yes"}, "include_stop_sequence must be true or false"),
        ({"stop_sequences": ["a"]}, "stop_sequences must be a list of strings"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        GenerationParams(**values)
    assert caught.value.kind is ErrorKind.INVALID_INPUT


def test_from_request_takes_wire_shapes_and_refuses_unknown_keys() -> None:
    params = GenerationParams.from_request(
        {
            "max_new_tokens": 7,
            "top_k": None,  # unset optional fields keep their defaults
            "stop_sequences": ["\n\n"],
            "exponential_decay_length_penalty": {"start_index": 4, "decay_factor": 1.5},
        }
    )
    assert params.max_new_tokens == 7 and params.top_k == 0
    assert params.stop_sequences == ("\n\n",)
    assert params.exponential_decay_length_penalty == (4, 1.5)
    with pytest.raises(InvalidInput, match="unknown generation parameter"):
        GenerationParams.from_request({"max_tokens": 3})
