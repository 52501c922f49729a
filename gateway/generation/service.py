"""GenerationService: the protocol-neutral text-generation task (unary and streaming).

Frontends call it with a request context, the served model (a ``LoadedModel`` or the runtime
itself), the prompt and validated ``GenerationParams``; it answers with Caikit-shaped results
(``gateway.generation.results``). One ``GenerationScheduler`` per model runtime is started on
first use; call ``release(runtime)`` before unloading a model and ``close()`` at shutdown.

    service = GenerationService()
    output = await service.generate(ctx, model, "Hello", GenerationParams(max_new_tokens=8))
    stream = await service.stream(ctx, model, "Hello", params)   # errors raise here
    async for chunk in stream:
        ...
    await service.release(model.runtime); service.close()

Errors (``gateway.errors``, raised at the call, before any chunk): InvalidInput (empty text,
prompt over the context without truncate_input_tokens, prompt + max_new_tokens over the
context), TaskNotSupported (not a causal LM), Unavailable (the model is being unloaded),
Overloaded (the model's queue is full, with retry_after_s), DeadlineExceeded (the deadline
passed, or passed while waiting with nothing generated). A failure inside the model ends the
request with an InternalError naming the request id. A deadline reached after some tokens ends
the request normally with finish_reason TIME_LIMIT and the partial text, as max_time does.

Cancelling the awaiting task, ``aclose()`` on the stream, or dropping the stream ends the
sequence with CANCELLED at the next iteration and frees its slot.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import DeadlineExceeded, InvalidInput, TaskNotSupported, Unavailable
from gateway.generation.params import GenerationParams
from gateway.generation.policies import fit_prompt
from gateway.generation.results import (
    FinishReason,
    GeneratedToken,
    GenerationOutput,
    StreamChunk,
    StreamDetails,
)
from gateway.generation.scheduler import GenerationRequest, GenerationScheduler, SequenceHandle
from gateway.ops.request_log import TokenClock, current_record
from runtimes.base import Runtime
from runtimes.causal_lm import CausalLMRuntime

if TYPE_CHECKING:
    from gateway.core import RequestContext  # the core imports this module: no cycle at run time


INLINE_ENCODE_CHARS = 2048  # shorter prompts are tokenized on the loop (faster than a thread hop)


class ServedModel(Protocol):
    """What the service needs of a registry entry (``gateway.models.registry.LoadedModel`` fits)."""

    @property
    def model_id(self) -> str: ...

    @property
    def runtime(self) -> Runtime[Any, Any]: ...


class GenerationService:
    def __init__(self) -> None:
        self._schedulers: dict[CausalLMRuntime, GenerationScheduler] = {}
        self._released: weakref.WeakSet[CausalLMRuntime] = weakref.WeakSet()

    # -- tasks ---------------------------------------------------------------------------
    async def generate(
        self,
        ctx: RequestContext,
        model: ServedModel | CausalLMRuntime,
        text: str,
        params: GenerationParams,
        adapter: str | None = None,
    ) -> GenerationOutput:
        """Generate to the end and return the whole result (with ``adapter``: the key of an
        adapter the model's runtime holds; None: the base model)."""
        handle = await self._submit(ctx, model, text, params, adapter)
        clock = _clock()
        pieces: list[str] = []
        tokens: list[GeneratedToken] = []
        input_tokens: tuple[GeneratedToken, ...] = ()
        try:
            while True:
                event = await handle.next_event()
                if event.error is not None:
                    raise event.error
                if clock is not None and event.token is not None:
                    clock.tick(event.at, event.admitted_at)
                pieces.append(event.text)
                input_tokens = input_tokens or event.input_tokens
                if event.token is not None and params.generated_tokens:
                    tokens.append(_shown(event.token, params))
                if event.finished:
                    break
        finally:
            handle.cancel()  # no-op once finished; frees the slot when this task was cancelled
        prompt = text if params.preserve_input_text else ""
        return GenerationOutput(
            generated_text=prompt + "".join(pieces),
            generated_tokens=event.generated,
            finish_reason=event.finish_reason,
            input_token_count=len(handle.request.prompt_ids),
            seed=handle.request.seed,
            tokens=tuple(tokens),
            input_tokens=tuple(_shown(t, params) for t in input_tokens) if params.input_tokens else (),
        )

    async def stream(
        self,
        ctx: RequestContext,
        model: ServedModel | CausalLMRuntime,
        text: str,
        params: GenerationParams,
        adapter: str | None = None,
    ) -> GenerationStream:
        """Submit now (errors raise here) and return the chunks as an async iterator."""
        handle = await self._submit(ctx, model, text, params, adapter)
        return GenerationStream(handle, text if params.preserve_input_text else "", _clock())

    # -- schedulers ----------------------------------------------------------------------
    def scheduler(self, runtime: CausalLMRuntime, name: str = "generation") -> GenerationScheduler:
        scheduler = self._schedulers.get(runtime)
        if scheduler is None:
            if runtime in self._released:
                raise Unavailable(f"model {name!r} is being unloaded; retry shortly", retry_after_s=1.0)
            scheduler = GenerationScheduler(runtime, name=name)
            scheduler.start()
            self._schedulers[runtime] = scheduler
        return scheduler

    async def release(self, runtime: Runtime[Any, Any]) -> None:
        """Stop the model's scheduler (before the model unloads); its requests end UNAVAILABLE.
        The scheduler thread is joined off the event loop; no new scheduler starts for it."""
        if not isinstance(runtime, CausalLMRuntime):
            return
        self._released.add(runtime)
        scheduler = self._schedulers.pop(runtime, None)
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)

    def sample(self) -> list[tuple[str, int, int]]:
        """(model, sequences waiting, sequences running) per scheduler, for the metrics scrape."""
        return [(s.name, s.queued_count, s.active_count) for s in list(self._schedulers.values())]

    def close(self) -> None:
        """At shutdown: stop every scheduler (joins their threads)."""
        for runtime, scheduler in list(self._schedulers.items()):
            self._released.add(runtime)
            scheduler.close()
        self._schedulers.clear()

    async def _submit(
        self,
        ctx: RequestContext,
        model: ServedModel | CausalLMRuntime,
        text: str,
        params: GenerationParams,
        adapter: str | None = None,
    ) -> SequenceHandle:
        runtime, name = _runtime_of(model)
        if not isinstance(text, str) or not text:
            raise InvalidInput("'text' must be a non-empty string")
        if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
            raise DeadlineExceeded("the request's deadline passed before the model ran")
        if len(text) <= INLINE_ENCODE_CHARS:
            token_ids = runtime.encode(text)
        else:  # a long prompt's tokenization would hold the event loop
            token_ids = await asyncio.to_thread(runtime.encode, text)
        max_context = runtime.limits.max_context
        prompt = fit_prompt(token_ids, params.truncate_input_tokens, max_context)
        if len(prompt) + params.max_new_tokens > max_context:
            raise InvalidInput(
                f"the prompt has {len(prompt)} tokens and max_new_tokens is {params.max_new_tokens}: "
                f"together more than the model's context of {max_context} tokens; lower max_new_tokens "
                "or shorten the prompt (truncate_input_tokens)"
            )
        request = GenerationRequest(ctx.request_id, prompt, params, deadline=ctx.deadline, adapter=adapter)
        return self.scheduler(runtime, name).submit(request)


