"""IncrementalText with the real SmolLM2 tokenizer: deltas, split characters, stop sequences."""

from __future__ import annotations

from gateway.generation.text import IncrementalText
from runtimes.torch_generation import TorchCausalLM


def _feed(text: IncrementalText, ids: list[int]) -> list[str]:
    return [text.add(token) for token in ids]


def test_deltas_add_up_to_the_decoded_text_even_across_split_characters(smollm: TorchCausalLM) -> None:
    sample = " café ünïcode 日本語 🙂 done"
    ids = smollm.encode(sample)
    text = IncrementalText(smollm.decode, smollm.encode("Say:"), (), True)
    deltas = _feed(text, ids)
    assert "".join(deltas) + text.flush() == smollm.decode(ids) == sample
    assert "" in deltas  # bytes of one character spread over tokens wait for the last one
    assert not any("\ufffd" in delta for delta in deltas)


def test_a_stop_sequence_cuts_the_text_with_or_without_itself(smollm: TorchCausalLM) -> None:
    ids = smollm.encode(" 4, 5, 6, 7, 8")
    for include, expected in ((True, " 4, 5, 6,"), (False, " 4, 5, ")):
        text = IncrementalText(smollm.decode, (), ("6,",), include)
        sent = ""
        for token in ids:
            text.add(token)
            match = text.find_stop(honour=True)
            sent += text.take_sendable(final=match is not None)
            if match:
                break
        assert text.text == expected
        assert sent == expected  # nothing streamed had to be taken back


def test_the_tail_that_may_become_a_stop_sequence_is_held_back(smollm: TorchCausalLM) -> None:
    text = IncrementalText(smollm.decode, (), ("END!",), True)
    _feed(text, smollm.encode("so EN"))
    assert text.find_stop(honour=True) is None
    assert text.take_sendable(final=False) == "so "  # "EN" could start "END!"
    assert text.take_sendable(final=True) == "EN"


def test_stop_sequences_are_ignored_before_min_new_tokens(smollm: TorchCausalLM) -> None:
    text = IncrementalText(smollm.decode, (), ("x",), True)
    _feed(text, smollm.encode("a x b"))
    assert text.find_stop(honour=False) is None
    _feed(text, smollm.encode(" c x"))
    assert text.find_stop(honour=True) is not None
    assert text.text == "a x b c x"
