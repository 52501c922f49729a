"""One request of each task over each transport, answered as an ``Outcome`` (ok / shed / error).

The overload and soak benchmarks need more than "did it raise": a shed answer (HTTP 429 or gRPC
RESOURCE_EXHAUSTED) is told apart from any other failure, and every shed answer is checked for
``retry-after`` (the HTTP header, the gRPC trailing metadata key). Requests go to the default
models: MiniLM for embed / similarity / rerank / tokenize, SmolLM2 for unary and streaming
generation (greedy, min = max new tokens, so each request does the same work).

    async with open_client(GRPC, "127.0.0.1:8085") as client:
        outcome = await client.request("embed")
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bench.rawhttp import RawHttpClient
from bench.systems import GRPC, MODEL, REST

GENERATION_MODEL = "SmolLM2-135M-Instruct"  # gateway.models.defaults.DEFAULT_GENERATION_MODEL
TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
SENTENCES = ["A fox leaps over a sleeping dog.", "Interest rates rose again this quarter."]
DOCUMENTS = ["Foxes are quick and clever animals.", "The river bank was quiet at dawn.", "Bond markets fell."]
PROMPT = "<|im_start|>user\nWrite one sentence about rivers.<|im_end|>\n<|im_start|>assistant\n"
ENCODER_TASKS = ("embed", "similarity", "rerank", "tokenize")
GENERATION_TASKS = ("generate", "stream")
TASKS = ENCODER_TASKS + GENERATION_TASKS
IDLE_REUSE_S = 2.0  # a pooled HTTP connection idle longer is closed, not reused (server keep-alive 5 s)
DEFAULT_CONNECTIONS = 256  # HTTP connections one client keeps open at most (a real client's pool)
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok", "shed" (429 / RESOURCE_EXHAUSTED) or "error"
    latency_ms: float
    retry_after: bool = False  # a shed answer carried retry-after
    detail: str = ""  # an error's status or code name (bounded: never a server message)


class Client(Protocol):
    async def request(self, task: str, due: float | None = None) -> Outcome:
        """One request; its latency is timed from ``due`` (a perf_counter time: when an open-loop
        schedule wanted it sent) when given, else from now."""
        ...


def model_of(task: str) -> str:
    return GENERATION_MODEL if task in GENERATION_TASKS else MODEL


class GrpcClient:
    def __init__(self, channel: Any, tokens: int) -> None:
        from gateway.wire import caikit_runtime_nlp_pb2 as nlp
        from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

        stub = nlp_grpc.NlpServiceStub(channel)
        generation = {"max_new_tokens": tokens, "min_new_tokens": tokens, "decoding_method": "GREEDY"}
        self._unary = {
            "embed": (stub.EmbeddingTaskPredict, nlp.EmbeddingTaskRequest(text=TEXT)),
            "similarity": (
                stub.SentenceSimilarityTaskPredict,
                nlp.SentenceSimilarityTaskRequest(source_sentence=TEXT, sentences=SENTENCES),
            ),
            "rerank": (
                stub.RerankTaskPredict,
                nlp.RerankTaskRequest(query=TEXT, documents=[{"text": d} for d in DOCUMENTS], top_n=2),
            ),
            "tokenize": (stub.TokenizationTaskPredict, nlp.TokenizationTaskRequest(text=TEXT)),
            "generate": (
                stub.TextGenerationTaskPredict,
                nlp.TextGenerationTaskRequest(text=PROMPT, **generation),
            ),
        }
        self._stream = (
            stub.ServerStreamingTextGenerationTaskPredict,
            nlp.ServerStreamingTextGenerationTaskRequest(text=PROMPT, **generation),
        )

    async def request(self, task: str, due: float | None = None) -> Outcome:
        import grpc

        metadata = (("mm-model-id", model_of(task)),)
        start = time.perf_counter() if due is None else due
        try:
            if task == "stream":
                method, message = self._stream
                chunks = 0
                async for _ in method(message, metadata=metadata):
                    chunks += 1
                if not chunks:
                    return Outcome("error", _ms(start), detail="empty stream")
            else:
                method, message = self._unary[task]
                await method(message, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                trailers = exc.trailing_metadata() or ()
                return Outcome("shed", _ms(start), any(key == "retry-after" for key, _ in trailers))
            return Outcome("error", _ms(start), detail=exc.code().name)
        return Outcome("ok", _ms(start))


class StatusHttpClient(RawHttpClient):
    """RawHttpClient that returns the status and headers (a 429 is an answer, not a failure), does
    not reuse a connection idle long enough for the server to have closed it, and keeps at most
    ``max_connections`` open, like a real client's pool: a request that finds none free waits for
    one (its latency, timed from when it was due, includes that wait)."""

    def __init__(self, base_url: str, max_connections: int = DEFAULT_CONNECTIONS) -> None:
        super().__init__(base_url)
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self._pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._open = 0  # connections open or being opened (pooled ones included)
        self.opened = 0  # connections opened in all
        self.most_open = 0  # the most open at once
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()

    async def _acquire(self) -> Connection:
        while True:
            now = time.monotonic()
            while self._pool:
                reader, writer, used = self._pool.pop()
                if now - used < IDLE_REUSE_S:
                    return reader, writer
                self._discard(writer)
            if self._open < self.max_connections:
                self._open += 1
                self.opened += 1
                self.most_open = max(self.most_open, self._open)
                try:
                    return await asyncio.open_connection(self.host, self.port)
                except BaseException:
                    self._open -= 1
                    self._wake(None)
                    raise
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter  # a connection handed over, or None: a place freed, open one
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over as this one was cancelled
                    given = waiter.result()
                    if given is not None:
                        self._release(given)
                    else:
                        self._wake(None)
                raise
            if handed is not None:
                return handed

    def _wake(self, handed: Connection | None) -> bool:
        """Give ``handed`` (or a free place, None) to the longest waiter; False when none waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _release(self, connection: Connection) -> None:
        if not self._wake(connection):
            self._pool.append((*connection, time.monotonic()))

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self._open -= 1
        self._wake(None)

    async def exchange(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        reader, writer = await self._acquire()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                body = await self._read_chunked(reader)
            else:
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except BaseException:
            self._discard(writer)
            raise
        if b"close" in headers.get(b"connection", b"").lower():
            self._discard(writer)
        else:
            self._release((reader, writer))
        return status, headers, body

    async def close(self) -> None:
        for _, writer, _ in self._pool:
            writer.close()
        self._open -= len(self._pool)
        self._pool.clear()
        await super().close()


class RestClient:
    PATHS: ClassVar[dict[str, str]] = {
        "embed": "embedding",
        "similarity": "sentence-similarity",
        "rerank": "rerank",
        "tokenize": "tokenization",
        "generate": "text-generation",
        "stream": "server-streaming-text-generation",
    }

    def __init__(self, http: StatusHttpClient, tokens: int) -> None:
        self.http = http
        generation = {"max_new_tokens": tokens, "min_new_tokens": tokens, "decoding_method": "GREEDY"}
        inputs: dict[str, Any] = {
            "embed": TEXT,
            "similarity": {"source_sentence": TEXT, "sentences": SENTENCES},
            "rerank": {"query": TEXT, "documents": [{"text": d} for d in DOCUMENTS]},
            "tokenize": TEXT,
            "generate": PROMPT,
            "stream": PROMPT,
        }
        parameters: dict[str, Any] = {"rerank": {"top_n": 2}, "generate": generation, "stream": generation}
        self._requests = {
            task: http.request_bytes(
                f"/api/v1/task/{path}",
                {"model_id": model_of(task), "inputs": inputs[task], "parameters": parameters.get(task, {})},
            )
            for task, path in self.PATHS.items()
        }

    async def request(self, task: str, due: float | None = None) -> Outcome:
        start = time.perf_counter() if due is None else due
        try:
            status, headers, body = await self.http.exchange(self._requests[task])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return Outcome("error", _ms(start), detail=type(exc).__name__)
        if status == 429:
            return Outcome("shed", _ms(start), b"retry-after" in headers)
        if not 200 <= status < 300:
            return Outcome("error", _ms(start), detail=f"HTTP {status}")
        if task == "stream" and not _stream_ok(body):
            return Outcome("error", _ms(start), detail="stream error event")
        return Outcome("ok", _ms(start))


def _stream_ok(body: bytes) -> bool:
    """At least one data chunk and no error event (Caikit's error body: details is a string)."""
    chunks = 0
    for line in body.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        event = json.loads(line[5:])
        if isinstance(event.get("details"), str) and "code" in event:
            return False
        chunks += 1
    return chunks > 0


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


@contextlib.asynccontextmanager
async def open_client(
    transport: str, address: str, tokens: int = 16, connections: int = DEFAULT_CONNECTIONS
) -> AsyncIterator[Client]:
    """A client of the gateway at ``address`` (host:port for gRPC, http://host:port for REST);
    REST keeps at most ``connections`` open (gRPC multiplexes its calls on one)."""
    if transport == GRPC:
        import grpc

        async with grpc.aio.insecure_channel(address) as channel:
            yield GrpcClient(channel, tokens)
    elif transport == REST:
        http = StatusHttpClient(address, connections)
        try:
            yield RestClient(http, tokens)
        finally:
            await http.close()
    else:
        raise ValueError(f"unknown transport {transport!r}")
