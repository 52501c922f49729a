"""The one seam where a client's model name (OpenAI's ``model``) becomes what the core serves.

A name is ``name`` or ``name@N``. Resolution, in order:

1. a bare ``name`` that is a model of the store names that base model (no adapter);
2. otherwise, when an ``AdapterCatalog`` is plugged in, ``name`` / ``name@N`` names a tuned
   adapter (``name`` its current version) on the base model the catalog records for it;
3. anything else is MODEL_NOT_FOUND (404).

Store models win over adapters, as in the core (``gateway.tuning.serving``: tuning refuses an
adapter name that is a model id). The core serves an adapter by its name (``served_id``) on the
model it derives for it; this seam only decides whether a name exists and what it is.
``StoredAdapters`` is the catalog over the adapter store.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Protocol

from adapters.store import AdapterStore, AdapterStoreError
from gateway.errors import ModelNotFound
from gateway.models.registry import ModelRegistry
from gateway.models.store import is_model_id
from gateway.ops.access import Tenant, current_tenant
from gateway.tuning.serving import served_to

_REFERENCE = re.compile(r"(?P<name>[^@]+)(?:@(?P<version>[1-9][0-9]{0,8}))?")
_SHOWN_CHARS = 140


@dataclass(frozen=True)
class AdapterInfo:
    name: str  # as the client names it: "name" (the current version) or "name@N"
    base_model_id: str
    created: float  # when the version was published (epoch seconds)


@dataclass(frozen=True)
class ResolvedModel:
    base_model_id: str  # the store's model the request runs on
    adapter: AdapterInfo | None = None  # the tuned adapter on it; None: the base model itself

    @property
    def served_id(self) -> str:
        """The id the core serves the request under (an adapter's name, or the base model's)."""
        return self.adapter.name if self.adapter is not None else self.base_model_id


class AdapterCatalog(Protocol):
    """What the resolver needs of the adapter store (reads files: called in a thread)."""

    def lookup(self, name: str, tenant: Tenant | None) -> AdapterInfo | None:
        """Adapter ``name`` / ``name@N``; None when there is no such adapter or version, or
        ``tenant`` may not use it (another tenant's private adapter looks absent)."""
        ...

    def current(self, tenant: Tenant | None) -> list[AdapterInfo]:
        """Every adapter ``tenant`` may use, under its bare name (its current version)."""
        ...


class StoredAdapters:
    """``AdapterCatalog`` over the adapter store."""

    def __init__(self, store: AdapterStore) -> None:
        self._store = store

    def lookup(self, name: str, tenant: Tenant | None) -> AdapterInfo | None:
        try:
            version = self._store.get(name)
        except AdapterStoreError:  # none, no such version, or unreadable: not servable by name
            return None
        if not served_to(version, tenant):
            return None
        return AdapterInfo(name, version.base_model, version.created)

    def current(self, tenant: Tenant | None) -> list[AdapterInfo]:
        found = (self.lookup(name, tenant) for name in self._store.names())
        return [info for info in found if info is not None]


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
            info = await asyncio.to_thread(self._adapters.lookup, name, current_tenant())
            if info is not None:
                return ResolvedModel(info.base_model_id, info)
        if match["version"] is not None:
            raise ModelNotFound(
                f"the model {_shown(name)} does not exist (name@N names a version of a tuned adapter)"
            )
        raise ModelNotFound(f"the model {_shown(name)} does not exist")

    async def adapters(self) -> list[AdapterInfo]:
        """Every tuned adapter the caller's tenant may use, by its bare name (none when no catalog
        is plugged in)."""
        if self._adapters is None:
            return []
        return await asyncio.to_thread(self._adapters.current, current_tenant())

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
