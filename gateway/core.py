"""The protocol-neutral core: validates task inputs, runs them on the model, shapes results.

The gRPC and HTTP frontends both call ``TaskService``; neither holds task logic, and nothing
here knows about a transport. Model work runs in a small thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway import __version__
from gateway.batcher import BatchSettings
from gateway.encoding import EncoderBatchers, bucket, truncation
from gateway.errors import (
    DeadlineExceeded,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    TaskgateError,
    TaskNotSupported,
    internal,
)
from gateway.generation.chat import ChatMessage, ChatPrompt, render_chat_prompt
from gateway.generation.params import GenerationParams
from gateway.generation.results import GenerationOutput, StreamChunk
from gateway.generation.service import GenerationService
from gateway.metrics import Metrics
from gateway.models.registry import LoadedModel, ModelRegistry
from gateway.ops.access import Tenant, TenantCounter, check_new_tokens
from gateway.ops.request_log import note_model, note_task
from gateway.results import (
    ClassificationOutput,
    EmbeddingOutput,
    Producer,
    RerankOutput,
    RerankScore,
    SimilarityOutput,
    TokenizationOutput,
    TokenOutput,
)
from gateway.settings import RequestLimits
from gateway.tasks import Task
from gateway.tuning.serving import AdapterServing, AdapterTarget
from runtimes.base import EncoderRuntime, ThreadSettings, TokenRow
from runtimes.causal_lm import CausalLMRuntime

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 4096  # tokenize smaller requests on the event loop, larger in a thread


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    deadline: float | None = None  # time.monotonic() seconds; None: no deadline
    tenant: Tenant | None = None  # the caller's tenant (None: no API keys); its adapters, limits


# a row carries its request's deadline: a batch is bounded by the latest of its rows' (runtimes
# that wait on I/O bound their call by it; the batcher answers each row by its own deadline)
class TaskService:
    def __init__(
        self,
        registry: ModelRegistry,
        limits: RequestLimits,
        threads: ThreadSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics or Metrics()
        self._limits = limits
        self._threads = threads
        self._prep_executor = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self._inflight: dict[str, int] = {}
        self._streams = TenantCounter("generation streams open", lambda limits: limits.max_streams)
        self._encoders = EncoderBatchers(threads, self.metrics)
        self.generation = GenerationService()
        self.adapters: AdapterServing | None = None  # set when an adapter store serves tuned adapters
        registry.on_unload(self._release)

    async def close(self) -> None:
        await self._encoders.close()
        await asyncio.to_thread(self.generation.close)
        self._prep_executor.shutdown(wait=False, cancel_futures=True)

    async def _release(self, model: LoadedModel) -> None:
        """Before a drained model unloads: its batcher and scheduler go. Requests still there
        (the drain timed out) end UNAVAILABLE; running batches finish first. The scheduler
        thread is joined off the event loop."""
        reason = f"model {model.model_id!r} was unloaded while the request waited; retry"
        await self._encoders.release(model, reason)
        await self.generation.release(model.runtime)

    # -- batching settings (management) --------------------------------------------------
    async def batching(self, model_id: str) -> BatchSettings:
        return self._encoders.settings(await self.registry.get(model_id))

    async def set_batching(self, model_id: str, values: dict[str, Any], *, persist: bool) -> BatchSettings:
        """Validate and apply to the live batcher; with ``persist`` also write it into the model's
        manifest (it then survives a reload and a restart), else it lasts while the model is loaded."""
        current = (await self.batching(model_id)).as_dict()
        settings = BatchSettings.from_mapping({**current, **values})
        if persist:
            await asyncio.to_thread(self.registry.update_settings, model_id, {"batching": settings.as_dict()})
        self._encoders.update(await self.registry.get(model_id), settings)
        return settings

    # -- tasks ---------------------------------------------------------------------------
    async def embed(
        self, ctx: RequestContext, model_id: str, texts: Sequence[str], truncate: int | None
    ) -> EmbeddingOutput:
        note_task(Task.EMBEDDING)
        self._check_texts(texts, "text")
        async with self._encoder(ctx, model_id, Task.EMBEDDING) as (model, encoder):
            vectors, tokens = await self._encode(ctx, model, encoder, list(texts), truncate)
            return EmbeddingOutput(list(vectors), tokens, _producer(model))

    async def similarity(
        self,
        ctx: RequestContext,
        model_id: str,
        sources: Sequence[str],
        sentences: Sequence[str],
        truncate: int | None,
    ) -> SimilarityOutput:
        note_task(Task.SENTENCE_SIMILARITY)
        self._check_texts(sources, "source_sentence")
        self._check_texts(sentences, "sentences")
        async with self._encoder(ctx, model_id, Task.SENTENCE_SIMILARITY) as (model, encoder):
            vectors, tokens = await self._encode(ctx, model, encoder, [*sources, *sentences], truncate)
            scores = vectors[: len(sources)] @ vectors[len(sources) :].T
            return SimilarityOutput([row.tolist() for row in scores], tokens, _producer(model))

    async def rerank(
        self,
        ctx: RequestContext,
        model_id: str,
        queries: Sequence[str],
        documents: Sequence[dict[str, Any]],
        *,
        top_n: int | None,
        truncate: int | None,
        return_documents: bool,
        return_query: bool,
        return_text: bool,
    ) -> RerankOutput:
        note_task(Task.RERANK)
        self._check_texts(queries, "query")
        texts = [_document_text(index, doc) for index, doc in enumerate(documents)]
        self._check_texts(texts, "documents")
        if top_n is not None and top_n < 0:
            raise InvalidInput(f"top_n must not be negative, got {top_n}")
        async with self._encoder(ctx, model_id, Task.RERANK) as (model, encoder):
            vectors, tokens = await self._encode(ctx, model, encoder, [*queries, *texts], truncate)
            scores = vectors[: len(queries)] @ vectors[len(queries) :].T
            keep = len(texts) if not top_n else min(top_n, len(texts))
            ranked = []
            for row in scores:
                order = np.argsort(-row, kind="stable")[:keep]
                ranked.append(
                    [
                        RerankScore(
                            index=int(i),
                            score=float(row[i]),
                            text=texts[i] if return_text else None,
                            document=dict(documents[i]) if return_documents else None,
                        )
                        for i in order
                    ]
                )
            shown = [q if return_query else None for q in queries]
            return RerankOutput(shown, ranked, tokens, _producer(model))

    async def tokenize(self, ctx: RequestContext, model_id: str, text: str) -> TokenizationOutput:
        note_task(Task.TOKENIZATION)
        self._check_texts([text], "text")
        async with self._encoder(ctx, model_id, Task.TOKENIZATION) as (model, encoder):
            tokens = await self._call(ctx, model.model_id, encoder.tokens, text)
            out = [TokenOutput(t.text, t.start, t.end) for t in tokens]
            return TokenizationOutput(out, len(out))

    async def classify(
        self, ctx: RequestContext, model_id: str, text: str, truncate: int | None = None
    ) -> ClassificationOutput:
        note_task(Task.TEXT_CLASSIFICATION)
        self._check_texts([text], "text")
        async with self._encoder(ctx, model_id, Task.TEXT_CLASSIFICATION) as (model, encoder):
            probabilities, _ = await self._encode(ctx, model, encoder, [text], truncate)
            row = probabilities[0]
            order = np.argsort(-row, kind="stable")
            labels = [(encoder.labels[i], float(row[i])) for i in order]
            return ClassificationOutput(labels, _producer(model))

    async def generate(
        self, ctx: RequestContext, model_id: str, text: str, params: GenerationParams
    ) -> GenerationOutput:
        note_task(Task.TEXT_GENERATION)
        self._check_generation(ctx, text, params)
        ctx = dataclasses.replace(ctx, deadline=self._deadline(ctx))
        async with self._served(ctx, model_id, Task.TEXT_GENERATION) as (model, target):
            if target is None:
                return await self.generation.generate(ctx, model, text, params)
            out = await self.generation.generate(ctx, model, target.prompt(text), params, target.adapter)
            self.metrics.adapter_tokens.labels(target.version.reference).inc(out.generated_tokens)
            return out

    async def chat_prompt(
        self, ctx: RequestContext, model_id: str, messages: Sequence[ChatMessage]
    ) -> ChatPrompt:
        """Chat messages as a prompt in the model's own template (then ``generate`` it)."""
        async with self._model(ctx, model_id, Task.TEXT_GENERATION) as model:
            if not isinstance(model.runtime, CausalLMRuntime):
                raise TaskNotSupported(f"model {model_id!r} is not a causal language model")
            cap = self._limits.max_new_tokens
            return await self._call(ctx, model_id, render_chat_prompt, model.runtime, model_id, messages, cap)

    async def generate_stream(
        self, ctx: RequestContext, model_id: str, text: str, params: GenerationParams
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream chunks; the model stays in use (not evictable) until the stream ends."""
        note_task(Task.TEXT_GENERATION)
        self._check_generation(ctx, text, params)
        ctx = dataclasses.replace(ctx, deadline=self._deadline(ctx))
        with self._streams.hold(ctx.tenant):
            async with self._served(ctx, model_id, Task.TEXT_GENERATION) as (model, target):
                if target is not None:
                    text, adapter = target.prompt(text), target.adapter
                else:
                    adapter = None
                stream = await self.generation.stream(ctx, model, text, params, adapter)
                generated = 0
                try:
                    async for chunk in stream:
                        generated = chunk.details.generated_tokens if chunk.details else generated
                        yield chunk
                finally:
                    await stream.aclose()
                    if target is not None:
                        self.metrics.adapter_tokens.labels(target.version.reference).inc(generated)

    # -- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _admitted(self, model_id: str) -> Iterator[None]:
        """Bound the requests in flight per model; beyond the bound, shed at once."""
        count = self._inflight.get(model_id, 0)
        limit = self._limits.max_inflight_per_model
        if count >= limit:
            raise Overloaded(
                f"model {model_id!r} already has {count} requests in flight (limit {limit}); retry shortly",
                retry_after_s=1.0,
            )
        self._inflight[model_id] = count + 1
        try:
            yield
        finally:
            remaining = self._inflight[model_id] - 1  # others may have come and gone meanwhile
            if remaining:
                self._inflight[model_id] = remaining
            else:  # no entry for an idle model: the map holds only models with work
                del self._inflight[model_id]

    def _check_generation(self, ctx: RequestContext, text: str, params: GenerationParams) -> None:
        self._check_texts([text], "text")
        cap = self._limits.max_new_tokens
        if params.max_new_tokens > cap:
            raise InvalidInput(
                f"max_new_tokens {params.max_new_tokens} is more than this server allows ({cap})"
            )
        check_new_tokens(ctx.tenant, params.max_new_tokens)

    def _check_texts(self, texts: Sequence[str], name: str) -> None:
        if len(texts) == 0:
            raise InvalidInput(f"'{name}' must hold at least one text")
        if len(texts) > self._limits.max_inputs:
            raise PayloadTooLarge(
                f"'{name}' holds {len(texts)} texts; at most {self._limits.max_inputs} per request"
            )
        for index, text in enumerate(texts):
            where = f"'{name}'" if len(texts) == 1 else f"'{name}'[{index}]"
            if not isinstance(text, str):
                raise InvalidInput(f"{where} must be a string")
            if not text.strip():
                raise InvalidInput(f"{where} is empty")
            if len(text) > self._limits.max_text_chars:
                raise PayloadTooLarge(
                    f"{where} has {len(text)} characters; at most {self._limits.max_text_chars}"
                )

    @contextlib.asynccontextmanager
    async def _model(self, ctx: RequestContext, model_id: str, task: Task) -> AsyncIterator[LoadedModel]:
        """The model for ``task``, held in use (not evictable) for the block."""
        async with self._served(ctx, model_id, task) as (model, _):
            yield model

    @contextlib.asynccontextmanager
    async def _served(
        self, ctx: RequestContext, model_id: str, task: Task
    ) -> AsyncIterator[tuple[LoadedModel, AdapterTarget | None]]:
        """The model serving ``model_id`` for ``task`` and the adapter to apply (None: none).
        An adapter name (``name`` or ``name@N``) is served by the model derived for it."""
        adapters = self.adapters
        if adapters is not None and adapters.names_adapter(model_id):
            target = await adapters.resolve(model_id, ctx.tenant)
            if task not in target.tasks:
                served = ", ".join(sorted(t.value for t in target.tasks))
                raise TaskNotSupported(
                    f"adapter {model_id!r} does not serve the {task.value} task; it serves: {served}"
                )
            use = self.registry.use(target.model_key, self._deadline(ctx))
            async with use as model, adapters.hold(target, model):
                note_model(target.version.base_model, target.version.reference)
                yield model, target
            return
        async with self.registry.use(model_id, self._deadline(ctx)) as model:
            note_model(model.model_id)
            if task not in model.manifest.tasks:
                served = ", ".join(sorted(t.value for t in model.manifest.tasks))
                raise TaskNotSupported(
                    f"model {model_id!r} does not serve the {task.value} task; it serves: {served}"
                )
            yield model, None

    @contextlib.asynccontextmanager
    async def _encoder(
        self, ctx: RequestContext, model_id: str, task: Task
    ) -> AsyncIterator[tuple[LoadedModel, EncoderRuntime]]:
        async with self._model(ctx, model_id, task) as model:
            if not isinstance(model.runtime, EncoderRuntime):
                raise TaskNotSupported(f"model {model_id!r} is not an encoder; it cannot serve {task.value}")
            yield model, model.runtime

    async def _encode(
        self,
        ctx: RequestContext,
        model: LoadedModel,
        encoder: EncoderRuntime,
        texts: list[str],
        truncate: int | None,
    ) -> tuple[np.ndarray, int]:
        limit = truncation(truncate, encoder.max_tokens)
        return await self._batched(ctx, model, encoder, texts, limit)

    async def _batched(
        self,
        ctx: RequestContext,
        model: LoadedModel,
        encoder: EncoderRuntime,
        texts: list[str],
        limit: int | None,
    ) -> tuple[np.ndarray, int]:
        """Tokenize into rows, run them through the model's batcher, merge back in order."""
        deadline = self._deadline(ctx)
        small = sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS
        if small and encoder.tokenizer_ready(limit):  # a new limit builds a tokenizer: not on the loop
            rows = encoder.tokenize_rows(texts, limit)
        else:
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(self._prep_executor, encoder.tokenize_rows, texts, limit)
        for row in rows:
            if isinstance(row, ValueError):
                raise InvalidInput(str(row))
        token_rows = [row for row in rows if isinstance(row, TokenRow)]
        batcher = self._encoders.batcher(model, encoder)
        with self._admitted(model.model_id):
            try:
                outputs = await batcher.submit(
                    [((row, deadline), bucket(len(row))) for row in token_rows], deadline
                )
            except TaskgateError:
                raise
            except Exception:
                log.exception("runtime failure (request id %s)", ctx.request_id)
                raise internal(ctx.request_id) from None
        return np.stack(outputs), sum(len(row) for row in token_rows)

    def _deadline(self, ctx: RequestContext) -> float:
        now = time.monotonic()
        deadline = ctx.deadline if ctx.deadline is not None else now + self._limits.default_timeout_s
        if now >= deadline:
            raise DeadlineExceeded("the request's deadline passed before the model ran")
        return deadline

    async def _call(self, ctx: RequestContext, model_id: str, fn: Any, *args: Any) -> Any:
        """Run a small unbatched model-side function (e.g. tokenization) in a thread."""
        self._deadline(ctx)
        loop = asyncio.get_running_loop()
        try:
            with self._admitted(model_id):
                return await loop.run_in_executor(self._prep_executor, fn, *args)
        except TaskgateError:
            raise
        except Exception:
            log.exception("runtime failure (request id %s)", ctx.request_id)
            raise internal(ctx.request_id) from None


def _document_text(index: int, document: Any) -> str:
    if not isinstance(document, dict):
        raise InvalidInput(f"documents[{index}] must be an object with a 'text' field")
    text = document.get("text")
    if not isinstance(text, str):
        raise InvalidInput(f"documents[{index}] needs a string 'text' field")
    return text


def _producer(model: LoadedModel) -> Producer:
    return Producer(name=f"taskgate {model.manifest.runtime}", version=__version__)