class GenerationStream:
    """Async iterator of ``StreamChunk``s; the last one has a finish_reason other than NOT_FINISHED.

    Stopping early (``aclose()``, cancelling the task that awaits a chunk, or dropping the
    stream) cancels the sequence and frees its slot.
    """

    def __init__(self, handle: SequenceHandle, prefix: str, clock: TokenClock | None = None) -> None:
        self._handle = handle
        self._prefix = prefix
        self._finished = False
        self._clock = clock

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self._handle.next_event()
        except BaseException:
            self._finished = True
            self._handle.cancel()
            raise
        if event.error is not None:
            self._finished = True
            if self._clock is not None:
                self._clock.record.failed(event.error)
            raise event.error
        self._finished = event.finished
        if self._clock is not None and event.token is not None:
            self._clock.tick(event.at, event.admitted_at)
        request = self._handle.request
        text, self._prefix = self._prefix + event.text, ""
        return StreamChunk(
            generated_text=text,
            tokens=(event.token,) if event.token is not None else (),
            details=StreamDetails(
                finish_reason=event.finish_reason,
                generated_tokens=event.generated,
                seed=request.seed,
                input_token_count=len(request.prompt_ids),
            ),
            input_tokens=event.input_tokens if request.params.input_tokens else (),
        )

    async def aclose(self) -> None:
        self._finished = True
        self._handle.cancel()

    def __del__(self) -> None:
        if not self._handle.done:
            self._handle.cancel()


def _clock() -> TokenClock | None:
    """The timing of a sequence just queued, for the current request's record (if any)."""
    record = current_record()
    return TokenClock(record) if record is not None else None


def _runtime_of(model: ServedModel | CausalLMRuntime) -> tuple[CausalLMRuntime, str]:
    if isinstance(model, CausalLMRuntime):
        return model, "generation"
    runtime = model.runtime
    if not isinstance(runtime, CausalLMRuntime):
        raise TaskNotSupported(f"model {model.model_id!r} does not serve the text-generation task")
    return runtime, model.model_id


def _shown(token: GeneratedToken, params: GenerationParams) -> GeneratedToken:
    """A token with the details the request asked for (token_logprobs, token_ranks)."""
    return GeneratedToken(
        token.text,
        token.logprob if params.token_logprobs else None,
        token.rank if params.token_ranks else None,
    )


__all__ = [
    "FinishReason",
    "GenerationOutput",
    "GenerationParams",
    "GenerationService",
    "GenerationStream",
    "StreamChunk",
]
