"""Eviction policies on small traces with known answers (gateway/models/eviction.py).

The cache below is the registry's rule in miniature: a request for a model that is not loaded
loads it, evicting the policy's choice among the other loaded models until it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.models.eviction import (
    POLICIES,
    EvictionPolicy,
    FrequencySizePolicy,
    LruPolicy,
    make_policy,
)
from gateway.settings import RegistrySettings, parse


@dataclass
class Model:
    model_id: str
    size_bytes: int
    last_used: float


def run(policy: EvictionPolicy, trace: str, budget: int, sizes: dict[str, int] | None = None) -> list[str]:
    """Serve ``trace`` (one letter per request); return the evictions in order."""
    sizes = sizes or {}
    loaded: dict[str, Model] = {}
    evicted = []
    for clock, name in enumerate(trace):
        policy.record(name)
        if name in loaded:
            loaded[name].last_used = clock
            continue
        size = sizes.get(name, 1)
        while sum(m.size_bytes for m in loaded.values()) + size > budget:
            victim = policy.victim(list(loaded.values()))
            evicted.append(victim.model_id)
            del loaded[victim.model_id]
        loaded[name] = Model(name, size, clock)
    return evicted


def test_lru_evicts_the_least_recently_used() -> None:
    assert run(LruPolicy(), "ABACD", budget=2) == ["B", "A"]


def test_a_scan_does_not_flush_a_hot_model_under_lfu_size() -> None:
    trace = "HHH" + "STUVWXYZ"  # a hot model, then eight models asked for once each
    assert "H" not in run(FrequencySizePolicy(), trace, budget=2)
    assert run(FrequencySizePolicy(), trace, budget=2) == list("STUVWXY")  # each newcomer goes next
    assert run(LruPolicy(), trace, budget=2)[0] == "H"  # LRU flushes it at the second newcomer


def test_lfu_size_evicts_a_large_rarely_used_model_first() -> None:
    sizes = {"L": 3, "s": 1, "t": 1}
    # L asked for twice (2/3 per byte), s once (1 per byte): the large one goes for t
    assert run(FrequencySizePolicy(), "LLs" + "t", budget=4, sizes=sizes) == ["L"]
    # asked for often enough, the large model stays and the small one goes
    assert run(FrequencySizePolicy(), "LLLLs" + "t", budget=4, sizes=sizes) == ["s"]
    assert run(LruPolicy(), "LLs" + "t", budget=4, sizes=sizes) == ["L"]  # LRU: by recency only
    assert run(LruPolicy(), "sLLLL" + "t", budget=4, sizes=sizes) == ["s"]


def test_equal_counts_per_byte_fall_back_to_least_recently_used() -> None:
    policy = FrequencySizePolicy()
    for name in "AB":
        policy.record(name)
    older, newer = Model("A", 10, 1.0), Model("B", 10, 2.0)
    assert policy.victim([newer, older]) is older


def test_counts_age_by_halving() -> None:
    policy = FrequencySizePolicy(aging_requests=4)
    for name in "AAAB":  # the fourth request halves every count; B's 1 drops out
        policy.record(name)
    assert policy.frequency("A") == 1 and policy.frequency("B") == 0
    assert policy.tracked() == {"A"}
    # a model that stops being asked for loses its place to one that is asked for now
    for name in "CCCC" + "CCC":
        policy.record(name)
    assert policy.frequency("A") == 0 and policy.frequency("C") > 0
    # A was asked for 20 times long ago, B 8 times lately: aged, A's count is 7 and it goes for C;
    # without aging A's 20 would keep it and B would go
    trace = "A" * 20 + "B" * 8 + "C"
    assert run(FrequencySizePolicy(aging_requests=10), trace, budget=2) == ["A"]
    assert run(FrequencySizePolicy(aging_requests=10_000), trace, budget=2) == ["B"]


def test_forgetting_a_model_drops_its_count() -> None:
    policy = FrequencySizePolicy()
    for name in "ABB":
        policy.record(name)
    policy.forget("B")
    policy.forget("never-seen")
    assert policy.tracked() == {"A"} and policy.frequency("B") == 0
    assert LruPolicy().tracked() == set()


def test_policies_by_name_and_their_settings() -> None:
    assert POLICIES == ("lfu-size", "lru")
    assert isinstance(make_policy("lru"), LruPolicy)
    made = make_policy("lfu-size", 50)
    assert isinstance(made, FrequencySizePolicy) and made.aging_requests == 50
    with pytest.raises(ValueError, match="unknown eviction policy 'lfu'"):
        make_policy("lfu")
    with pytest.raises(ValueError, match="aging_requests"):
        FrequencySizePolicy(0)
    assert RegistrySettings().eviction_policy == "lfu-size"  # the default
    chosen = parse(["--eviction-policy", "lru", "--eviction-aging-requests", "500"], {}).registry
    assert (chosen.eviction_policy, chosen.eviction_aging_requests) == ("lru", 500)
    assert parse([], {"TASKGATE_EVICTION_POLICY": "lru"}).registry.eviction_policy == "lru"
    with pytest.raises(ValueError, match="eviction_policy must be one of lfu-size, lru"):
        RegistrySettings(eviction_policy="fifo")
    with pytest.raises(ValueError, match="eviction_aging_requests"):
        RegistrySettings(eviction_aging_requests=0)
