"""Choosing one sequence's next token from its logits: penalties, warpers, greedy or seeded sampling.

Each sequence owns a ``TokenChooser``, so a row's choice depends only on that row's logits and
its own state, never on the other rows of the batch: the same seed gives the same sampled text
whether the sequence runs alone or in a mixed batch. The order of operations follows Hugging
Face ``generate``: repetition penalty, min-new-tokens EOS suppression, exponential decay length
penalty, then (sampling only) temperature, top-k, top-p, typical-p and a draw from the
sequence's own ``torch.Generator``.

``logprob`` and ``rank`` of the chosen token are read from the distribution after the penalties
and the temperature, before the truncating warpers (top-k / top-p / typical-p).

``choose_rows`` chooses for a whole step at once: the rows of greedy sequences whose only
processor is the min-new-tokens EOS suppression (the common case) go through one vectorized
argmax and log-softmax over the batch, the others through their own ``choose``; a row's choice
is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gateway.generation.params import GenerationParams


@dataclass(frozen=True)
class Choice:
    token_id: int
    logprob: float
    rank: int  # 1 = the most likely token


class TokenChooser:
    def __init__(
        self,
        params: GenerationParams,
        *,
        eos_token_id: int,
        vocab_size: int,
        prompt: Sequence[int],
        seed: int | None,
    ) -> None:
        self._params = params
        self._eos = eos_token_id
        self._penalty = params.effective_repetition_penalty
        self._seen: torch.Tensor | None = None
        if self._penalty != 1.0:
            self._seen = torch.zeros(vocab_size, dtype=torch.bool)
            if prompt:
                self._seen[torch.tensor(list(prompt), dtype=torch.long)] = True
        self._generator: torch.Generator | None = None
        if params.sampling:
            if seed is None:
                raise ValueError("sampling needs a seed (see policies.resolve_seed)")
            self._generator = torch.Generator().manual_seed(seed)

    def plain_greedy(self, generated: int) -> bool:
        """True when this step's choice is an argmax over the logits with at most EOS suppressed
        (no sampling, no repetition penalty, no length penalty in force), so it can be batched."""
        if self._generator is not None or self._seen is not None:
            return False
        decay = self._params.exponential_decay_length_penalty
        return decay is None or generated <= decay[0]

    def suppressed_eos(self, generated: int, vocab_size: int) -> int | None:
        """The EOS column min_new_tokens masks at this step (None: none)."""
        if 0 <= self._eos < vocab_size and generated < self._params.min_new_tokens:
            return self._eos
        return None

    def choose(self, logits: torch.Tensor, generated: int) -> Choice:
        """The next token given this row's logits [vocab] and the count of tokens generated so far."""
        scores = logits.float().clone()
        self._penalize(scores, generated)
        if self._params.sampling:
            scores /= self._params.effective_temperature
        logprobs = scores.log_softmax(dim=-1)
        token = int(scores.argmax()) if self._generator is None else self._sample(scores)
        if self._seen is not None:
            self._seen[token] = True
        chosen = scores[token]
        rank = int((scores > chosen).sum()) + 1
        return Choice(token, float(logprobs[token]), rank)

    # -- processors ----------------------------------------------------------------------
    def _penalize(self, scores: torch.Tensor, generated: int) -> None:
        if self._seen is not None:
            penalized = torch.where(scores < 0, scores * self._penalty, scores / self._penalty)
            scores.copy_(torch.where(self._seen, penalized, scores))
        if 0 <= self._eos < scores.shape[0]:
            if generated < self._params.min_new_tokens:
                scores[self._eos] = float("-inf")
            decay = self._params.exponential_decay_length_penalty
            if decay is not None and generated > decay[0]:
                eos = scores[self._eos]
                scores[self._eos] = eos + eos.abs() * (float(decay[1]) ** (generated - decay[0]) - 1.0)

    def _sample(self, scores: torch.Tensor) -> int:
        params = self._params
        if params.top_k > 0:
            scores = _top_k(scores, params.top_k)
        if params.effective_top_p < 1.0:
            scores = _top_p(scores, params.effective_top_p)
        if params.effective_typical_p < 1.0:
            scores = _typical_p(scores, params.effective_typical_p)
        probs = scores.softmax(dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))


def choose_rows(
    choosers: Sequence[TokenChooser], logits: torch.Tensor, rows: Sequence[int], generated: Sequence[int]
) -> list[Choice]:
    """The choice of each ``choosers[i]`` from row ``rows[i]`` of a step's ``logits`` [batch,
    vocab], its sequence having generated ``generated[i]`` tokens; the plain greedy rows in one
    vectorized pass, which writes -inf into their EOS column where EOS is suppressed (a step's
    logits are read once: the rows left to their own chooser are never written)."""
    choices: list[Choice | None] = [None] * len(choosers)
    fast = [i for i, (c, n) in enumerate(zip(choosers, generated, strict=True)) if c.plain_greedy(n)]
    if fast:
        with torch.inference_mode():  # a runtime's logits are inference tensors: written in place
            picked = [rows[i] for i in fast]
            every = picked == list(range(logits.shape[0]))
            scores = (logits if every else logits[torch.tensor(picked, dtype=torch.long)]).float()
            masked = [
                (k, choosers[i].suppressed_eos(generated[i], scores.shape[-1])) for k, i in enumerate(fast)
            ]
            eos = [(k, column) for k, column in masked if column is not None]
            if eos:
                at = torch.tensor(eos, dtype=torch.long)
                scores[at[:, 0], at[:, 1]] = float("-inf")
            tokens = scores.numpy().argmax(axis=-1)  # numpy's argmax: ~10x torch's on CPU rows this wide
            logprobs = scores.log_softmax(dim=-1)[torch.arange(len(fast)), torch.from_numpy(tokens)]
            # the argmax is the most likely token: rank 1, as ``choose`` counts it (strictly greater)
            for k, (token, logprob) in enumerate(zip(tokens.tolist(), logprobs.tolist(), strict=True)):
                choices[fast[k]] = Choice(int(token), float(logprob), 1)
    for i, choice in enumerate(choices):
        if choice is None:
            choices[i] = choosers[i].choose(logits[rows[i]], generated[i])
    return [c for c in choices if c is not None]


# -- warpers (one row; removed tokens get -inf; the best token always survives) ---------------
def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    if k >= scores.shape[0]:
        return scores
    threshold = torch.topk(scores, k).values[-1]
    return scores.masked_fill(scores < threshold, float("-inf"))


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to top_p."""
    sorted_scores, order = torch.sort(scores, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    remove_sorted = (probs.cumsum(dim=-1) - probs) >= top_p  # the mass before a token already suffices
    remove_sorted[0] = False
    remove = torch.zeros_like(remove_sorted).scatter(0, order, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def _typical_p(scores: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep the tokens whose surprise is closest to the entropy, up to ``mass`` probability."""
    logprobs = scores.log_softmax(dim=-1)
    probs = logprobs.exp()
    entropy = -(logprobs * probs).nansum()
    distance = (-logprobs - entropy).abs()
    sorted_distance, order = torch.sort(distance)
    cumulative = probs.gather(0, order).cumsum(dim=-1)
    last = min(int((cumulative < mass).sum()), scores.shape[0] - 1)
    remove_sorted = sorted_distance > sorted_distance[last]
    remove_sorted[0] = False
    remove = torch.zeros_like(remove_sorted).scatter(0, order, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))
