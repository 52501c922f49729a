"""API keys for the access tests: a keys file as an operator writes it (sha256 digests only) and
the keys in clear that the tests send."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.ops.access import ApiKeys
from gateway.settings import Settings
from tests.conftest import GatewayThread, gateway_settings

# tenant -> (key in clear, rights, limits, adapters)
TENANTS: dict[str, tuple[str, list[str], dict[str, int], str]] = {
    # infers and tunes; at most one request in flight, one stream, 16 new tokens
    "acme": ("acme-key-0123456789", ["infer", "tune"], {"max_inflight": 1, "max_new_tokens": 16}, "private"),
    # infers only; one generation stream at a time
    "beta": ("beta-key-0123456789", ["infer"], {"max_streams": 1}, "private"),
    # infers and tunes (no limits): to try another tenant's adapter name
    "gamma": ("gamma-key-0123456789", ["infer", "tune"], {}, "private"),
    # every right; the adapters its jobs publish are public
    "ops": ("ops-key-0123456789", ["infer", "tune", "manage"], {}, "public"),
}
KEYS = {tenant: entry[0] for tenant, entry in TENANTS.items()}
WRONG_KEY = "not-a-key-anyone-has"


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_document() -> dict[str, Any]:
    return {
        "keys": [
            {
                "tenant": tenant,
                "key_sha256": sha256(key),
                "rights": rights,
                "limits": limits,
                "adapters": adapters,
            }
            for tenant, (key, rights, limits, adapters) in TENANTS.items()
        ]
    }


def write_keys_file(folder: Path) -> Path:
    path = folder / "api-keys.json"
    path.write_text(json.dumps(keys_document(), indent=2))
    return path


def keyed(settings: Settings, keys_file: Path) -> Settings:
    """``settings`` with the keys file read as ``taskgate serve --api-keys-file`` reads it."""
    return dataclasses.replace(settings, api_keys=ApiKeys.load(keys_file))


def bearer(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[tenant]}"}


def grpc_key(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {KEYS[tenant]}"),)


@contextlib.contextmanager
def keyed_gateway_on(store: Path, folder: Path) -> Iterator[GatewayThread]:
    """A real gateway on ``store`` started with the keys file (written into ``folder``)."""
    server = GatewayThread(keyed(gateway_settings(store), write_keys_file(folder)))
    server.start()
    try:
        yield server
    finally:
        server.stop()
