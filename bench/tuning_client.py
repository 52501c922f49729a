"""Tuning jobs over Taskgate's OpenAI-shaped HTTP API, for the benchmarks (httpx, asyncio).

``upload`` (``POST /v1/files``), ``create_lora`` (``POST /v1/fine_tuning/jobs`` with
``method: {"type": "lora", "lora": {"hyperparameters": ...}}``), ``JobFeed`` (the live feed,
``GET /v1/fine_tuning/jobs/{id}/events?stream=true``, each event stamped with the time it
arrived here), ``cancel`` and ``wait_status``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

FINISHED = ("succeeded", "failed", "cancelled")


async def upload(http: httpx.AsyncClient, records: list[dict[str, str]]) -> str:
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    response = await http.post(
        "/v1/files", files={"file": ("train.jsonl", data, "application/jsonl")}, data={"purpose": "fine-tune"}
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def create_lora(
    http: httpx.AsyncClient, model: str, file_id: str, suffix: str, hyperparameters: dict[str, Any]
) -> str:
    body = {
        "model": model,
        "training_file": file_id,
        "suffix": suffix,
        "method": {"type": "lora", "lora": {"hyperparameters": hyperparameters}},
    }
    response = await http.post("/v1/fine_tuning/jobs", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"job not created: HTTP {response.status_code} {response.text[:300]}")
    return str(response.json()["id"])


async def cancel(http: httpx.AsyncClient, job_id: str) -> None:
    (await http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")).raise_for_status()


async def status(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/fine_tuning/jobs/{job_id}")
    response.raise_for_status()
    return dict(response.json())


async def wait_status(http: httpx.AsyncClient, job_id: str, timeout_s: float, every_s: float = 0.05) -> str:
    """Poll until the job has finished; its status ("succeeded", "failed", "cancelled")."""
    give_up = time.monotonic() + timeout_s
    while True:
        job = await status(http, job_id)
        if job["status"] in FINISHED:
            return str(job["status"])
        if time.monotonic() > give_up:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
        await asyncio.sleep(every_s)


@dataclass
class JobFeed:
    """A job's live feed, read in a task: every event with its arrival time (perf_counter)."""

    http: httpx.AsyncClient
    job_id: str
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> JobFeed:
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        url = f"/v1/fine_tuning/jobs/{self.job_id}/events"
        async with self.http.stream("GET", url, params={"stream": "true"}, timeout=None) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                self.events.append((time.perf_counter(), json.loads(line[len("data: ") :])))
                self.changed.set()

    async def wait_for(self, predicate: Any, timeout_s: float) -> tuple[float, dict[str, Any]]:
        """The first event (arrival time, event) for which ``predicate(event)`` holds."""
        give_up = time.monotonic() + timeout_s
        seen = 0
        while True:
            for arrived, event in self.events[seen:]:
                if predicate(event):
                    return arrived, event
            seen = len(self.events)
            if self.task is not None and self.task.done():
                self.task.result()
                raise RuntimeError(f"job {self.job_id}'s feed ended without the event awaited")
            self.changed.clear()
            left = give_up - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {self.job_id}: no such event within {timeout_s} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def steps(self) -> list[tuple[float, int]]:
        """(arrival time, optimizer step) of every progress event so far."""
        out = []
        for arrived, event in self.events:
            data = event.get("data") or {}
            if isinstance(data.get("step"), int):
                out.append((arrived, int(data["step"])))
        return out

    def step_at(self, when: float) -> float | None:
        """The job's progress at ``when`` in steps, interpolated between the events around it
        (None when no event came before or after it)."""
        steps = self.steps()
        times = [t for t, _ in steps]
        i = bisect.bisect_left(times, when)
        if i == 0 or i == len(steps):
            return None
        (t0, s0), (t1, s1) = steps[i - 1], steps[i]
        return s0 + (s1 - s0) * (when - t0) / (t1 - t0) if t1 > t0 else float(s1)

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
