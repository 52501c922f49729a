"""The scheduler's policies on their own: prompt fitting, admission, stopping and time."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidInput
from gateway.generation.params import GenerationParams
from gateway.generation.policies import (
    PrefillPlan,
    TimeVerdict,
    TokenFacts,
    fit_prompt,
    plan_prefill,
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


def _limits(batch: int = 4, budget: int = 100, chunk: int = 64) -> GenerationLimits:
    return GenerationLimits(
        max_batch_size=batch,
        max_tokens_per_step=budget,
        max_queue=8,
        max_context=512,
        prefill_chunk_tokens=chunk,
    )


def test_admission_respects_slots_and_the_token_budget() -> None:
    short = [(10, False)] * 5
    assert plan_prefill([], short, decoding=0, limits=_limits()) == PrefillPlan((), (10, 10, 10, 10))  # slots
    assert plan_prefill([], short[:2], decoding=3, limits=_limits()).admitted == (10,)
    assert plan_prefill([], short[:1], decoding=4, limits=_limits()).admitted == ()
    # a budget of 97 tokens: 40 + 30 whole, then 27 of the third prompt's 40 (it continues next step)
    plan = plan_prefill(
        [], [(40, False), (30, False), (40, False), (5, False)], decoding=0, limits=_limits(8, 97)
    )
    assert plan.admitted == (40, 30, 27)
    assert plan_prefill([], [], decoding=0, limits=_limits()) == PrefillPlan((), ())


def test_long_prompts_are_chunked_and_continue_first() -> None:
    limits = _limits(batch=128, budget=100, chunk=64)
    # a 300-token prompt next to 10 decoding rows: its first chunk of 64 (the chunk limit)
    assert plan_prefill([], [(300, False)], decoding=10, limits=limits).admitted == (64,)
    # it continues before anyone else joins, from where it stopped, with what the budget leaves
    plan = plan_prefill([(64, 300)], [(20, False), (20, False)], decoding=10, limits=limits)
    assert plan == PrefillPlan((128,), (20, 6))
    # its last chunk ends the prompt
    assert plan_prefill([(256, 300)], [], decoding=1, limits=limits) == PrefillPlan((300,), ())
    # a budget already spent by decoding rows still moves the oldest prompt by one token
    assert plan_prefill([(5, 300)], [(20, False)], decoding=100, limits=limits) == PrefillPlan((6,), ())
    assert plan_prefill([(5, 300), (7, 300)], [], decoding=100, limits=limits) == PrefillPlan((6, None), ())


def test_a_prompt_that_must_stay_whole_waits_for_room_or_runs_alone() -> None:
    limits = _limits(batch=8, budget=100, chunk=64)
    # asking for prompt log-probabilities: not split, even past the chunk limit and the budget
    assert plan_prefill([], [(300, True), (10, False)], decoding=2, limits=limits).admitted == (300,)
    # behind another prompt it waits for a step of its own
    assert plan_prefill([], [(10, False), (300, True)], decoding=2, limits=limits).admitted == (10,)
    assert plan_prefill([], [(10, False), (80, True)], decoding=2, limits=limits).admitted == (10, 80)


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
