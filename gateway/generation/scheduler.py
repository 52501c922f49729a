"""Iteration-level (continuous) batching for one causal-LM model, in its own thread.

Every iteration the scheduler thread
1. ends sequences whose consumer cancelled or whose time ran out (max_time, the deadline), and
   expires waiting requests the same way, freeing their slots at once;
2. plans the step's prompt chunks (``policies.plan_prefill``, chunked prefill): sequences
   part-way through their prompt continue, then waiting requests are admitted in order while a
   slot is free and the step's token budget (one token per decoding sequence, the rest prompt
   tokens, at most ``prefill_chunk_tokens`` of one prompt) holds;
3. runs ONE runtime step (``runtimes.causal_lm.GenerationStep``): release the rows that
   finished, decode every sequence whose prompt is done in one forward pass, prefill the chunks
   (a sequence gets its first token with its prompt's last chunk);
4. chooses each sequence's next token (``sampling.choose_rows``: the plain greedy rows in one
   vectorized pass, the others by their own ``TokenChooser``), turns it into text
   (``text.IncrementalText``), publishes a ``SequenceEvent`` per request to its asyncio loop
   (one ``loop.call_soon_threadsafe`` per loop and step, into each handle's ``asyncio.Queue``)
   and ends the sequences that finished (``policies.stop_reason``).

API (all but the thread itself run on the caller's event loop):
    scheduler = GenerationScheduler(runtime, name="model-id"); scheduler.start()
    handle = scheduler.submit(GenerationRequest(...))   # Overloaded when the queue is full
    event = await handle.next_event()                    # until event.finished
    handle.cancel()                                      # frees the slot; idempotent
    scheduler.active_count, scheduler.queued_count; scheduler.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.errors import DeadlineExceeded, Overloaded, TaskgateError, Unavailable, internal
from gateway.generation.params import GenerationParams
from gateway.generation.policies import (
    TimeVerdict,
    TokenFacts,
    plan_prefill,
    resolve_seed,
    stop_reason,
    time_verdict,
)
from gateway.generation.results import FinishReason, GeneratedToken
from gateway.generation.text import IncrementalText
from runtimes.causal_lm import CausalLMRuntime, GenerationLimits, GenerationStep, NewSequence, StepOutput

if TYPE_CHECKING:
    from gateway.generation.sampling import Choice, TokenChooser

log = logging.getLogger(__name__)

OVERLOAD_RETRY_S = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]  # already fitted to the context (policies.fit_prompt)
    params: GenerationParams
    seed: int | None = None  # the sampling seed; None: params.seed, else drawn (policies.resolve_seed)
    deadline: float | None = None  # time.monotonic() seconds
    adapter: str | None = None  # the runtime's key of the adapter to apply; None: the base model


@dataclass(frozen=True)
class SequenceEvent:
    """What one iteration did for one request; the last one has ``finished`` True."""

    text: str  # text added (held back while it could still become a stop sequence)
    token: GeneratedToken | None  # the token added; None for an event that only ends the request
    generated: int  # tokens generated so far
    finish_reason: FinishReason = FinishReason.NOT_FINISHED
    input_tokens: tuple[GeneratedToken, ...] = ()  # on the first event, when asked for
    error: TaskgateError | None = None  # the request failed; raise it
    # on the first event: the scheduler's forward steps that started after the request was
    # queued and before the step that prefilled it (how long it waited, in steps)
    queued_steps: int = 0
    step: int = 0  # the scheduler's forward step that made this token (counted from 1)
    at: float = 0.0  # time.perf_counter() when the step that made this token ended
    admitted_at: float = 0.0  # on the first event: time.perf_counter() when its prefill step began

    @property
    def finished(self) -> bool:
        return self.finish_reason is not FinishReason.NOT_FINISHED or self.error is not None


class SequenceHandle:
    """The consumer's side of one submitted request; created on (and bound to) its event loop."""

    def __init__(self, scheduler: GenerationScheduler, request: GenerationRequest) -> None:
        self.request = request
        self._scheduler = scheduler
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[SequenceEvent] = asyncio.Queue()
        self.done = False  # set by the scheduler thread when the last event is published

    async def next_event(self) -> SequenceEvent:
        return await self._queue.get()

    def cancel(self) -> None:
        """Stop generating for this request (its consumer is gone); frees its slot."""
        self._scheduler._cancel(self)

    def _publish(self, event: SequenceEvent) -> bool:
        if event.finished:
            self.done = True
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the consumer's loop is closed: nobody listens any more
            return False
        return True


