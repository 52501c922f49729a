"""The registry under the lfu-size policy, on real (small) models: it keeps the model asked for
most, never evicts a model in use and stays within its budget under concurrent traffic."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import pytest

from gateway.errors import ModelNotFound
from gateway.metrics import Metrics
from gateway.models.registry import LoadedModel, ModelRegistry
from gateway.models.store import ModelStore
from gateway.settings import RegistrySettings
from runtimes.base import ThreadSettings
from tests.models import CACHE, TINY_MODELS, build_tiny_store

A, B, C, D = TINY_MODELS


@pytest.fixture(scope="module")
def tiny_store() -> Path:
    return build_tiny_store(CACHE / "tiny-store")


async def model_size(store: Path) -> int:
    registry = make(store, 0, "lfu-size")
    size = (await registry.get(A)).size_bytes
    await registry.unload_all()
    return size


def make(store: Path, budget: int, policy: str) -> ModelRegistry:
    # sized by files, so what fits is exact (the four models are of equal size)
    settings = RegistrySettings(memory_budget_bytes=budget, measure_rss=False, eviction_policy=policy)
    return ModelRegistry(ModelStore(store), ThreadSettings(), settings, Metrics())


@pytest.mark.parametrize(("policy", "kept"), [("lfu-size", {A, C}), ("lru", {B, C})])
async def test_the_model_asked_for_most_stays(tiny_store: Path, policy: str, kept: set[str]) -> None:
    budget = int(2.5 * await model_size(tiny_store))
    registry = make(tiny_store, budget, policy)
    for _ in range(5):
        await registry.get(A)
    await registry.get(B)  # A is now the least recently used, but asked for five times
    await registry.get(C)
    assert registry.loaded_ids() == kept
    await registry.unload_all()


async def test_lfu_size_never_evicts_a_model_in_use_and_stays_within_the_budget(tiny_store: Path) -> None:
    size = await model_size(tiny_store)
    budget = int(2.5 * size)
    registry = make(tiny_store, budget, "lfu-size")
    for model_id in TINY_MODELS:  # learn every size first: later loads reserve exactly what they take
        await registry.get(model_id)
    evicted: list[tuple[str, int]] = []
    over_budget: list[int] = []

    async def on_unload(model: LoadedModel) -> None:
        evicted.append((model.model_id, model.inflight))
        if registry.loaded_bytes > budget:
            over_budget.append(registry.loaded_bytes)

    registry.on_unload(on_unload)
    rng = random.Random(3)  # noqa: S311 (a traffic mix, not a secret)
    served: list[str] = []

    async def client(requests: int) -> None:
        for _ in range(requests):
            model_id = rng.choices(TINY_MODELS, weights=(8, 4, 2, 1))[0]
            async with registry.use(model_id) as model:
                assert registry.is_loaded(model_id) and model.model_id == model_id
                if registry.loaded_bytes > budget:
                    over_budget.append(registry.loaded_bytes)
                await asyncio.sleep(0.005)  # in use while it sleeps
                assert registry.is_loaded(model_id)  # nothing evicted it meanwhile
            served.append(model_id)

    loads_before = registry.load_count
    await asyncio.wait_for(asyncio.gather(*(client(25) for _ in range(6))), 120)
    assert len(served) == 150 and over_budget == []
    assert evicted and all(inflight == 0 for _, inflight in evicted)  # only idle models went
    assert registry.load_count - loads_before == len(evicted) + len(registry.loaded_ids()) - 2
    assert registry.loaded_bytes <= budget
    await registry.unload_all()


async def test_the_policy_counts_only_models_the_store_holds(tmp_path: Path, tiny_store: Path) -> None:
    for model_id in (A, B):
        shutil.copytree(tiny_store / model_id, tmp_path / model_id)
    registry = make(tmp_path, 0, "lfu-size")
    for index in range(50):
        with pytest.raises(ModelNotFound):
            await registry.get(f"nope-{index}")
    await registry.get(A)
    await registry.get(B)
    assert registry._policy.tracked() == {A, B}  # nothing of the unknown ids
    shutil.rmtree(tmp_path / B)
    assert await registry.forget_missing() == [B]
    assert registry._policy.tracked() == {A}
    await registry.unload_all()
    registry.forget(A)
    assert registry._policy.tracked() == set()
