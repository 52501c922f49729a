"""Each benchmark's own model store: never the user's ``./model-store``.

A benchmark writes the default models' manifests, exports and optimizes models in its store and
may change a live setting there (encoder_throughput's batching-off run sets max_batch_size 1
through the management API, and the gateway keeps that in the model's manifest). So each one
works in ``bench/.stores/<name>/`` (git-ignored), whose manifests point at the same package
sources as the default store. Its exports and conversions (cached by source fingerprint) stay
there between runs, so only a benchmark's first run pays for them, and its manifests are written
afresh at every start, so a setting a previous run changed never carries over. The multiplex
benchmark builds its own models and store under ``bench/.multiplex/`` (bench/multiplex_models.py).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORES = ROOT / "bench" / ".stores"
STORE_ENV = "TASKGATE_MODEL_STORE"  # gateway.settings.env_name("model-store")


def store_path(name: str) -> Path:
    """Where benchmark ``name`` keeps its model store (nothing is written)."""
    return STORES / name


def user_stores() -> set[Path]:
    """The stores a user's ``make run`` / ``taskgate serve`` uses: ./model-store (of the
    repository and of the working directory) and TASKGATE_MODEL_STORE when it is set."""
    candidates = [ROOT / "model-store", Path.cwd() / "model-store"]
    if configured := os.environ.get(STORE_ENV):
        candidates.append(Path(configured))
    return {path.resolve() for path in candidates}


def prepare_store(store: Path) -> Path:
    """``store`` with the default models' manifests written afresh (their exports are kept);
    a user's store is refused before anything is written."""
    if store.resolve() in user_stores():
        raise SystemExit(
            f"{store} is a user's model store: benchmarks rewrite manifests and change settings, "
            f"so each runs on a store of its own (by default under {STORES})"
        )
    from gateway.models.defaults import write_default_manifests

    write_default_manifests(store)
    return store
