"""The int4 probe's verdict (``runtimes.quantize_checks.judge_answers``) on real SmolLM2 token ids.

The answers are ones quantized SmolLM2 graphs gave here: the shipped graphs' right ones, and the
builder's all-4-bit graphs' wrong ones, which a substring check let through ("30 x 7").
"""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from runtimes.gguf_convert import TokenizerFixes, convert_cached
from runtimes.quantize_checks import PROBE_QUESTIONS, judge_answers
from tests.generation_models import SMOLLM_SETTINGS, SMOLLM_WORK, smollm_gguf

FP32 = (
    "The capital of France is Paris.",
    "The capital of Japan is Tokyo.",
    "A week is approximately 7 days.",
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    folder = convert_cached(smollm_gguf(), SMOLLM_WORK, TokenizerFixes.from_options(SMOLLM_SETTINGS))
    return AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]


def _judge(tokenizer: Any, week: str) -> dict[str, Any]:
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in FP32]
    got = [*ids[:2], tokenizer.encode(week, add_special_tokens=False)]
    return judge_answers(tokenizer, ids, got)


@pytest.mark.parametrize(
    "week",
    [
        "There are 7 days in a week.",
        "A week is equivalent to 7 days and 1 day.",
        "A week has seven days.",
    ],
)
def test_an_answer_stating_the_number_first_keeps_the_fact(tokenizer: Any, week: str) -> None:
    report = _judge(tokenizer, week)
    assert report["passed"], report["verdict"]
    assert [q["question"] for q in report["questions"]] == [q for q, _ in PROBE_QUESTIONS]


@pytest.mark.parametrize(
    "week",
    [
        "There are 30 days in a week, which is equivalent to 30 x 7 = 180 days in a week.",
        "There are 31 days in a week and 31 days in a month.",
        "A day is equivalent to 24 hours and 15 minutes. To convert a day to a week, divide by 7.",
        "A week is a long time.",
        "There are 17 days in a week.",  # "7" inside another number is not the fact
    ],
)
def test_an_answer_whose_first_number_is_wrong_loses_the_fact(tokenizer: Any, week: str) -> None:
    report = _judge(tokenizer, week)
    assert not report["passed"]
    assert report["verdict"].startswith("int4 loses the expected fact on 1 of 3 questions")
    assert "How many days are there in a week?" in report["verdict"]
