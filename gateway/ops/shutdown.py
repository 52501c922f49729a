"""Graceful shutdown's state: which requests are in flight, and whether the server is draining.

What Kubernetes needs on SIGTERM (``Gateway.shutdown`` runs the steps; the access gates of both
transports, ``gateway/frontends/{http,grpc}/access_gate.py``, apply them to each request):

1. ``begin()``: from now on readiness is false (HTTP ``/v2/health/ready`` and the models'
   ``/ready`` answer 503, gRPC health answers NOT_SERVING, KServe's ServerReady / ModelReady
   UNAVAILABLE) and every new request is refused with UNAVAILABLE / 503 "shutting down".
   Liveness (``/health``, ``/v2/health/live``, ServerLive, gRPC health itself) and ``/metrics``
   keep answering.
2. ``wait_idle(timeout)``: requests and streams already admitted finish, up to the deadline.
3. whatever still runs at the deadline is cut by the caller (generation streams end with
   UNAVAILABLE), then the servers stop and tuning jobs are interrupted.

Requests are counted from admission to their last byte (a stream until it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

log = logging.getLogger(__name__)

ShutdownHook = Callable[[], Awaitable[None]]


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._hurry = asyncio.Event()
        self._hooks: list[ShutdownHook] = []

    @property
    def inflight(self) -> int:
        return self._inflight

    def on_begin(self, hook: ShutdownHook) -> None:
        """Run ``hook`` when draining begins (e.g. gRPC health goes NOT_SERVING)."""
        self._hooks.append(hook)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one admitted request for the block."""
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self.draining:
                self._idle.set()

    async def begin(self) -> None:
        """Stop admitting work and say so to readiness probes; idempotent."""
        if self.draining:
            return
        self.draining = True
        if self._inflight == 0:
            self._idle.set()
        for hook in self._hooks:
            try:
                await hook()
            except Exception:  # a hook failing must not keep the process from stopping
                log.exception("shutdown hook failed")

    def hurry(self) -> None:
        """End the wait for in-flight requests now (a second SIGTERM / SIGINT)."""
        self._hurry.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no admitted request is left (True), at most ``timeout_s`` or until
        ``hurry()`` (False)."""
        if self._inflight == 0:
            return True
        idle = asyncio.ensure_future(self._idle.wait())
        hurried = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({idle, hurried}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            hurried.cancel()
        return self._inflight == 0
