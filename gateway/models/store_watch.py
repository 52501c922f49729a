"""Watch the model store (inotify via watchfiles) and unload models whose folder went away
or whose manifest changed, within ~50 ms. New folders need no watch: every lookup reads the
store afresh, so a model added to the store is servable on its next request."""

from __future__ import annotations

import asyncio
import logging

from gateway.models.registry import ModelRegistry
from gateway.models.store import MANIFEST

log = logging.getLogger(__name__)


def _is_manifest(_change: object, path: str) -> bool:
    return path.endswith("/" + MANIFEST)


async def watch_store(registry: ModelRegistry, stop: asyncio.Event) -> None:
    from watchfiles import awatch

    root = registry.store.root
    root.mkdir(parents=True, exist_ok=True)
    async for _ in awatch(root, stop_event=stop, watch_filter=_is_manifest, debounce=50, step=10):
        try:
            gone = await registry.forget_missing()
        except Exception:
            log.exception("store watch: reconciling the registry failed")
            continue
        if gone:
            log.info("store changed: unloaded %s", ", ".join(gone))
