"""Benchmarks never touch the user's model store: each runs on a store of its own (bench/stores.py).

Fast: imports the benchmark modules and writes manifests only; no model is loaded.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from bench.stores import prepare_store, user_stores
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL
from gateway.models.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]
USER_STORE = ROOT / "model-store"
# every benchmark that serves or loads a model, and its store
BENCHMARKS = (
    "bench.encoder_latency",
    "bench.encoder_throughput",
    "bench.generation",
    "bench.multiplex",
    "bench.adapters_mixed",
    "bench.tuning_beside_serving",
    "bench.overload",
    "bench.soak",
    "bench.quantized",
)


def _store(module: str) -> Path:
    return Path(importlib.import_module(module).STORE)


@pytest.mark.parametrize("module", BENCHMARKS)
def test_each_benchmark_has_its_own_git_ignored_store(module: str) -> None:
    store = _store(module).resolve()
    assert store not in user_stores() and not store.is_relative_to(USER_STORE.resolve())
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    top = store.relative_to(ROOT).parts[:2]  # bench/.stores or bench/.multiplex
    assert top[0] == "bench" and f"/{'/'.join(top)}/" in ignored


def test_no_two_benchmarks_share_a_store() -> None:
    stores = [_store(module).resolve() for module in BENCHMARKS]
    assert len(set(stores)) == len(stores)


def _bench_sources() -> list[Path]:
    """bench/'s own Python files (not the git-ignored venvs, stores and models in its dot folders)."""
    found = []
    for folder, subfolders, files in os.walk(ROOT / "bench"):
        subfolders[:] = [name for name in subfolders if not name.startswith((".", "__"))]
        found += [Path(folder) / name for name in files if name.endswith(".py")]
    return sorted(found)


def test_no_benchmark_names_the_user_store() -> None:
    sources = _bench_sources()
    assert ROOT / "bench" / "peers" / "smoke.py" in sources
    naming = [
        str(path.relative_to(ROOT))
        for path in sources
        if path.name != "stores.py" and '"model-store"' in path.read_text()
    ]
    assert naming == [], "only bench/stores.py may name ./model-store (to refuse it)"


def test_a_user_store_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit, match="user's model store"):
        prepare_store(USER_STORE)
    configured = tmp_path / "my-store"  # the store TASKGATE_MODEL_STORE names is a user's too
    monkeypatch.setenv("TASKGATE_MODEL_STORE", str(configured))
    with pytest.raises(SystemExit, match="user's model store"):
        prepare_store(configured)
    assert not configured.exists()


def test_a_bench_store_starts_from_the_default_manifests(tmp_path: Path) -> None:
    store = prepare_store(tmp_path / "bench-store")
    assert set(ModelStore(store).model_ids()) == {DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL}
    # a live setting a previous run left (batching off) does not carry over to the next run
    path = store / DEFAULT_EMBEDDING_MODEL / "manifest.json"
    left = json.loads(path.read_text())
    left["settings"]["batching"] = {"max_batch_size": 1}
    path.write_text(json.dumps(left))
    prepare_store(store)
    assert ModelStore(store).manifest(DEFAULT_EMBEDDING_MODEL).settings == {}
