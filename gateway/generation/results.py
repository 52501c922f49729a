"""Protocol-neutral generation results, shaped like Caikit's messages (caikit_data_model.nlp).

``GenerationOutput`` fills ``GeneratedTextResult``; ``StreamChunk`` fills
``GeneratedTextStreamResult`` (with ``TokenStreamDetails``); ``GeneratedToken`` fills
``GeneratedToken`` {text, logprob, rank}. ``FinishReason`` has the enum's names and numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FinishReason(enum.Enum):
    NOT_FINISHED = 0
    MAX_TOKENS = 1
    EOS_TOKEN = 2
    CANCELLED = 3
    TIME_LIMIT = 4
    STOP_SEQUENCE = 5
    TOKEN_LIMIT = 6
    ERROR = 7


@dataclass(frozen=True)
class GeneratedToken:
    text: str  # the vocabulary entry, as the tokenizer spells it (e.g. "Ġworld")
    logprob: float | None = None
    rank: int | None = None


@dataclass(frozen=True)
class GenerationOutput:
    generated_text: str  # the prompt first when preserve_input_text
    generated_tokens: int  # tokens generated, an EOS token included
    finish_reason: FinishReason
    input_token_count: int  # prompt tokens after truncation
    seed: int | None  # the sampling seed used (drawn when none was given); None for greedy
    tokens: tuple[GeneratedToken, ...] = ()  # when generated_tokens was asked for
    input_tokens: tuple[GeneratedToken, ...] = ()  # when input_tokens was asked for


@dataclass(frozen=True)
class StreamDetails:
    finish_reason: FinishReason  # NOT_FINISHED until the last chunk
    generated_tokens: int  # generated so far
    seed: int | None
    input_token_count: int


@dataclass(frozen=True)
class StreamChunk:
    generated_text: str  # the text this chunk adds (the prompt is prefixed to the first one
    # when preserve_input_text); may be empty while text that could become a stop sequence waits
    tokens: tuple[GeneratedToken, ...]  # the tokens this chunk adds, with logprob and rank
    details: StreamDetails
    input_tokens: tuple[GeneratedToken, ...] = ()  # first chunk only, when input_tokens was asked for