@dataclass
class _Sequence:
    seq_id: int
    handle: SequenceHandle
    time_limit: float | None
    text: IncrementalText
    chooser: TokenChooser | None = None
    generated: int = 0
    last_token: int = -1
    input_tokens: tuple[GeneratedToken, ...] = field(default=())
    queued_at_step: int = 0  # the scheduler's step count when the request was queued
    queued_steps: int = 0  # steps that ran while it waited (set when it is admitted)
    prefilled: int = 0  # prompt tokens prefilled (or planned this step); all: it decodes
    admitted_at: float = 0.0  # time.perf_counter() when its prefill step began

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request


class GenerationScheduler:
    def __init__(
        self, runtime: CausalLMRuntime, *, name: str = "generation", limits: GenerationLimits | None = None
    ) -> None:
        self._runtime = runtime
        self._limits = limits or runtime.limits  # batch size / queue / step budget; the model's by default
        self._name = name
        self._cond = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._active: dict[int, _Sequence] = {}
        self._cancelled: set[int] = set()
        self._ids = itertools.count(1)
        self._closing = False
        self._thread: threading.Thread | None = None
        self._steps = 0  # forward steps started so far (changed and read under _cond)

    # -- the caller's side ---------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"generate-{self._name}", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; requests still waiting or running end with UNAVAILABLE."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if not self._thread.is_alive() and self._runtime.running:
                self._step_quietly(GenerationStep(release=self._runtime.running))  # the runtime is free
        with self._cond:
            leftovers = [*self._waiting, *self._active.values()]
            self._waiting.clear()
            self._active.clear()
        for seq in leftovers:
            seq.handle._publish(_failure(seq, Unavailable("the model is shutting down; retry shortly")))

    @property
    def name(self) -> str:
        return self._name

    @property
    def active_count(self) -> int:
        with self._cond:
            return len(self._active)

    @property
    def queued_count(self) -> int:
        with self._cond:
            return len(self._waiting)

    def submit(self, request: GenerationRequest) -> SequenceHandle:
        """Queue a request (call on the consumer's event loop); Overloaded when the queue is full."""
        if request.seed is None and request.params.sampling:
            request = dataclasses.replace(request, seed=resolve_seed(request.params))
        handle = SequenceHandle(self, request)
        max_time = request.params.max_time
        seq = _Sequence(
            seq_id=next(self._ids),
            handle=handle,
            time_limit=time.monotonic() + max_time if max_time is not None else None,
            text=IncrementalText(
                self._runtime.decode,
                request.prompt_ids,
                request.params.stop_sequences,
                request.params.include_stop_sequence,
            ),
        )
        with self._cond:
            if self._closing:
                raise Unavailable("the model is shutting down; retry shortly")
            if len(self._waiting) >= self._limits.max_queue:
                raise Overloaded(
                    f"model {self._name!r} already has {len(self._waiting)} generation requests "
                    f"waiting (limit {self._limits.max_queue}); retry shortly",
                    retry_after_s=OVERLOAD_RETRY_S,
                )
            seq.queued_at_step = self._steps
            self._waiting.append(seq)
            self._cond.notify_all()
        return handle

    def _cancel(self, handle: SequenceHandle) -> None:
        with self._cond:
            if handle.done:
                return
            for seq in self._waiting:
                if seq.handle is handle:
                    self._waiting.remove(seq)
                    handle.done = True
                    return
            for seq in self._active.values():
                if seq.handle is handle:
                    self._cancelled.add(seq.seq_id)
                    self._cond.notify_all()
                    return

    # -- the scheduler thread ------------------------------------------------------------
    def _run(self) -> None:
        from gateway.generation.sampling import TokenChooser

        self._runtime.prepare_thread()
        release: list[int] = []
        while True:
            with self._cond:
                while not (self._closing or self._waiting or self._active or self._cancelled or release):
                    self._cond.wait()
                if self._closing:
                    break
                release += self._end_cancelled_and_late(time.monotonic())
                running, chunks, admitted = self._plan()
                admitted_at = time.perf_counter() if admitted else 0.0
                for seq in admitted:
                    seq.queued_steps = self._steps - seq.queued_at_step
                    seq.admitted_at = admitted_at
                    self._active[seq.seq_id] = seq
                if running or chunks:  # this iteration runs a forward step
                    self._steps += 1
            step = GenerationStep(
                release=tuple(release),
                decode=tuple((seq.seq_id, seq.last_token) for seq in running),
                prefill=chunks,
            )
            release = []
            if not step.decode and not step.prefill:
                self._step_quietly(step)
                continue
            try:
                for seq in admitted:
                    seq.chooser = TokenChooser(
                        seq.request.params,
                        eos_token_id=self._runtime.eos_token_id,
                        vocab_size=self._runtime.vocab_size,
                        prompt=seq.request.prompt_ids,
                        seed=seq.request.seed,
                    )
                output = self._runtime.run_batch(step)
                release = self._advance(output)
            except Exception:
                log.exception("generation step failed on model %s", self._name)
                release = self._fail_all()

    def _plan(self) -> tuple[list[_Sequence], tuple[NewSequence, ...], list[_Sequence]]:
        """Under the lock: this step's decoding sequences, prompt chunks and newly admitted requests
        (not yet in ``_active``)."""
        running: list[_Sequence] = []
        filling: list[_Sequence] = []
        for seq in self._active.values():
            (running if seq.prefilled == len(seq.request.prompt_ids) else filling).append(seq)
        plan = plan_prefill(
            [(seq.prefilled, len(seq.request.prompt_ids)) for seq in filling],
            [(len(seq.request.prompt_ids), seq.request.params.input_tokens) for seq in self._waiting],
            len(running),
            self._limits,
        )
        admitted = [self._waiting.popleft() for _ in plan.admitted]
        chunks: list[NewSequence] = []
        for seq, end in [
            *zip(filling, plan.continued, strict=True),
            *zip(admitted, plan.admitted, strict=True),
        ]:
            if end is None:
                continue
            request = seq.request
            chunks.append(
                NewSequence(
                    seq.seq_id,
                    request.prompt_ids,
                    request.params.input_tokens,
                    adapter=request.adapter,
                    start=seq.prefilled,
                    end=end,
                )
            )
            seq.prefilled = end
        return running, tuple(chunks), admitted

    def _end_cancelled_and_late(self, now: float) -> list[int]:
        """Under the lock: end cancelled and timed-out sequences; returns rows to release."""
        ended: list[int] = []
        for seq_id in self._cancelled:
            seq = self._active.pop(seq_id, None)
            if seq is not None:
                seq.handle._publish(self._final(seq, FinishReason.CANCELLED))
                ended.append(seq_id)
        self._cancelled.clear()
        for seq in list(self._active.values()):
            verdict = time_verdict(now, seq.request.deadline, seq.time_limit, seq.generated)
            if verdict is TimeVerdict.DEADLINE_EXCEEDED:  # part-way through its prompt, no token yet
                del self._active[seq.seq_id]
                seq.handle._publish(
                    _failure(seq, DeadlineExceeded("the deadline passed while the prompt was prefilled"))
                )
                ended.append(seq.seq_id)
            elif verdict is not TimeVerdict.IN_TIME:
                del self._active[seq.seq_id]
                seq.handle._publish(self._final(seq, FinishReason.TIME_LIMIT))
                ended.append(seq.seq_id)
        for seq in list(self._waiting):
            verdict = time_verdict(now, seq.request.deadline, seq.time_limit, 0)
            if verdict is TimeVerdict.DEADLINE_EXCEEDED:
                self._waiting.remove(seq)
                seq.handle._publish(
                    _failure(
                        seq, DeadlineExceeded("the deadline passed while the request waited for the model")
                    )
                )
            elif verdict is TimeVerdict.TIME_LIMIT:
                self._waiting.remove(seq)
                seq.handle._publish(self._final(seq, FinishReason.TIME_LIMIT))
        return ended

    def _advance(self, output: StepOutput) -> list[int]:
        """Choose each sequence's next token, publish it; returns the sequences that finished."""
        from gateway.generation.sampling import choose_rows

        finished: list[int] = []
        with self._cond:
            sequences = [self._active.get(seq_id) for seq_id in output.seq_ids]
        at = time.perf_counter()  # one clock read per step, shared by its tokens
        # a sequence cancelled or timed out while the step ran is released next step
        live = [(row, seq) for row, seq in enumerate(sequences) if seq is not None]
        choices = choose_rows(
            [_chooser(seq) for _, seq in live],
            output.logits,
            [row for row, _ in live],
            [seq.generated for _, seq in live],
        )
        published = _Deliveries()
        for (_, seq), choice in zip(live, choices, strict=True):
            if seq.generated == 0 and seq.seq_id in output.prompt_logprobs:
                seq.input_tokens = self._input_tokens(seq, output.prompt_logprobs[seq.seq_id])
            event = self._next_token(seq, choice, at)
            if event.finished:
                finished.append(seq.seq_id)
            published.add(seq.seq_id, seq.handle, event)
        for seq_id in published.send():  # consumers whose loop closed: nobody listens any more
            if seq_id not in finished:
                finished.append(seq_id)
        if finished:
            with self._cond:
                for seq_id in finished:
                    self._active.pop(seq_id, None)
        return finished

    def _next_token(self, seq: _Sequence, choice: Choice, at: float = 0.0) -> SequenceEvent:
        params = seq.request.params
        first = seq.generated == 0
        seq.generated += 1
        seq.last_token = choice.token_id
        is_eos = choice.token_id == self._runtime.eos_token_id
        stopped = False
        if not is_eos:
            seq.text.add(choice.token_id)
            stopped = seq.text.find_stop(honour=seq.generated >= params.min_new_tokens) is not None
        facts = TokenFacts(is_eos, seq.generated, stopped, len(seq.request.prompt_ids) + seq.generated)
        reason = stop_reason(facts, params.max_new_tokens, self._limits.max_context)
        if reason is not None and reason is not FinishReason.STOP_SEQUENCE:
            seq.text.flush()
        token = GeneratedToken(self._runtime.token_texts([choice.token_id])[0], choice.logprob, choice.rank)
        return SequenceEvent(
            text=seq.text.take_sendable(final=reason is not None),
            token=token,
            generated=seq.generated,
            finish_reason=reason or FinishReason.NOT_FINISHED,
            input_tokens=seq.input_tokens if first else (),
            queued_steps=seq.queued_steps if first else 0,
            step=self._steps,  # changed by this thread only, before the step ran
            at=at,
            admitted_at=seq.admitted_at if first else 0.0,
        )

    def _final(self, seq: _Sequence, reason: FinishReason) -> SequenceEvent:
        seq.text.flush()
        return SequenceEvent(seq.text.take_sendable(final=True), None, seq.generated, reason)

    def _input_tokens(self, seq: _Sequence, logprobs: tuple[float, ...]) -> tuple[GeneratedToken, ...]:
        texts = self._runtime.token_texts(seq.request.prompt_ids)
        values: list[float | None] = [None, *logprobs]
        return tuple(GeneratedToken(text, value) for text, value in zip(texts, values, strict=True))

    def _fail_all(self) -> list[int]:
        """A step failed: every running sequence ends with an internal error and leaves the batch."""
        with self._cond:
            failed = list(self._active.values())
            self._active.clear()
        for seq in failed:
            seq.handle._publish(_failure(seq, internal(seq.request.request_id)))
        return list(self._runtime.running)

    def _step_quietly(self, step: GenerationStep) -> None:
        """A step that only releases rows (nothing to decode or prefill)."""
        if step.release:
            try:
                self._runtime.run_batch(step)
            except Exception:
                log.exception("releasing finished sequences failed on model %s", self._name)


