"""Serving tuned adapters by name, on every task API that fits them.

A request's model id may name an adapter: ``name`` (its current version) or ``name@N``. Store
models win: an adapter never shadows a model id (tuning refuses such names). A resolved adapter
is served by a model the registry derives from the adapter's base model:

- generation adapters (LoRA, prompt tuning, multi-task prompt tuning) by the base's PyTorch twin
  ``<base>+peft`` (the base may be served by ONNX Runtime; PEFT needs torch), which holds many
  adapters at once and is told per sequence which one to apply (``NewSequence.adapter``);
- classifier adapters by a model of their own, ``<name>@<N>`` (the ``torch-classifier`` runtime:
  the encoder with the adapter merged in).

The adapter store tells this module of every publish and rollback as it happens
(``on_published``), so the new version serves on the next request: no restart, no polling.
Files are checked against their recorded sha256 once per version, before its first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from adapters.store import AdapterNotFound, AdapterStore, AdapterStoreError, AdapterVersion
from gateway.errors import InvalidInput, ModelNotFound, Unavailable
from gateway.metrics import Metrics
from gateway.models.registry import LoadedModel, ModelRegistry
from gateway.models.store import ModelManifest
from gateway.ops.access import Tenant
from gateway.tasks import Task
from gateway.tuning.cache import AdapterCache
from runtimes.causal_lm import CausalLMRuntime

log = logging.getLogger(__name__)

OWNER = "owner"  # extra of a version a tenant's job published: the tenant's name
PUBLIC = "public"  # extra: True when every tenant is served it
GENERATION_METHODS = frozenset({"lora", "prompt_tuning", "multitask_prompt_tuning"})
CLASSIFIER_METHOD = "classifier"
PEFT_HOST_SUFFIX = "+peft"
_HOST_SETTINGS = (
    "eos_token",
    "add_bos_token",
    "max_batch_size",
    "max_tokens_per_step",
    "max_queue",
    "max_context",
    "prefill_chunk_tokens",
)


@dataclass(frozen=True)
class AdapterTarget:
    version: AdapterVersion
    model_key: str  # the registry key of the model serving it
    adapter: str | None  # the engine's key of the adapter (generation); None for a classifier

    def prompt(self, text: str) -> str:
        """The request's text as the adapter was trained to see it (Caikit's verbalizer,
        ``{{input}}`` replaced by the text), as caikit-nlp does when it serves a prompt."""
        verbalizer = self.version.extra.get("verbalizer")
        if not isinstance(verbalizer, str) or "{{input}}" not in verbalizer:
            return text
        return verbalizer.replace("{{input}}", text)

    @property
    def tasks(self) -> frozenset[Task]:
        if self.version.method == CLASSIFIER_METHOD:
            return frozenset({Task.TEXT_CLASSIFICATION, Task.TOKENIZATION})
        return frozenset({Task.TEXT_GENERATION})


class AdapterServing:
    def __init__(
        self, registry: ModelRegistry, store: AdapterStore, cache_bytes: int, metrics: Metrics
    ) -> None:
        self.registry = registry
        self.store = store
        self.cache = AdapterCache(cache_bytes, metrics)
        self._metrics = metrics
        self._verified: set[str] = set()  # references whose files matched their sha256
        registry.on_unload(self._host_unloaded)

    async def _host_unloaded(self, model: LoadedModel) -> None:
        self.cache.forget_runtime(model.runtime)

    def names_adapter(self, model_id: str) -> bool:
        """Whether a request's model id should be looked up as an adapter."""
        if "@" in model_id:
            return True
        if self.registry.is_loaded(model_id):  # a loaded store model: no file look-up per request
            return False
        return not self.registry.store.exists(model_id) and self.store.exists(model_id)

    def visible_names(self, tenant: Tenant | None) -> list[str]:
        """The adapters whose current version ``tenant`` may use (reads files: call in a thread);
        another tenant's private adapter is left out of listings as it is NOT_FOUND when named."""
        names = []
        for name in self.store.names():
            try:
                version = self.store.get(name)
            except AdapterStoreError:  # unreadable or half-published: not servable by name
                continue
            if served_to(version, tenant):
                names.append(name)
        return names

    async def resolve(self, model_id: str, tenant: Tenant | None = None) -> AdapterTarget:
        """The adapter a model id names, with its serving model registered (NOT_FOUND if none).
        With ``tenant`` (the caller), a version another tenant published privately is NOT_FOUND,
        alike a missing one."""
        try:
            version = await asyncio.to_thread(self._verified_version, model_id)
        except AdapterNotFound as exc:
            raise ModelNotFound(str(exc)) from None
        except AdapterStoreError as exc:
            if "@" in model_id and "invalid" in str(exc):
                raise InvalidInput(str(exc)) from None
            raise Unavailable(f"adapter {model_id!r} cannot be served: {exc}") from None
        if not served_to(version, tenant):
            raise await self._unknown(model_id, version)
        try:
            base = await asyncio.to_thread(self.registry.store.manifest, version.base_model)
        except ModelNotFound:
            raise Unavailable(
                f"adapter {version.reference} tunes model {version.base_model!r}, which is not in the store"
            ) from None
        if version.method == CLASSIFIER_METHOD:
            return self._classifier(version, base)
        if version.method in GENERATION_METHODS:
            return self._generation(version, base)
        raise Unavailable(
            f"adapter {version.reference} has method {version.method!r}, which cannot be served"
        )

    @contextlib.asynccontextmanager
    async def hold(self, target: AdapterTarget, model: LoadedModel) -> AsyncIterator[None]:
        """For the block, the serving model holds the adapter (a generation adapter is loaded
        into its host once, within the adapter cache's budget, and not evicted while held)."""
        self._metrics.adapter_requests.labels(target.version.reference).inc()
        if target.adapter is None:
            yield
            return
        runtime = model.runtime
        if not isinstance(runtime, CausalLMRuntime):
            raise Unavailable(f"model {model.model_id!r} cannot hold adapters")
        load = functools.partial(
            runtime.load_adapter, target.adapter, target.version.folder, _task_index(target)
        )
        async with self.cache.hold(runtime, target.adapter, target.version.name, load):
            yield

    async def on_published(self, version: AdapterVersion) -> None:
        """A version was published or rolled back to: serve it from the next request on, loading
        its serving model and the adapter now so the first request does not wait for them."""
        target = await self.resolve(version.reference)
        async with self.registry.use(target.model_key) as model, self.hold(target, model):
            pass

    # -- helpers -------------------------------------------------------------------------
    async def _unknown(self, model_id: str, version: AdapterVersion) -> ModelNotFound:
        """What a name nobody published answers (another tenant's adapter must look the same):
        the model store's refusal for a plain name, the adapter store's for ``name@N``."""
        if "@" not in model_id:
            try:
                await asyncio.to_thread(self.registry.store.manifest, model_id)
            except ModelNotFound as exc:
                return exc
        return ModelNotFound(f"no version {version.version} of adapter {version.name!r}")

    def _verified_version(self, model_id: str) -> AdapterVersion:
        version = self.store.get(model_id)
        if version.reference not in self._verified:
            version.verify()
            self._verified.add(version.reference)
        return version

    def _classifier(self, version: AdapterVersion, base: ModelManifest) -> AdapterTarget:
        key = version.reference
        if self.registry.derived(key) is None:
            source = _hf_folder(base)
            manifest = dataclasses.replace(
                base,
                model_id=key,
                tasks=frozenset({Task.TEXT_CLASSIFICATION, Task.TOKENIZATION}),
                runtime="torch-classifier",
                source=source,
                settings={"adapter": str(version.folder)},
            )
            self.registry.add_derived(manifest, base)
        return AdapterTarget(version, key, None)

    def _generation(self, version: AdapterVersion, base: ModelManifest) -> AdapterTarget:
        if Task.TEXT_GENERATION not in base.tasks:
            raise Unavailable(
                f"adapter {version.reference}: base model {base.model_id!r} does not generate text"
            )
        key = base.model_id + PEFT_HOST_SUFFIX
        if self.registry.derived(key) is None:
            settings = {k: v for k, v in base.settings.items() if k in _HOST_SETTINGS}
            manifest = dataclasses.replace(base, model_id=key, runtime="torch-causal-lm", settings=settings)
            self.registry.add_derived(manifest, base)
        return AdapterTarget(version, key, version.reference)


def served_to(version: AdapterVersion, tenant: Tenant | None) -> bool:
    """Whether ``tenant`` may use ``version``: its owner (recorded at publish by a tenant's job)
    or anyone when it has no owner, is public, or API keys are off (no tenant)."""
    owner = version.extra.get(OWNER)
    if tenant is None or not owner:
        return True
    return bool(owner == tenant.name or version.extra.get(PUBLIC) is True)


def _task_index(target: AdapterTarget) -> int | None:
    """A multi-task prompt serves its first task (id 0; ``tuning.json`` maps task names to ids):
    the task APIs have no field naming a task, as Caikit's do not."""
    if target.version.method != "multitask_prompt_tuning":
        return None
    return 0


def _hf_folder(base: ModelManifest) -> Path:
    if not (base.source / "config.json").is_file():
        raise Unavailable(f"base model {base.model_id!r} has no Hugging Face folder to tune")
    return base.source
