"""A failure after a stream started is an ``{"error": ...}`` event the official client raises:
a gateway of its own (SmolLM2's folder hard-linked into its store) unloads the model under a
running stream without draining it, so the generation ends UNAVAILABLE mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.models.store import MANIFEST
from gateway.settings import RegistrySettings, Settings
from tests.conftest import GatewayThread, gateway_settings

SMOL = DEFAULT_GENERATION_MODEL
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def undrained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    own = tmp_path_factory.mktemp("openai-store")
    shutil.copytree(store / SMOL, own / SMOL, copy_function=os.link)  # the cached export comes along
    manifest = own / SMOL / MANIFEST
    data = json.loads(manifest.read_text())
    manifest.unlink()  # a hard link to the session store's manifest: write a new file
    manifest.write_text(json.dumps(data))
    base = gateway_settings(store)
    settings = Settings(
        model_store=own,
        server=base.server,
        runtime=base.runtime,
        limits=base.limits,
        registry=RegistrySettings(drain_timeout_s=0),
    )
    server = GatewayThread(settings)
    server.start()
    yield server
    server.stop()


def test_a_failure_mid_stream_is_an_error_event(undrained: GatewayThread) -> None:
    url = f"{undrained.gateway.addresses.http}/v1"
    with openai.OpenAI(base_url=url, api_key="dummy", max_retries=0, timeout=300) as client:
        stream = client.completions.create(
            model=SMOL, prompt="Once upon a time", max_tokens=200, temperature=0, stream=True
        )
        chunks = iter(stream)
        assert next(chunks).choices  # the generation is running
        registry = undrained.gateway.registry
        unload = asyncio.run_coroutine_threadsafe(registry.unload(SMOL, force=True), undrained.loop)
        with pytest.raises(openai.APIError) as err:
            for _ in chunks:
                pass
        assert unload.result(timeout=120)
        assert err.value.type == "service_unavailable_error" and "shutting down" in err.value.message
        again = client.completions.create(model=SMOL, prompt="One, two,", max_tokens=2, temperature=0)
        assert again.choices[0].text  # the next request loads the model again