class _Deliveries:
    """One step's events, handed to each consumer loop in one call: a loop wakes once a step,
    not once a token."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, SequenceHandle, SequenceEvent]]] = {}

    def add(self, seq_id: int, handle: SequenceHandle, event: SequenceEvent) -> None:
        if event.finished:
            handle.done = True
        self._by_loop.setdefault(handle._loop, []).append((seq_id, handle, event))

    def send(self) -> list[int]:
        """Hand the events over; the sequences whose consumer's loop is closed."""
        lost: list[int] = []
        for loop, items in self._by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, [(handle._queue, event) for _, handle, event in items])
            except RuntimeError:  # the loop is closed: these sequences end here
                for seq_id, handle, _ in items:
                    handle.done = True
                    lost.append(seq_id)
        return lost


def _deliver(items: list[tuple[asyncio.Queue[SequenceEvent], SequenceEvent]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)


def _chooser(seq: _Sequence) -> TokenChooser:
    if seq.chooser is None:  # set at prefill, before any token is chosen
        raise RuntimeError(f"sequence {seq.seq_id} has no token chooser")
    return seq.chooser


def _failure(seq: _Sequence, error: TaskgateError) -> SequenceEvent:
    return SequenceEvent("", None, seq.generated, FinishReason.ERROR, error=error)
