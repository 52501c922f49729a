"""Belady's offline optimum and the policy replays of bench/multiplex_policy.py, checked on
hand-worked traces and against an exhaustive search of every eviction choice on small ones."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Mapping, Sequence

import pytest

from bench.multiplex_policy import Picker, belady, compare, idle_models, next_uses, replay, simulate
from gateway.models.eviction import make_policy

UNIT = {name: 1 for name in "ABCDEHSTUVW"}
MIXED = {"A": 2, "B": 1, "C": 1, "D": 1}


def exact(trace: Sequence[str], sizes: Mapping[str, int], budget: int) -> int:
    """The most hits any eviction choices give (every request loads its model if missing)."""

    @functools.cache
    def best(index: int, loaded: frozenset[str]) -> int:
        if index == len(trace):
            return 0
        model = trace[index]
        if model in loaded:
            return 1 + best(index + 1, loaded)
        options = [
            best(index + 1, frozenset(kept) | {model})
            for count in range(len(loaded) + 1)
            for kept in itertools.combinations(sorted(loaded), count)
            if sum(sizes[k] for k in kept) + sizes[model] <= budget
        ]
        return max(options)

    return best(0, frozenset())


def test_next_uses() -> None:
    inf = float("inf")
    assert next_uses("ABABC") == [2, 3, inf, inf, inf]


def test_belady_on_a_hand_worked_trace_of_equal_sizes() -> None:
    # budget 2. A, B load; C evicts B (next at 4; A's is at 3); A hits; B evicts C (never again);
    # D evicts B (never again; A's next is at 6); A hits: 2 hits. LRU hits none.
    trace = "ABCABDA"
    assert belady(trace, UNIT, 2) == 2 == exact(trace, UNIT, 2)
    assert simulate(trace, UNIT, 2, make_policy("lru")) == 0
    assert belady(trace, UNIT, 2, start=4) == 1  # only the hit at 6 is counted


def test_belady_variants_on_a_hand_worked_trace_of_mixed_sizes() -> None:
    # A is 2 bytes, the others 1; budget 3. At C (2): Belady's rule evicts B (next at 5, A's at 4);
    # at D (3) C (never again); A hits (4); at B (5) A (never again); D hits (6): 2 hits.
    # Belady-Size at C weighs A 2 bytes x 2 = 4 against B 1 x 3 = 3 and evicts A; D fits; A (4)
    # must evict C (never again) then D (2 x 1 against B's 1 x 1); B hits (5); D misses: 1 hit.
    trace = "ABCDABD"
    assert belady(trace, MIXED, 3, "farthest") == 2
    assert belady(trace, MIXED, 3, "size") == 1
    assert exact(trace, MIXED, 3) == 2
    ratios = compare(trace, MIXED, 3)
    assert ratios["belady-farthest"] == pytest.approx(2 / 7) and ratios["belady-size"] == pytest.approx(1 / 7)
    assert ratios["belady"] == ratios["belady-farthest"]  # the reference is the better variant
    with pytest.raises(ValueError, match="unknown Belady variant"):
        belady(trace, MIXED, 3, "lfu")
    with pytest.raises(ValueError, match="larger than the budget"):
        belady(trace, MIXED, 1)


def test_belady_is_exact_for_equal_sizes_and_no_policy_beats_the_exhaustive_optimum() -> None:
    rng = random.Random(7)  # noqa: S311 (test traces, not secrets)
    for _ in range(60):
        trace = [rng.choice("ABCDE") for _ in range(rng.randint(4, 11))]
        assert belady(trace, UNIT, 2) == exact(trace, UNIT, 2)
        best = exact(trace, MIXED | {"E": 2}, 4)
        assert max(belady(trace, MIXED | {"E": 2}, 4, v) for v in ("farthest", "size")) <= best
        for name in ("lru", "lfu-size"):
            assert simulate(trace, MIXED | {"E": 2}, 4, make_policy(name)) <= best
            assert simulate(trace, UNIT, 2, make_policy(name)) <= belady(trace, UNIT, 2)


def test_the_replay_drives_the_gateways_policies() -> None:
    # a hot model between one-off ones, two models fit: both keep H (every H after the first hits)
    trace = "HH" + "SHTHUHVHW"
    assert simulate(trace, UNIT, 2, make_policy("lfu-size")) == 5
    assert simulate(trace, UNIT, 2, make_policy("lru")) == 5
    # a scan of four one-off models: lfu-size keeps H, LRU loses it at the second
    scan = "HHH" + "STUV" + "H"
    assert simulate(scan, UNIT, 2, make_policy("lfu-size")) == 3
    assert simulate(scan, UNIT, 2, make_policy("lru")) == 2


def test_picker_idle_models_and_cold_loads_against_idle_ones() -> None:
    draws = iter("ABAB")
    pick = Picker(lambda: next(draws))
    pick(), pick()
    pick.start = len(pick.trace)
    pick(), pick()
    assert pick.trace == list("ABAB") and pick.start == 2

    def size_of(model: str) -> str:
        return "big" if model.isupper() else "small"

    assert idle_models(["A", "b", "C", "d", "E", "f"], size_of, 2) == ["f", "E", "d", "C"]
    loads = [("A", 10, 10), ("B", 20, 35), ("A", 30, 30)]  # (model, size, reserved); A: median 20
    idle = [("C", 0.1), ("D", 0.3), ("e", 0.05)]
    window = [("A", 0.4), ("B", 0.2), ("e", 0.05)]
    got = replay(pick, 40, loads, idle, window, size_of, 1000)
    assert got["trace"] == list("ABAB") and got["trace_start"] == 2
    assert got["idle_load_p50_s_by_class"] == {"big": pytest.approx(0.2), "small": pytest.approx(0.05)}
    assert got["cold_vs_idle"] == pytest.approx(1.0)  # median of 0.4/0.2, 0.2/0.2, 0.05/0.05
    assert got["window_load_p50_s"] == pytest.approx(0.2)
    assert got["replay"]["belady"] == 1.0  # both fit (20 + 20 <= 40): both requests of the window hit
    # B's load reserves 35: it evicts A (20 + 35 > 40); A's reload fits beside B; only B's 2nd hits
    assert got["replay_reserving"]["belady"] == 0.5 == got["replay_reserving"]["lfu-size"]
