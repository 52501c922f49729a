"""The one seam where a client's model name (OpenAI's ``model``) becomes what the core serves.

A name is ``name`` or ``name@N``. Resolution, in order:

1. a bare ``name`` that is a model of the store names that base model (no adapter);
2. otherwise, when an ``AdapterCatalog`` is plugged in, ``name`` / ``name@N`` names a tuned
   adapter (``name`` its current version) on the base model the catalog records for it;
3. anything else is MODEL_NOT_FOUND (404), including ``name@N`` while no catalog is plugged in.

Today no catalog is plugged in, so only base models resolve; the tuning work plugs the adapter
store in here (``ModelNameResolver(registry, adapters=...)``) and every door that resolves names
through this class learns adapters at once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import ModelNotFound
from gateway.registry import ModelRegistry
from gateway.store import is_model_id

_REFERENCE = re.compile(r"(?P<name>[^@]+)(?:@(?P<version>[1-9][0-9]{0,8}))?")
_SHOWN_CHARS = 140


@dataclass(frozen=True)
class ResolvedModel:
    base_model_id: str  # the store's model that runs the request
    adapter: str | None = None  # the tuned adapter on it ("name" or "name@N"); None: the base model


class AdapterCatalog(Protocol):
    """What the resolver needs of the adapter store (reads files: called in a thread)."""

    def base_model_of(self, reference: str) -> str | None:
        """The base model id of adapter ``name`` / ``name@N``; None when there is no such adapter."""
        ...


class ModelNameResolver:
    def __init__(self, registry: ModelRegistry, adapters: AdapterCatalog | None = None) -> None:
        self._registry = registry
        self._adapters = adapters

    async def resolve(self, name: str) -> ResolvedModel:
        match = _REFERENCE.fullmatch(name) if isinstance(name, str) else None
        if match is None or not is_model_id(match["name"]):
            raise ModelNotFound(f"the model {_shown(name)} does not exist")
        if match["version"] is None and await self._is_base_model(name):
            return ResolvedModel(name)
        if self._adapters is not None:
            base = await asyncio.to_thread(self._adapters.base_model_of, name)
            if base is not None:
                return ResolvedModel(base, adapter=name)
        if match["version"] is not None:
            raise ModelNotFound(
                f"the model {_shown(name)} does not exist (name@N names a version of a tuned adapter)"
            )
        raise ModelNotFound(f"the model {_shown(name)} does not exist")

    async def _is_base_model(self, model_id: str) -> bool:
        if model_id in self._registry.loaded_ids():
            return True
        try:
            await self._registry.model_status(model_id)  # reads the store in a thread
        except ModelNotFound:
            return False
        return True


def _shown(name: object) -> str:
    if isinstance(name, str) and len(name) <= _SHOWN_CHARS:
        return repr(name)
    return repr(name)[:_SHOWN_CHARS] + "..."
