"""A gateway of its own for each fuzz module, on a copy of the test store.

The fuzzers call everything a client can, deploys and undeploys included, with the real model
ids among their choices: the session's store (a cache kept between runs) and the session's
gateway must not see that. The copy hard-links the large files (exports, weights), so the
models load from the exports the session's gateway made.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.defaults import DEFAULT_GENERATION_MODEL
from tests.conftest import GatewayThread, gateway_settings
from tests.models import CLASSIFIER, MINILM, MISSING_SOURCE, SHORT_POSITIONS

SERVED_MODELS = (MINILM, CLASSIFIER, SHORT_POSITIONS, DEFAULT_GENERATION_MODEL)
MODEL_IDS = (*SERVED_MODELS, MISSING_SOURCE)
GENERATION_MODEL = DEFAULT_GENERATION_MODEL
_LINK_FROM_BYTES = 1024 * 1024


def _link_or_copy(source: str, target: str) -> None:
    """Large files are linked (read-only to the runtimes); small ones, manifests, are copied."""
    if os.path.getsize(source) >= _LINK_FROM_BYTES:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def copy_store(store: Path, target: Path) -> Path:
    shutil.copytree(store, target, copy_function=_link_or_copy)
    return target


@pytest.fixture(scope="module")
def fuzz_gateway(
    store: Path, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    # Exports and conversions happen in the session store first (on a fresh clone the first load
    # exports; every later test reuses it), then the copy links them.
    for model_id in SERVED_MODELS:
        response = http.post(f"/management/models/{model_id}/load", timeout=600)
        assert response.status_code == 200 and response.json()["state"] == "LOADED", response.text
    copy = copy_store(store, tmp_path_factory.mktemp("fuzz") / "store")
    server = GatewayThread(gateway_settings(copy))
    server.start()
    yield server
    server.stop()
