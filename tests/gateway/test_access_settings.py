"""The API keys document as ``taskgate serve`` reads it (--api-keys-file JSON or TOML, --api-keys /
TASKGATE_API_KEYS inline): tenants, rights, limits; every mistake refused at start-up with the
reason (the process exits 2, no trace); keys never stored in clear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.access import Right, TenantLimits
from gateway.settings import parse
from tests.gateway.access_keys import KEYS, keys_document, sha256
from tests.served import ROOT

DIGEST = sha256("k")


def _entry(**fields: Any) -> dict[str, Any]:
    return {"tenant": "t", "key_sha256": DIGEST, **fields}


def test_the_document_maps_keys_to_tenants_with_rights_limits_and_visibility() -> None:
    keys = parse(["--api-keys", json.dumps(keys_document())]).api_keys
    assert keys is not None
    acme = keys.authenticate(KEYS["acme"])
    assert acme is not None and acme.name == "acme" and acme.rights == {Right.INFER, Right.TUNE}
    assert acme.limits == TenantLimits(max_inflight=1, max_new_tokens=16) and not acme.public_adapters
    ops = keys.authenticate(KEYS["ops"])
    assert ops is not None and ops.rights == set(Right) and ops.public_adapters
    assert keys.authenticate("nope") is None and keys.authenticate("") is None
    assert keys.authenticate(sha256(KEYS["acme"])) is None  # the digest is not the key


def test_toml_file_environment_and_rotation(tmp_path: Path) -> None:
    toml = tmp_path / "keys.toml"
    toml.write_text(
        f'[[keys]]\ntenant = "acme"\nkey_sha256 = ["{sha256("old")}", "{sha256("new")}"]\n'
        'rights = ["infer"]\nlimits = { max_streams = 2 }\n'
    )
    keys = parse(["--api-keys-file", str(toml)]).api_keys
    assert keys is not None
    old, new = keys.authenticate("old"), keys.authenticate("new")
    assert old is not None and old == new and old.limits.max_streams == 2  # two keys, one tenant
    from_env = parse([], {"TASKGATE_API_KEYS": json.dumps({"keys": [_entry()]})}).api_keys
    assert from_env is not None and from_env.authenticate("k") is not None
    assert parse([], {}).api_keys is None  # no keys: no authentication


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"keys": []}, "holds no keys"),
        ({"key": []}, "unknown field 'key'"),
        ([_entry(key="k")], "unknown field 'key'"),
        ([_entry(key_sha256="k")], "64 hex digits; the key itself is never stored"),
        ([_entry(tenant="../x")], "'tenant' must be"),
        ([_entry(rights=["admin"])], "'rights' may hold infer, tune and manage"),
        ([_entry(limits={"max_inflight": 0})], "max_inflight must be a whole number of at least 1"),
        ([_entry(limits={"max_tokens": 5})], "unknown limit 'max_tokens'"),
        ([_entry(adapters="shared")], "'adapters' must be 'private' or 'public'"),
        ([_entry(), _entry()], "tenant 't' appears twice"),
        ([_entry(), _entry(tenant="u")], "a key_sha256 appears twice"),
        ("[", "not JSON"),
    ],
)
def test_mistakes_are_refused_with_the_reason(document: Any, fragment: str) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(ValueError, match="API keys") as refused:
        parse(["--api-keys", text])
    assert fragment in str(refused.value)


def test_taskgate_serve_exits_2_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "keys.json"
    bad.write_text(json.dumps([_entry(rights=["root"])]))
    both = ["--api-keys-file", str(bad), "--api-keys", "{}"]
    for args, reason in (
        (["--api-keys-file", str(bad)], "'rights' may hold infer, tune and manage"),
        (["--api-keys-file", str(tmp_path / "missing.json")], "cannot read the API keys file"),
        (both, "not both"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(tmp_path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and reason in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
