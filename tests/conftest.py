"""Shared fixtures: the real test model store and a real gateway on loopback ports."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.app import Addresses, Gateway
from gateway.settings import RequestLimits, ServerSettings, Settings
from runtimes.base import ThreadSettings
from tests.models import CACHE, build_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEST_LIMITS = RequestLimits(max_inputs=64, max_text_chars=4000, max_inflight_per_model=64)
MAX_REQUEST_BYTES = 128 * 1024


@pytest.fixture(scope="session")
def store() -> Path:
    return build_store(CACHE / "test-store")


def gateway_settings(store: Path) -> Settings:
    return Settings(
        model_store=store,
        server=ServerSettings(
            host="127.0.0.1", grpc_port=0, http_port=0, max_request_bytes=MAX_REQUEST_BYTES
        ),
        runtime=ThreadSettings(intra_op_threads=1, inter_op_threads=1, model_workers=2),
        limits=TEST_LIMITS,
    )


class GatewayThread:
    """A real gateway serving on its own event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.gateway = Gateway(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> Addresses:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(timeout=300)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(grace_s=1), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="session")
def gateway(store: Path) -> Iterator[GatewayThread]:
    server = GatewayThread(gateway_settings(store))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def channel(gateway: GatewayThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.gateway.addresses.grpc) as chan:
        grpc.channel_ready_future(chan).result(timeout=30)
        yield chan


@pytest.fixture(scope="session")
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.gateway.addresses.http, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def tuning_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tuning_store import build_tuning_store

    return build_tuning_store(tmp_path_factory.mktemp("tuning-store"))


@pytest.fixture(scope="session")
def tuning_gateway(tuning_store: Path) -> Iterator[GatewayThread]:
    """A gateway over the tuning store (adapters and jobs start empty each session)."""
    server = GatewayThread(gateway_settings(tuning_store))
    server.start()
    yield server
    server.stop()
