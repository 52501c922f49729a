"""The scheduler's policies, each a small pure function: prompt fitting, admission, stopping, time.

Keeping them apart from the thread that applies them makes each one readable and testable
without a model.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import InvalidInput
from gateway.generation.params import GenerationParams
from gateway.generation.results import FinishReason
from runtimes.causal_lm import GenerationLimits


def resolve_seed(params: GenerationParams) -> int | None:
    """The seed a request samples with: its own, else a fresh one (reported back); greedy: None."""
    if not params.sampling:
        return None
    return params.seed if params.seed is not None else secrets.randbits(32)


def fit_prompt(token_ids: Sequence[int], truncate_input_tokens: int, max_context: int) -> tuple[int, ...]:
    """The prompt the model will see: at least one generated token must still fit the context.
    ``truncate_input_tokens`` 0 refuses a longer prompt; N > 0 keeps its last N tokens."""
    if not token_ids:
        raise InvalidInput("the text has no tokens to generate from")
    room = max_context - 1
    if truncate_input_tokens:
        keep = min(truncate_input_tokens, room)
        return tuple(token_ids[-keep:])
    if len(token_ids) > room:
        raise InvalidInput(
            f"the text has {len(token_ids)} tokens; the model's context holds {max_context} "
            f"(at most {room} for the prompt); shorten it or set truncate_input_tokens"
        )
    return tuple(token_ids)


@dataclass(frozen=True)
class PrefillPlan:
    """The prompt chunks one iteration prefills, each the end (exclusive) of the chunk's tokens."""

    continued: tuple[int | None, ...]  # per sequence part-way through its prompt; None: not this step
    admitted: tuple[int, ...]  # per waiting request admitted (from the head, in order)


def plan_prefill(
    filling: Sequence[tuple[int, int]],
    waiting: Sequence[tuple[int, bool]],
    decoding: int,
    limits: GenerationLimits,
) -> PrefillPlan:
    """Which prompt tokens this iteration prefills (chunked prefill, first come first served).

    ``filling``: (tokens prefilled, prompt length) of the admitted sequences part-way through
    their prompt, oldest first; ``waiting``: (prompt length, whole) of the waiting requests in
    order, ``whole`` when the prompt cannot be split (its prompt log-probabilities are asked
    for); ``decoding``: sequences decoding this iteration.

    An iteration computes at most ``max_tokens_per_step`` tokens: one per decoding sequence, the
    rest prompt tokens, at most ``prefill_chunk_tokens`` of any one prompt. Sequences part-way
    through their prompt continue first, then waiting requests join while a slot is free; the
    one that does not fit whole prefills what fits and continues next iteration. So a burst of
    prompts, or one long prompt, never holds the running sequences for more than one budget's
    worth of prompt tokens per token they generate, and every waiting prompt advances as soon as
    the budget allows. The first chunk of an iteration gets at least one token (nothing waits
    forever); a whole prompt longer than the budget runs as the iteration's only prefill.
    """
    budget = limits.max_tokens_per_step - decoding
    slots = limits.max_batch_size - decoding - len(filling)
    planned = 0  # prompt tokens planned so far

    def take(remaining: int) -> int:
        return min(remaining, limits.prefill_chunk_tokens, max(budget - planned, 0 if planned else 1))

    continued: list[int | None] = []
    for done, length in filling:
        chunk = take(length - done)
        continued.append(done + chunk if chunk > 0 else None)
        planned += chunk
    admitted: list[int] = []
    for length, whole in waiting[: max(slots, 0)]:
        if whole:
            if planned and planned + length > budget:
                break
            chunk = length
        else:
            chunk = take(length)
            if chunk <= 0:
                break
        admitted.append(chunk)
        planned += chunk
    return PrefillPlan(tuple(continued), tuple(admitted))


@dataclass(frozen=True)
class TokenFacts:
    """What the stopping policy needs to know after a sequence got its newest token."""

    is_eos: bool
    generated: int  # tokens generated so far, the newest included
    stopped_by_sequence: bool
    total_tokens: int  # prompt + generated


def stop_reason(facts: TokenFacts, max_new_tokens: int, max_context: int) -> FinishReason | None:
    if facts.is_eos:
        return FinishReason.EOS_TOKEN
    if facts.stopped_by_sequence:
        return FinishReason.STOP_SEQUENCE
    if facts.generated >= max_new_tokens:
        return FinishReason.MAX_TOKENS
    if facts.total_tokens >= max_context:
        return FinishReason.TOKEN_LIMIT
    return None


class TimeVerdict(enum.Enum):
    IN_TIME = "in_time"
    TIME_LIMIT = "time_limit"  # finish with what was generated
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the client's deadline passed before any token


def time_verdict(now: float, deadline: float | None, time_limit: float | None, generated: int) -> TimeVerdict:
    """``deadline`` is the client's (gRPC deadline, HTTP timeout header); ``time_limit`` comes
    from max_time. Both are time.monotonic() seconds."""
    if deadline is not None and now >= deadline:
        return TimeVerdict.TIME_LIMIT if generated else TimeVerdict.DEADLINE_EXCEEDED
    if time_limit is not None and now >= time_limit:
        return TimeVerdict.TIME_LIMIT
    return TimeVerdict.IN_TIME
