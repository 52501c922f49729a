"""Event-loop lag: how late the loop wakes a timer. Every request on the loop waits at least
that long, so anything that blocks it (file walks, tokenizer builds, thread joins) shows here."""

from __future__ import annotations

import asyncio
import time

from gateway.metrics import Metrics

INTERVAL_S = 0.05


async def watch_loop_lag(metrics: Metrics, stop: asyncio.Event, interval_s: float = INTERVAL_S) -> None:
    worst = 0.0
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(interval_s)
        lag = max(0.0, time.monotonic() - started - interval_s)
        metrics.loop_lag.observe(lag)
        if lag > worst:
            worst = lag
            metrics.loop_lag_max.set(worst)
