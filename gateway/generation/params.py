"""Text-generation parameters: Caikit's (caikit-nlp ``TextGenerationTGIS.run``) with its defaults.

``GenerationParams`` validates itself on construction and raises ``InvalidInput`` saying what
is wrong. Semantics follow caikit-nlp (``toolkit/text_generation``) and TGIS:

- ``max_new_tokens`` 20, ``min_new_tokens`` 0 (EOS and stop sequences are ignored until
  that many tokens exist), ``max_new_tokens >= min_new_tokens``.
- ``truncate_input_tokens`` 0: refuse a prompt over the model's limit; N > 0: keep the LAST N
  prompt tokens (TGIS truncates on the left; the end of a prompt matters most to a decoder).
- ``decoding_method`` "GREEDY" (default) or "SAMPLING". Greedy refuses sampling parameters
  (temperature / top_k / top_p / typical_p other than their neutral values, or a seed), as
  caikit-nlp's ``validate_inf_params`` does.
- ``top_k`` 0 = off; ``top_p`` and ``typical_p`` 1.0 = off (0.0 is read as 1.0);
  ``temperature`` 1.0 (at least 0.05; 0 is read as 1.0); ``repetition_penalty`` 1.0 = off (0.0 is read as 1.0,
  otherwise > 0), applied over the prompt and the generated tokens (HF / TGIS semantics).
- ``stop_sequences``: generation ends when the text contains one; ``include_stop_sequence``
  (TGIS's server default: true) keeps it at the end of the text or cuts it off.
- ``seed`` (uint64): with SAMPLING the same seed gives the same text; unset, a seed is drawn
  and reported back. ``max_time`` seconds (0 < t <= 120) ends generation with TIME_LIMIT.
- ``exponential_decay_length_penalty`` (start_index, decay_factor 1.0..10.0): after
  start_index generated tokens the EOS logit grows by decay_factor ** n (HF semantics).
- Response options: ``preserve_input_text`` (prefix the prompt), ``generated_tokens``,
  ``input_tokens``, ``token_logprobs``, ``token_ranks`` (per-token details in unary results).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from typing import Any

from gateway.errors import InvalidInput

MAX_TIME_S = 120.0
MAX_STOP_SEQUENCES = 16
MAX_STOP_SEQUENCE_CHARS = 240
_UINT64_MAX = 2**64 - 1


class DecodingMethod(enum.Enum):
    GREEDY = "GREEDY"
    SAMPLING = "SAMPLING"


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    truncate_input_tokens: int = 0
    decoding_method: str = "GREEDY"
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    max_time: float | None = None
    exponential_decay_length_penalty: tuple[int, float] | None = None
    stop_sequences: tuple[str, ...] = ()
    include_stop_sequence: bool = True
    seed: int | None = None
    preserve_input_text: bool = False
    input_tokens: bool = False
    generated_tokens: bool = False
    token_logprobs: bool = False
    token_ranks: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        if self.max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.min_new_tokens < 0:
            raise InvalidInput(f"min_new_tokens must not be negative, got {self.min_new_tokens}")
        if self.min_new_tokens > self.max_new_tokens:
            raise InvalidInput(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed "
                f"max_new_tokens ({self.max_new_tokens})"
            )
        if self.truncate_input_tokens < 0:
            raise InvalidInput(
                "truncate_input_tokens must be 0 (no truncation) or positive, "
                f"got {self.truncate_input_tokens}"
            )
        if self.decoding_method not in {m.value for m in DecodingMethod}:
            raise InvalidInput(f"decoding_method must be GREEDY or SAMPLING, got {self.decoding_method!r}")
        if self.top_k < 0:
            raise InvalidInput(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise InvalidInput(f"top_p must be within (0, 1] (0 means off), got {self.top_p}")
        if not 0.0 <= self.typical_p <= 1.0:
            raise InvalidInput(f"typical_p must be within (0, 1] (0 means off), got {self.typical_p}")
        if self.temperature != 0.0 and self.temperature < 0.05:
            raise InvalidInput(
                f"temperature must be at least 0.05 (0 means the default 1.0), got {self.temperature}"
            )
        if self.repetition_penalty < 0.0:
            raise InvalidInput(
                f"repetition_penalty must be positive (0 means off), got {self.repetition_penalty}"
            )
        if self.max_time is not None and not 0.0 < self.max_time <= MAX_TIME_S:
            raise InvalidInput(f"max_time must be within (0, {MAX_TIME_S:g}] seconds, got {self.max_time}")
        if self.seed is not None and not 0 <= self.seed <= _UINT64_MAX:
            raise InvalidInput(f"seed must be an unsigned 64-bit integer, got {self.seed}")
        self._check_stop_sequences()
        self._check_length_penalty()
        if self.decoding_method == DecodingMethod.GREEDY.value:
            self._check_greedy()

    # -- effective values ----------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        return self.decoding_method == DecodingMethod.SAMPLING.value

    @property
    def effective_temperature(self) -> float:
        return self.temperature or 1.0

    @property
    def effective_top_p(self) -> float:
        return self.top_p or 1.0

    @property
    def effective_typical_p(self) -> float:
        return self.typical_p or 1.0

    @property
    def effective_repetition_penalty(self) -> float:
        return self.repetition_penalty or 1.0

    @classmethod
    def from_request(cls, values: dict[str, Any]) -> GenerationParams:
        """Build from a mapping where unset (None) values take their defaults; unknown keys refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInput(f"unknown generation parameter(s): {', '.join(unknown)}")
        given = {name: value for name, value in values.items() if value is not None}
        if isinstance(given.get("stop_sequences"), list):
            given["stop_sequences"] = tuple(given["stop_sequences"])
        penalty = given.get("exponential_decay_length_penalty")
        if isinstance(penalty, dict):
            given["exponential_decay_length_penalty"] = (
                penalty.get("start_index"),
                penalty.get("decay_factor"),
            )
        elif isinstance(penalty, list):
            given["exponential_decay_length_penalty"] = tuple(penalty)
        return cls(**given)

    # -- checks --------------------------------------------------------------------------
    def _check_stop_sequences(self) -> None:
        if len(self.stop_sequences) > MAX_STOP_SEQUENCES:
            raise InvalidInput(
                f"at most {MAX_STOP_SEQUENCES} stop_sequences are allowed, got {len(self.stop_sequences)}"
            )
        for index, stop in enumerate(self.stop_sequences):
            if not stop:
                raise InvalidInput(f"stop_sequences[{index}] is empty")
            if len(stop) > MAX_STOP_SEQUENCE_CHARS:
                raise InvalidInput(
                    f"stop_sequences[{index}] has {len(stop)} characters; at most {MAX_STOP_SEQUENCE_CHARS}"
                )

    def _check_length_penalty(self) -> None:
        penalty = self.exponential_decay_length_penalty
        if penalty is None:
            return
        start, factor = penalty
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise InvalidInput(
                f"exponential_decay_length_penalty.start_index must be a non-negative integer, got {start!r}"
            )
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1.0 <= factor <= 10.0:
            raise InvalidInput(
                f"exponential_decay_length_penalty.decay_factor must be within [1.0, 10.0], got {factor!r}"
            )

    def _check_greedy(self) -> None:
        offending = [
            name
            for name, value, neutral in (
                ("temperature", self.temperature, (0.0, 1.0)),
                ("top_k", self.top_k, (0,)),
                ("top_p", self.top_p, (0.0, 1.0)),
                ("typical_p", self.typical_p, (0.0, 1.0)),
            )
            if value not in neutral
        ]
        if self.seed:
            offending.append("seed")
        if offending:
            raise InvalidInput(f"{', '.join(offending)} only apply to decoding_method SAMPLING, not GREEDY")


