"""The scheduler's policies on their own: prompt fitting, admission, stopping and time."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidInput
from gateway.generation.params import GenerationParams
from gateway.generation.policies import (
    TimeVerdict,
    TokenFacts,
    admit,
    fit_prompt,
    resolve_seed,
    stop_reason,
    time_verdict,
)
from gateway.generation.results import FinishReason
from runtimes.causal_lm import GenerationLimits


def test_fit_prompt_refuses_or_keeps_the_end() -> None:
    assert fit_prompt([1, 2, 3], 0, max_context=8) == (1, 2, 3)
    with pytest.raises(InvalidInput, match="has 8 tokens; the model's context holds 8"):
        fit_prompt(list(range(8)), 0, max_context=8)
    assert fit_prompt(list(range(10)), 3, max_context=8) == (7, 8, 9)
    assert fit_prompt(list(range(10)), 50, max_context=8) == tuple(range(3, 10))  # room for one token
    with pytest.raises(InvalidInput, match="no tokens"):
        fit_prompt([], 0, max_context=8)


def test_admission_respects_slots_and_the_token_budget() -> None:
    limits = GenerationLimits(max_batch_size=4, max_tokens_per_step=100, max_queue=8, max_context=512)
    assert admit([10, 10, 10, 10, 10], running=0, limits=limits) == 4  # slots
    assert admit([10, 10], running=3, limits=limits) == 1
    assert admit([10], running=4, limits=limits) == 0
    assert admit([40, 10, 30], running=0, limits=limits) == 2  # a third row would pad to 3 x 40
    assert admit([300], running=0, limits=limits) == 1  # alone it may exceed the budget
    assert admit([300], running=1, limits=limits) == 0  # ... but not next to running sequences
    assert admit([], running=0, limits=limits) == 0


def test_stop_reasons_in_order() -> None:
    def reason(**facts: object) -> FinishReason | None:
        base = {"is_eos": False, "generated": 3, "stopped_by_sequence": False, "total_tokens": 10}
        return stop_reason(TokenFacts(**{**base, **facts}), max_new_tokens=5, max_context=20)  # type: ignore[arg-type]

    assert reason() is None
    assert reason(is_eos=True, generated=5) is FinishReason.EOS_TOKEN
    assert reason(stopped_by_sequence=True, generated=5) is FinishReason.STOP_SEQUENCE
    assert reason(generated=5) is FinishReason.MAX_TOKENS
    assert reason(total_tokens=20) is FinishReason.TOKEN_LIMIT


def test_time_verdicts() -> None:
    assert time_verdict(10.0, deadline=None, time_limit=None, generated=0) is TimeVerdict.IN_TIME
    assert time_verdict(10.0, deadline=11.0, time_limit=10.5, generated=0) is TimeVerdict.IN_TIME
    assert time_verdict(10.0, deadline=9.0, time_limit=None, generated=0) is TimeVerdict.DEADLINE_EXCEEDED
    assert time_verdict(10.0, deadline=9.0, time_limit=None, generated=2) is TimeVerdict.TIME_LIMIT
    assert time_verdict(10.0, deadline=None, time_limit=9.0, generated=0) is TimeVerdict.TIME_LIMIT


def test_seeds_greedy_none_sampling_given_or_drawn() -> None:
    assert resolve_seed(GenerationParams()) is None
    assert resolve_seed(GenerationParams(decoding_method="SAMPLING", seed=42)) == 42
    drawn = {resolve_seed(GenerationParams(decoding_method="SAMPLING")) for _ in range(5)}
    assert len(drawn) > 1 and all(isinstance(seed, int) and seed >= 0 for seed in drawn)
