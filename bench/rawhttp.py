"""A minimal keep-alive HTTP/1.1 client for load generation.

httpx's async client costs several milliseconds of CPU per request here, which on a 2-core
machine throttles the load it can offer (measured: ~115 req/s at 0.8 cores). This client writes
pre-built request bytes and reads Content-Length framed responses: enough to drive our JSON
APIs and the peers' at full rate. Functional tests use httpx; this is only for benchmarks.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


class RawHttpClient:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def request_bytes(self, path: str, body: object, headers: dict[str, str] | None = None) -> bytes:
        payload = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}\r\n"
        )
        return head.encode() + payload

    async def send(self, request: bytes) -> bytes:
        """Send one prepared request; returns the body, raises on a non-2xx status."""
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        body = await self._read_chunked(reader) if chunked else await reader.readexactly(length)
        self._idle.append((reader, writer))
        if not 200 <= status < 300:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        return body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