_INT_FIELDS = ("max_new_tokens", "min_new_tokens", "truncate_input_tokens", "top_k")
_FLOAT_FIELDS = ("top_p", "typical_p", "temperature", "repetition_penalty")
_BOOL_FIELDS = (
    "include_stop_sequence",
    "preserve_input_text",
    "input_tokens",
    "generated_tokens",
    "token_logprobs",
    "token_ranks",
)


def _check_types(params: GenerationParams) -> None:
    for name in _INT_FIELDS:
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be an integer, got {value!r}")
    for name in _FLOAT_FIELDS:
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number, got {value!r}")
    for name in _BOOL_FIELDS:
        if not isinstance(getattr(params, name), bool):
            raise InvalidInput(f"{name} must be true or false, got {getattr(params, name)!r}")
    if params.max_time is not None and (
        isinstance(params.max_time, bool)
        or not isinstance(params.max_time, int | float)
        or not math.isfinite(params.max_time)
    ):
        raise InvalidInput(f"max_time must be a number of seconds, got {params.max_time!r}")
    if params.seed is not None and (isinstance(params.seed, bool) or not isinstance(params.seed, int)):
        raise InvalidInput(f"seed must be an integer, got {params.seed!r}")
    if not isinstance(params.decoding_method, str):
        raise InvalidInput(f"decoding_method must be a string, got {params.decoding_method!r}")
    if not isinstance(params.stop_sequences, tuple) or not all(
        isinstance(s, str) for s in params.stop_sequences
    ):
        raise InvalidInput("stop_sequences must be a list of strings")
    penalty = params.exponential_decay_length_penalty
    if penalty is not None and (not isinstance(penalty, tuple) or len(penalty) != 2):
        raise InvalidInput("exponential_decay_length_penalty must be (start_index, decay_factor)")
