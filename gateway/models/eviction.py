"""Eviction under the memory budget: when a load needs room (``RoomKeeper``) and which loaded
model goes (the policy, ``--eviction-policy``).

The room keeper decides *whether* to evict and *which models may go* (never one with requests in
flight, a pinned one or the one loading), and waits (bounded) for busy models to go idle; a
policy only picks one of those candidates. Two policies:

- ``lfu-size`` (the default): evict the candidate with the fewest recent requests per byte of
  memory it holds, ties broken by least recent use. Counts are exact per model and aged like
  TinyLFU's: every ``aging_requests`` requests each count is halved (a count of 1 drops out), so a
  model that stops being asked for loses its place within a few periods and the table holds only
  models asked for lately. Requests per byte is what a knapsack of the budget's bytes keeps to
  serve the most requests from memory; on the multiplex benchmark's trace (Zipf 1.1 over 200
  models of three sizes, 10 mean models in the budget) it reaches about 0.91 of Belady's offline
  optimum where LRU reaches about 0.65 (bench/multiplex_policy.py). A burst of one-off models
  (a scan) cannot flush a hot model: each newcomer has a count of 1 and is the next to go.
- ``lru``: evict the least recently used candidate (the registry's earlier behaviour).

In a throwaway simulation of the same trace, GDSF (priority = inflation clock + frequency /
size) reached about 0.86 of Belady and W-TinyLFU (window LRU, segmented main, admission by
frequency) 0.85-0.90; neither is offered. A policy is told of every request for a model the
registry serves (a store model or a derived one, after the id was checked: ``record``) and of a
model that left (``forget``); it keeps nothing about any other id, so its state is bounded by
the store.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

from gateway.errors import Unavailable


class Resident(Protocol):
    """What a policy may read of a loaded model (the registry's LoadedModel is one)."""

    @property
    def model_id(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def last_used(self) -> float: ...


class Evictable(Resident, Protocol):
    @property
    def inflight(self) -> int: ...

    @property
    def pinned(self) -> bool: ...


R = TypeVar("R", bound=Resident)
M = TypeVar("M", bound=Evictable)


class EvictionPolicy(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def record(self, model_id: str) -> None:
        """One request for ``model_id`` (served from memory or not); only ids the registry serves."""

    @abc.abstractmethod
    def victim(self, candidates: Sequence[R]) -> R:
        """The candidate to evict (``candidates`` is not empty; each may be evicted)."""

    @abc.abstractmethod
    def forget(self, model_id: str) -> None:
        """Drop what is kept about a model that left the store."""

    @abc.abstractmethod
    def tracked(self) -> set[str]:
        """The model ids the policy keeps state for."""


class LruPolicy(EvictionPolicy):
    """Evict the least recently used candidate."""

    name = "lru"

    def record(self, model_id: str) -> None:
        return None  # recency is the models' own last_used

    def victim(self, candidates: Sequence[R]) -> R:
        return min(candidates, key=lambda model: model.last_used)

    def forget(self, model_id: str) -> None:
        return None

    def tracked(self) -> set[str]:
        return set()


class FrequencySizePolicy(EvictionPolicy):
    """Evict the candidate with the fewest recent requests per byte (ties: least recently used)."""

    name = "lfu-size"

    def __init__(self, aging_requests: int = 1000) -> None:
        if aging_requests < 1:
            raise ValueError(f"aging_requests must be at least 1, got {aging_requests}")
        self.aging_requests = aging_requests
        self._counts: dict[str, int] = {}
        self._since_aging = 0

    def record(self, model_id: str) -> None:
        self._counts[model_id] = self._counts.get(model_id, 0) + 1
        self._since_aging += 1
        if self._since_aging >= self.aging_requests:
            self._since_aging = 0
            self._counts = {key: count // 2 for key, count in self._counts.items() if count > 1}

    def frequency(self, model_id: str) -> int:
        """The model's aged request count."""
        return self._counts.get(model_id, 0)

    def victim(self, candidates: Sequence[R]) -> R:
        return min(
            candidates,
            key=lambda model: (self.frequency(model.model_id) / max(1, model.size_bytes), model.last_used),
        )

    def forget(self, model_id: str) -> None:
        self._counts.pop(model_id, None)

    def tracked(self) -> set[str]:
        return set(self._counts)


POLICIES: tuple[str, ...] = (FrequencySizePolicy.name, LruPolicy.name)


def make_policy(name: str, aging_requests: int = 1000) -> EvictionPolicy:
    """The policy called ``name`` (one of ``POLICIES``)."""
    if name == LruPolicy.name:
        return LruPolicy()
    if name == FrequencySizePolicy.name:
        return FrequencySizePolicy(aging_requests)
    raise ValueError(f"unknown eviction policy {name!r}; choose one of {', '.join(POLICIES)}")


class RoomKeeper(Generic[M]):
    """Keeps loaded models plus loads in progress within ``budget_bytes`` (0: no budget).

    ``residents()`` lists the loaded models, ``unload(model)`` evicts one (it must leave
    ``residents()`` at once). A load reserves its peak bytes while it runs (``reserve``).
    """

    def __init__(
        self,
        policy: EvictionPolicy,
        budget_bytes: int,
        room_wait_s: float,
        residents: Callable[[], Collection[M]],
        unload: Callable[[M], Awaitable[None]],
    ) -> None:
        self.policy = policy
        self.budget_bytes = budget_bytes
        self.room_wait_s = room_wait_s
        self.reserved = 0  # bytes held for loads in progress (their peak)
        self._residents = residents
        self._unload = unload
        self._room_freed = asyncio.Event()  # a model went idle or a load's reservation ended

    def freed(self) -> None:
        """A model went idle: a load waiting for room may evict it now."""
        self._room_freed.set()

    @contextlib.contextmanager
    def reserve(self, needed: int) -> Iterator[None]:
        self.reserved += needed
        try:
            yield
        finally:
            self.reserved -= needed
            self._room_freed.set()

    def _held(self) -> int:
        return sum(model.size_bytes for model in self._residents())

    async def make_room(self, needed: int, loading: str) -> None:
        """Evict idle models (the policy's choice) until ``needed`` more bytes fit; wait up to
        ``room_wait_s`` for busy ones to go idle, then UNAVAILABLE. ``needed`` 0: only bring a
        load whose measured size passed its estimate back within the budget, as far as idle
        models allow."""
        budget = self.budget_bytes
        if not budget:
            return
        if needed > budget:
            raise Unavailable(
                f"model {loading!r} needs {needed} bytes to load, more than the whole memory budget "
                f"of {budget} bytes; raise --memory-budget-bytes to serve it"
            )
        give_up_at = time.monotonic() + self.room_wait_s
        while self._held() + self.reserved + needed > budget:
            victims = [
                m for m in self._residents() if not m.inflight and not m.pinned and m.model_id != loading
            ]
            if not victims:
                if needed == 0:
                    return  # over budget only by busy or pinned models; they go when idle
                await self._wait_for_idle(loading, needed, give_up_at)
                continue
            await self._unload(self.policy.victim(victims))

    async def _wait_for_idle(self, loading: str, needed: int, give_up_at: float) -> None:
        """Wait until a model's last request leaves or a load ends; UNAVAILABLE after ``give_up_at``."""
        self._room_freed.clear()
        try:
            await asyncio.wait_for(self._room_freed.wait(), max(0.0, give_up_at - time.monotonic()))
        except TimeoutError:
            pinned = sum(m.size_bytes for m in self._residents() if m.pinned)
            raise Unavailable(
                f"no room for model {loading!r} ({needed} bytes) in the memory budget of "
                f"{self.budget_bytes} bytes: {self._held()} bytes are held by "
                f"models in use ({pinned} of them pinned) and {self.reserved} by loads in progress; "
                "retry shortly",
                retry_after_s=1.0,
            ) from None
