"""Generated text, token by token: incremental detokenization, stop sequences and what may be sent.

``IncrementalText`` turns each new token into the text it adds (the offsets method of TGI /
vLLM: decode a short window of recent tokens and keep the part after what was already read;
a trailing U+FFFD means an incomplete UTF-8 character, so the text waits for the next token).
It finds stop sequences in the text and holds back any tail that could still grow into one, so
streamed text never has to be taken back when a stop sequence is cut off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROMPT_CONTEXT_TOKENS = 5  # prompt tokens decoded with the first generated ones (leading-space rules)
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class StopMatch:
    text_end: int  # where the final text ends (after or before the stop sequence)


class IncrementalText:
    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        prompt_ids: Sequence[int],
        stop_sequences: Sequence[str],
        include_stop_sequence: bool,
    ) -> None:
        self._decode = decode
        self._ids = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._stops = tuple(stop_sequences)
        self._include_stop = include_stop_sequence
        self._longest_stop = max((len(s) for s in self._stops), default=0)
        self._floor = 0  # a stop sequence may start at or after this index of the text
        self._checked = 0  # length of the text at the last search
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of ``text`` handed out by ``take_sendable``

    def add(self, token_id: int) -> str:
        """Append one token; returns the text it completes (may be empty)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            delta = after[len(before) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end: whatever is still pending (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        delta = after[len(before) :] if len(after) > len(before) else ""
        self._prefix_offset = self._read_offset = len(self._ids)
        self.text += delta
        return delta

    def find_stop(self, honour: bool) -> StopMatch | None:
        """The earliest stop sequence in the text searched so far. With ``honour`` False (fewer
        tokens than min_new_tokens) nothing stops, and no stop sequence may start in that text."""
        if not self._stops:
            return None
        if not honour:
            self._floor = self._checked = len(self.text)
            return None
        start = max(self._floor, self._checked - self._longest_stop + 1)
        self._checked = len(self.text)
        best: tuple[int, str] | None = None
        for stop in self._stops:
            index = self.text.find(stop, start)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, stop)
        if best is None:
            return None
        index, stop = best
        end = index + len(stop) if self._include_stop else index
        self.text = self.text[:end]
        return StopMatch(end)

    def take_sendable(self, final: bool) -> str:
        """Text not sent yet that can no longer change: all of it when ``final``, else all but
        the longest tail that is the start of a stop sequence."""
        limit = len(self.text) if final else len(self.text) - self._held_back()
        if limit <= self.sent:
            return ""
        chunk = self.text[self.sent : limit]
        self.sent = limit
        return chunk

    def _held_back(self) -> int:
        text = self.text
        for size in range(min(self._longest_stop - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
