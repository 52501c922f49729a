"""bench/traffic.py's REST client against a real gateway: like a real client it keeps a bounded
keep-alive pool (requests beyond it wait for a free connection instead of opening more, which
overflowed the gateway's accept queue under 10x overload), and an open-loop request's latency
is timed from when it was due, so waiting for a connection is counted, not hidden."""

from __future__ import annotations

import asyncio
import time

from bench.traffic import REST, RestClient, StatusHttpClient, open_client
from tests.conftest import GatewayThread


def test_the_pool_never_opens_more_than_its_bound_and_every_request_is_answered(
    gateway: GatewayThread,
) -> None:
    async def run() -> tuple[list[str], StatusHttpClient]:
        http = StatusHttpClient(gateway.gateway.addresses.http, max_connections=2)
        try:
            client = RestClient(http, tokens=4)
            outcomes = await asyncio.gather(*(client.request("embed") for _ in range(12)))
        finally:
            await http.close()
        return [o.kind for o in outcomes], http

    kinds, http = asyncio.run(run())
    assert kinds == ["ok"] * 12
    assert http.most_open <= 2 and 1 <= http.opened <= 2  # 12 at once over at most 2 connections


def test_latency_is_timed_from_when_the_request_was_due(gateway: GatewayThread) -> None:
    async def run() -> tuple[float, float]:
        async with open_client(REST, gateway.gateway.addresses.http) as client:
            now = await client.request("embed")
            late = await client.request("embed", due=time.perf_counter() - 2.0)  # due 2 s ago
        return now.latency_ms, late.latency_ms

    now_ms, late_ms = asyncio.run(run())
    assert now_ms > 0 and late_ms >= 2000.0
