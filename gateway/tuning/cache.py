"""The generation adapters held in memory: a byte budget over every adapter host, least recently
used first out, with the adapter store on disk below.

- Single-flight: concurrent requests for an adapter that is not in memory share one load.
- A request's adapter loads when the request is admitted, before it joins the scheduler's queue,
  and the load runs in a thread outside the engine's step lock: other adapters' rows keep running.
- Eviction takes the least recently used adapter that no request is using and that is not
  pinned, until the held bytes fit the budget; when every adapter is in use or pinned the budget
  is passed for as long as that lasts (a request is never failed to keep it).
- Per-adapter metrics: hits and misses, load wait, loaded bytes (labelled by ``name@N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from gateway.errors import Unavailable
from gateway.metrics import Metrics
from runtimes.causal_lm import CausalLMRuntime

log = logging.getLogger(__name__)


@dataclass
class _Held:
    runtime: CausalLMRuntime
    key: str  # the engine's key: the adapter's reference name@N
    name: str  # the adapter's name (pins are by name)
    nbytes: int
    last_used: float
    inflight: int = 0


class AdapterCache:
    def __init__(self, budget_bytes: int, metrics: Metrics) -> None:
        self.budget_bytes = budget_bytes
        self._metrics = metrics
        self._held: dict[tuple[int, str], _Held] = {}
        self._loading: dict[tuple[int, str], asyncio.Future[None]] = {}
        self._pinned: set[str] = set()

    @property
    def held_bytes(self) -> int:
        return sum(held.nbytes for held in self._held.values())

    def held(self) -> list[tuple[str, int, bool, int]]:
        """(key, bytes, pinned, requests using it) of every adapter in memory."""
        return [(h.key, h.nbytes, h.name in self._pinned, h.inflight) for h in self._held.values()]

    @contextlib.asynccontextmanager
    async def hold(
        self, runtime: CausalLMRuntime, key: str, name: str, load: Callable[[], None]
    ) -> AsyncIterator[None]:
        """Have ``runtime`` hold adapter ``key`` for the block (``load`` runs in a thread when it
        does not); while any block holds it, it is not evicted."""
        slot = (id(runtime), key)
        started = time.monotonic()
        missed = False
        while True:
            held = self._held.get(slot)
            if held is not None and key in runtime.adapter_keys:
                break  # no await from this check to the count below: eviction cannot slip in
            missed = True
            await self._load(runtime, slot, key, name, load)
        self._metrics.adapter_cache.labels(key, "miss" if missed else "hit").inc()
        if missed:
            self._metrics.adapter_load_wait.labels(key).observe(time.monotonic() - started)
        held.inflight += 1
        held.last_used = time.monotonic()
        try:
            yield
        finally:
            held.inflight -= 1
            held.last_used = time.monotonic()

    async def _load(
        self, runtime: CausalLMRuntime, slot: tuple[int, str], key: str, name: str, load: Callable[[], None]
    ) -> None:
        pending = self._loading.get(slot)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[slot] = pending
            try:
                await asyncio.to_thread(load)
                nbytes = runtime.adapter_bytes(key)
                self._held[slot] = _Held(runtime, key, name, nbytes, time.monotonic())
                self._metrics.adapter_bytes.labels(key).set(nbytes)
                await self._evict(keep=slot)
                pending.set_result(None)
            except Exception as exc:
                log.exception("loading adapter %s failed", key)
                pending.set_exception(Unavailable(f"adapter {key} failed to load: {exc}", retry_after_s=1.0))
                pending.exception()
            finally:
                self._loading.pop(slot, None)
        await asyncio.shield(pending)

    def pin(self, name: str, pinned: bool) -> None:
        if pinned:
            self._pinned.add(name)
        else:
            self._pinned.discard(name)

    def is_pinned(self, name: str) -> bool:
        return name in self._pinned

    def forget_runtime(self, runtime: object) -> None:
        """The host unloaded: its adapters went with it."""
        for slot in [slot for slot, held in self._held.items() if held.runtime is runtime]:
            self._metrics.adapter_bytes.labels(self._held[slot].key).set(0)
            del self._held[slot]

    async def _evict(self, keep: tuple[int, str]) -> None:
        while self.held_bytes > self.budget_bytes:
            victims = [
                (held.last_used, slot)
                for slot, held in self._held.items()
                if slot != keep and not held.inflight and held.name not in self._pinned
            ]
            if not victims:
                log.info(
                    "adapters hold %d bytes, over the budget of %d: every other one is in use or pinned",
                    self.held_bytes,
                    self.budget_bytes,
                )
                return
            _, slot = min(victims)
            held = self._held.pop(slot)
            await asyncio.to_thread(held.runtime.unload_adapter, held.key)
            self._metrics.adapter_bytes.labels(held.key).set(0)
            log.info("evicted adapter %s (%d bytes)", held.key, held.nbytes)
