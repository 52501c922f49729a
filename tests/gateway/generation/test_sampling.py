"""TokenChooser: penalties, warpers and per-sequence seeded sampling on explicit logits."""

from __future__ import annotations

import itertools
import math

import torch

from gateway.generation.params import GenerationParams
from gateway.generation.sampling import TokenChooser, choose_rows

VOCAB = 8
EOS = 7


def _chooser(prompt: tuple[int, ...] = (), seed: int | None = None, **values: object) -> TokenChooser:
    params = GenerationParams(**values)  # type: ignore[arg-type]
    return TokenChooser(params, eos_token_id=EOS, vocab_size=VOCAB, prompt=prompt, seed=seed)


def _logits(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_greedy_takes_the_best_token_with_its_logprob_and_rank() -> None:
    logits = _logits(0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0)
    choice = _chooser().choose(logits, generated=0)
    assert choice.token_id == 1 and choice.rank == 1
    assert math.isclose(choice.logprob, float(logits.log_softmax(-1)[1]), rel_tol=1e-6)


def test_min_new_tokens_suppresses_eos_until_reached() -> None:
    logits = _logits(0, 0, 0, 0, 0, 0, 0, 5.0)
    chooser = _chooser(min_new_tokens=2, max_new_tokens=5)
    assert chooser.choose(logits, generated=0).token_id != EOS
    assert chooser.choose(logits, generated=1).token_id != EOS
    assert chooser.choose(logits, generated=2).token_id == EOS


def test_repetition_penalty_covers_the_prompt_and_generated_tokens() -> None:
    logits = _logits(2.0, 1.9, 0, 0, 0, 0, 0, 0)
    assert _chooser().choose(logits, 0).token_id == 0
    chooser = _chooser(prompt=(0,), repetition_penalty=1.5)
    assert chooser.choose(logits, 0).token_id == 1  # 2.0 / 1.5 < 1.9
    assert (
        chooser.choose(_logits(0, 1.9, 1.5, 0, 0, 0, 0, 0), 2).token_id == 2
    )  # token 1 was chosen: 1.9 / 1.5 < 1.5


def test_exponential_decay_raises_eos_after_start_index() -> None:
    logits = _logits(3.0, 0, 0, 0, 0, 0, 0, 2.0)
    chooser = _chooser(exponential_decay_length_penalty=(1, 2.0))
    assert chooser.choose(logits, generated=1).token_id == 0  # not after start yet
    assert chooser.choose(logits, generated=2).token_id == EOS  # 2.0 + 2.0 * (2 - 1) = 4.0


def test_top_k_and_top_p_limit_what_sampling_can_draw() -> None:
    logits = _logits(5.0, 4.0, 3.0, -1.0, -1.0, -1.0, -1.0, -1.0)
    top_k = _chooser(seed=1, decoding_method="SAMPLING", top_k=2, temperature=5.0)
    assert {top_k.choose(logits, 0).token_id for _ in range(200)} == {0, 1}
    top_p = _chooser(seed=1, decoding_method="SAMPLING", top_p=0.5)
    assert {top_p.choose(logits, 0).token_id for _ in range(100)} == {0}  # p(token 0) alone > 0.5
    typical = _chooser(seed=1, decoding_method="SAMPLING", typical_p=0.2, temperature=2.0)
    assert len({typical.choose(logits, 0).token_id for _ in range(200)}) <= 2


def test_the_same_seed_draws_the_same_tokens() -> None:
    logits = torch.zeros(VOCAB)
    draws = [
        [c.choose(logits, i).token_id for i in range(30)]
        for c in (_chooser(seed=9, decoding_method="SAMPLING") for _ in range(2))
    ]
    assert draws[0] == draws[1]
    other = _chooser(seed=10, decoding_method="SAMPLING")
    assert [other.choose(logits, i).token_id for i in range(30)] != draws[0]


def test_a_step_chooses_every_row_as_its_own_chooser_would() -> None:
    """choose_rows batches the plain greedy rows; every row still gets exactly its own choice."""
    kinds: list[dict[str, object]] = [
        {},  # plain greedy
        {"min_new_tokens": 3},  # greedy, EOS suppressed while fewer than 3 tokens
        {"repetition_penalty": 1.5},  # not batched: a penalty
        {"exponential_decay_length_penalty": (1, 2.0)},  # batched until the penalty starts
        {"decoding_method": "SAMPLING", "top_k": 3},  # not batched: a draw
    ]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, VOCAB, generator=generator)
    logits[:, EOS] += 3.0  # EOS is the best token of most rows
    for rows, generated in itertools.product(([4, 0, 3, 1, 2], [0, 1, 2, 3, 4]), (0, 2, 4)):
        batched = [_chooser((2,), seed=11, **kind) for kind in kinds]
        alone = [_chooser((2,), seed=11, **kind) for kind in kinds]
        counts = [generated] * len(kinds)
        got = choose_rows(batched, logits.clone(), rows, counts)  # a step's logits are read once
        want = [c.choose(logits[row], generated) for c, row in zip(alone, rows, strict=True)]
        assert [c.token_id for c in got] == [c.token_id for c in want]
        assert [c.rank for c in got] == [c.rank for c in want]
        for a, b in zip(got, want, strict=True):
            assert math.isclose(a.logprob, b.logprob, rel_tol=1e-6, abs_tol=1e-6)
    eos_best = _logits(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0)[None, :]
    suppressed = choose_rows([_chooser(min_new_tokens=2)], eos_best.clone(), [0], [1])  # read once
    assert suppressed[0].token_id == 1 and suppressed[0].rank == 1
    assert choose_rows([_chooser(min_new_tokens=2)], eos_best.clone(), [0], [2])[0].token_id == EOS
    assert choose_rows([], eos_best, [], []) == []
