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


def admit(prompt_lengths: Sequence[int], running: int, limits: GenerationLimits) -> int:
    """How many waiting requests (from the head, in order) join the batch this iteration.

    A request joins while a slot is free and the step's token budget holds: every running
    sequence costs one token, a prefill batch costs rows x its longest prompt (it is padded).
    A lone request whose prompt alone exceeds the budget still joins an idle batch (it fits the
    context), so nothing waits forever.
    """
    free = limits.max_batch_size - running
    budget = limits.max_tokens_per_step - running
    count, longest = 0, 0
    for length in prompt_lengths[: max(free, 0)]:
        longest = max(longest, length)
        if (count + 1) * longest > budget and (count > 0 or running > 0):
            break
        count += 1
    return count


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
