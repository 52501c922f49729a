"""Server-sent events of the OpenAI door: ``data: {chunk}`` lines ending with ``data: [DONE]``.

Every choice is its own generation stream in the core; the streams run concurrently (they share
the model's running batch) and their chunks are sent as they come, each naming its choice's
index. Chat streams open each choice with a ``delta.role`` chunk; the last chunk of a choice has
its ``finish_reason``; with ``stream_options.include_usage`` a final chunk with no choices holds
the usage (and every other chunk has ``"usage": null``, as OpenAI sends it). A failure after the
response started is an ``{"error": {...}}`` event (the client raises it) and ends the stream.
Stopping early (the client disconnects) cancels every generation of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gateway.errors import TaskgateError, internal
from gateway.frontends.http.common import Json, sse
from gateway.frontends.http.openai.convert import finish_reason, usage
from gateway.frontends.http.openai.errors import openai_error_body
from gateway.generation.results import FinishReason, StreamChunk

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
_QUEUED_CHUNKS = 64  # chunks waiting for a slow client before the generations wait for it
T = TypeVar("T")
Stream = AsyncGenerator[StreamChunk, None]


@dataclass(frozen=True)
class StreamShape:
    request_id: str
    created: int
    model: str
    chat: bool  # chat.completion.chunk, else text_completion
    include_usage: bool
    per_prompt: int  # choices per prompt (n): prompt tokens count once per prompt

    def chunk(self, choices: list[Json], usage_json: Json | None = None) -> Json:
        out: Json = {
            "id": f"{'chatcmpl' if self.chat else 'cmpl'}-{self.request_id}",
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            out["usage"] = usage_json
        return out

    def choice(self, index: int, text: str, reason: str | None) -> Json:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
        delta = {"content": text} if text else {}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

    def role(self, index: int) -> Json:
        delta = {"role": "assistant", "content": ""}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


async def run_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Await all concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                raise error
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def close_all(streams: Sequence[Stream]) -> None:
    for stream in streams:
        await stream.aclose()


async def events(
    shape: StreamShape, streams: Sequence[Stream], firsts: Sequence[StreamChunk]
) -> AsyncIterator[str]:
    """The SSE body, from streams whose first chunks were already taken (errors before any output
    were answered with a status instead)."""
    prompt_tokens: dict[int, int] = {}
    completion_tokens: dict[int, int] = {}
    try:
        if shape.chat:
            for index in range(len(streams)):
                yield sse(shape.chunk([shape.role(index)]))
        async with contextlib.aclosing(_merged(streams, firsts)) as merged:
            async for index, chunk in merged:
                details = chunk.details
                done = details.finish_reason is not FinishReason.NOT_FINISHED
                prompt_tokens[index] = details.input_token_count
                completion_tokens[index] = details.generated_tokens
                if chunk.generated_text or done:
                    reason = finish_reason(details.finish_reason) if done else None
                    yield sse(shape.chunk([shape.choice(index, chunk.generated_text, reason)]))
        if shape.include_usage:
            prompt = sum(count for index, count in prompt_tokens.items() if index % shape.per_prompt == 0)
            totals = usage(prompt, sum(completion_tokens.values()))
            yield sse(shape.chunk([], totals))
        yield DONE
    except TaskgateError as exc:
        yield sse(openai_error_body(exc, shape.request_id))
    except Exception:
        log.exception("streaming generation failed (request id %s)", shape.request_id)
        yield sse(openai_error_body(internal(shape.request_id), shape.request_id))


async def _merged(
    streams: Sequence[Stream], firsts: Sequence[StreamChunk]
) -> AsyncGenerator[tuple[int, StreamChunk], None]:
    """(choice index, chunk) as any stream produces one; ends when all have ended, raises the
    first failure; leaving early (or failing) cancels and closes every stream."""
    queue: asyncio.Queue[tuple[int, StreamChunk | BaseException | None]] = asyncio.Queue(_QUEUED_CHUNKS)

    async def pump(index: int, first: StreamChunk, stream: Stream) -> None:
        try:
            await queue.put((index, first))
            async for chunk in stream:
                await queue.put((index, chunk))
            await queue.put((index, None))
        except Exception as exc:  # handed to the reader; cancellation ends the pump quietly
            await queue.put((index, exc))

    pumps = [asyncio.create_task(pump(i, f, s)) for i, (f, s) in enumerate(zip(firsts, streams, strict=True))]
    try:
        running = len(pumps)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await close_all(streams)
