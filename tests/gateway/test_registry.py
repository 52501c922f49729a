"""The multiplexer on real (small) models: lazy loads, single-flight, LRU under a budget,
in-flight protection, pinning, failure isolation, hot add / removal of store folders."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from gateway.errors import ModelNotFound, Unavailable
from gateway.metrics import Metrics
from gateway.models.registry import ModelRegistry
from gateway.models.store import ModelStore
from gateway.models.store_watch import watch_store
from gateway.settings import RegistrySettings
from runtimes.base import ThreadSettings
from tests.models import CACHE, SOURCES, TINY_MODELS, _write_manifest, build_tiny_store

A, B, C, D = TINY_MODELS


@pytest.fixture(scope="module")
def tiny_store() -> Path:
    return build_tiny_store(CACHE / "tiny-store")


@pytest.fixture(scope="module")
def model_bytes(tiny_store: Path) -> int:
    registry = ModelRegistry(ModelStore(tiny_store), ThreadSettings(), RegistrySettings(measure_rss=False))
    size = asyncio.run(_loaded_size(registry))
    return size


async def _loaded_size(registry: ModelRegistry) -> int:
    model = await registry.get(A)
    await registry.unload_all()
    return model.size_bytes


def make(store: Path, budget: int = 0, **kwargs: float | str) -> ModelRegistry:
    # sized by files here, so eviction order is exact; measuring resident memory is tested apart
    settings = RegistrySettings(memory_budget_bytes=budget, measure_rss=False, **kwargs)  # type: ignore[arg-type]
    return ModelRegistry(ModelStore(store), ThreadSettings(), settings, Metrics())


def loaded(registry: ModelRegistry) -> set[str]:
    return registry.loaded_ids()


async def test_lazy_load_and_single_flight(tiny_store: Path) -> None:
    registry = make(tiny_store)
    assert loaded(registry) == set()
    models = await asyncio.gather(*(registry.get(A) for _ in range(8)))
    assert registry.load_count == 1 and all(m is models[0] for m in models)
    status = await registry.model_status(A)
    assert status.state == "LOADED" and status.size_bytes > 0 and status.misses >= 1
    await registry.unload_all()


async def test_lru_eviction_under_the_budget(tiny_store: Path, model_bytes: int) -> None:
    registry = make(tiny_store, budget=int(2.5 * model_bytes), eviction_policy="lru")
    await registry.get(A)
    await registry.get(B)
    await registry.get(A)  # A is now more recently used than B
    await registry.get(C)
    assert loaded(registry) == {A, C}
    assert registry.loaded_bytes <= int(2.5 * model_bytes)
    await registry.get(D)
    assert loaded(registry) == {C, D}
    await registry.unload_all()


async def test_models_in_use_are_never_evicted(tiny_store: Path, model_bytes: int) -> None:
    registry = make(tiny_store, budget=int(1.5 * model_bytes), room_wait_s=0.2)
    async with registry.use(A):
        with pytest.raises(Unavailable, match="no room") as refused:
            await registry.get(B)
        assert refused.value.retry_after_s
        assert loaded(registry) == {A}
    await registry.get(B)  # A is idle now, so it makes room
    assert loaded(registry) == {B}
    await registry.unload_all()


async def test_a_load_waits_for_a_busy_model_to_go_idle(tiny_store: Path, model_bytes: int) -> None:
    registry = make(tiny_store, budget=int(1.5 * model_bytes), room_wait_s=10)
    await registry.get(A)
    release = asyncio.Event()

    async def hold_a() -> None:
        async with registry.use(A):
            await release.wait()

    holder = asyncio.create_task(hold_a())
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(registry.get(B))
    await asyncio.sleep(0.2)
    assert not waiting.done() and loaded(registry) == {A}  # A is busy: B waits for room
    release.set()
    await holder
    assert (await asyncio.wait_for(waiting, 5)).model_id == B
    assert loaded(registry) == {B}
    await registry.unload_all()


async def test_a_model_larger_than_the_budget_is_refused_at_once(tiny_store: Path, model_bytes: int) -> None:
    registry = make(tiny_store, budget=model_bytes // 2, room_wait_s=30)
    # the whole-budget refusal, not the "no room" one that comes after waiting room_wait_s for room,
    # and before the load ran
    with pytest.raises(Unavailable, match="more than the whole memory budget"):
        await registry.get(A)
    assert registry.load_count == 0 and loaded(registry) == set()


async def test_pinned_models_stay(tiny_store: Path, model_bytes: int) -> None:
    registry = make(tiny_store, budget=int(2.5 * model_bytes))
    registry.pin(A, True)
    await registry.get(A)
    await registry.get(B)
    await registry.get(C)  # A is the least recently used, but pinned: B goes
    assert loaded(registry) == {A, C}
    assert (await registry.model_status(A)).pinned
    registry.pin(A, False)
    await registry.get(D)
    assert loaded(registry) == {C, D}
    with pytest.raises(ModelNotFound):
        registry.pin("no-such-model", True)
    await registry.unload_all()


async def test_failed_load_is_isolated_reported_and_retried_with_backoff(
    tmp_path: Path, tiny_store: Path
) -> None:
    shutil.copytree(tiny_store / A, tmp_path / A)
    source = tmp_path / "later-source"
    _write_manifest(tmp_path, "broken", ["embedding"], source, {})
    registry = make(tmp_path, retry_initial_s=0.3)
    with pytest.raises(Unavailable, match="failed to load"):
        await registry.get("broken")
    status = await registry.model_status("broken")
    assert status.state == "FAILED" and status.reason
    with pytest.raises(Unavailable) as backoff:  # inside the back-off: no new attempt
        await registry.get("broken")
    assert 0 < (backoff.value.retry_after_s or 0) <= 0.3
    assert registry.load_count == 0
    assert (await registry.get(A)).size_bytes > 0  # the others are unaffected
    shutil.copytree(SOURCES / "tiny-32-1", source)  # the operator fixes the source
    await asyncio.sleep(0.35)
    assert (await registry.get("broken")).model_id == "broken"
    assert (await registry.model_status("broken")).state == "LOADED"
    await registry.unload_all()


async def test_a_request_waits_for_a_load_only_until_its_deadline(tmp_path: Path) -> None:
    _write_manifest(tmp_path, "fresh", ["embedding"], SOURCES / "tiny-32-2", {})  # needs an export
    registry = make(tmp_path)
    with pytest.raises(Unavailable, match="still loading"):
        await registry.get("fresh", deadline=time.monotonic() + 0.01)
    model = await registry.get("fresh")  # the load went on and finishes
    assert model.model_id == "fresh" and registry.load_count == 1
    await registry.unload_all()


async def test_hot_add_and_removal_of_store_folders(tmp_path: Path, tiny_store: Path) -> None:
    registry = make(tmp_path)
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(watch_store(registry, stop))
    try:
        with pytest.raises(ModelNotFound):
            await registry.get(B)
        shutil.copytree(tiny_store / B, tmp_path / B)  # added while serving: no restart
        assert (await registry.get(B)).model_id == B
        await asyncio.sleep(0.2)  # let the watcher start before the removal
        shutil.rmtree(tmp_path / B)
        deadline = time.monotonic() + 5
        while registry.loaded_bytes:
            assert time.monotonic() < deadline, "the removed model was not unloaded"
            await asyncio.sleep(0.02)
        with pytest.raises(ModelNotFound):
            await registry.get(B)
    finally:
        stop.set()
        await watcher
    await registry.unload_all()


async def test_measured_sizes_cover_at_least_the_files(tiny_store: Path, model_bytes: int) -> None:
    registry = ModelRegistry(ModelStore(tiny_store), ThreadSettings(), RegistrySettings(measure_rss=True))
    first = await registry.get(A)
    second = await registry.get(B)
    assert first.size_bytes >= model_bytes and second.size_bytes >= model_bytes
    assert registry.loaded_bytes == first.size_bytes + second.size_bytes
    await registry.unload_all()


@pytest.mark.parametrize(
    "bad", [{"batching": {"max_batch_size": "8"}}, {"batching": {"max_batch_size": 2.5}}]
)
async def test_a_hand_written_bad_setting_fails_the_load_with_its_name(tmp_path: Path, bad: dict) -> None:
    _write_manifest(tmp_path, "typo", ["embedding"], SOURCES / "tiny-32-1", bad)
    registry = make(tmp_path)
    with pytest.raises(Unavailable, match="max_batch_size must be an integer"):
        await asyncio.wait_for(registry.get("typo"), 60)  # refused at load, not a hang at batch time
    assert (await registry.model_status("typo")).state == "FAILED"


async def test_unknown_ids_record_nothing(tiny_store: Path) -> None:
    metrics = Metrics()
    registry = ModelRegistry(ModelStore(tiny_store), ThreadSettings(), RegistrySettings(), metrics)
    for index in range(100):
        with pytest.raises(ModelNotFound):
            await registry.get(f"nope-{index}")
    assert b"nope-" not in metrics.exposition()
    assert not registry._misses and not registry._failed


async def test_forgetting_a_model_removes_its_series(tiny_store: Path) -> None:
    metrics = Metrics()
    registry = ModelRegistry(ModelStore(tiny_store), ThreadSettings(), RegistrySettings(), metrics)
    await registry.get(A)
    assert f'model="{A}"'.encode() in metrics.exposition()
    await registry.unload_all()
    registry.forget(A)
    assert f'model="{A}"'.encode() not in metrics.exposition()
