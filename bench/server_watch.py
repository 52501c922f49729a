"""A gateway process for a benchmark, watched: its resident memory over time and the latency split
(queue wait / model time / overhead) it reports on ``/metrics``.

The split comes from the ``taskgate_request_{queue,model,overhead}_seconds`` histograms when the
gateway exports them: two scrapes around a phase give each part's mean per request in that phase.
A gateway without those series gives no split (None), and the benchmarks say so.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.systems import Running, process, wait_for_line

SPLIT_SERIES = {
    "queue": "taskgate_request_queue_seconds",
    "model": "taskgate_request_model_seconds",
    "overhead": "taskgate_request_overhead_seconds",
}


@dataclass
class Served:
    running: Running
    pid: int


@contextlib.contextmanager
def serve_gateway(store: Path, preload: list[str], flags: list[str]) -> Iterator[Served]:
    """``taskgate serve`` on 127.0.0.1 (ports chosen by the OS) on ``store``, until the block ends."""
    command = [
        sys.executable, "-m", "gateway.cli", "serve", "--model-store", str(store),
        "--grpc-port", "0", "--http-port", "0", "--preload", ",".join(preload),
        "--log-level", "warning", *flags,
    ]  # fmt: skip
    with process(command) as proc:
        match = wait_for_line(proc, r"gRPC (\S+)\s+HTTP (\S+)", timeout_s=900)
        yield Served(Running(match.group(1), match.group(2)), proc.pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (its threads included; 0 once it is gone)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listening socket's accept queue was
    full (TcpExt ListenOverflows, machine-wide; -1 where /proc/net/netstat is missing)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", -1))
    return -1


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass
class RssSampler:
    """Samples a process's VmRSS every ``interval_s`` in a thread: (seconds since start, MiB)."""

    pid: int
    interval_s: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, CPU seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = 0.0

    def __enter__(self) -> RssSampler:
        self.started = time.time()  # wall clock: the open-loop workers start at a time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> float:
        """Take one sample now (also called at phase edges); returns MiB."""
        mib = rss_kib(self.pid) / 1024
        now = time.time() - self.started
        self.samples.append((now, mib))
        self.cpu.append((now, cpu_seconds(self.pid)))
        return mib

    def now(self) -> float:
        return time.time() - self.started

    def at(self, wall: float) -> float:
        """A time.time() as seconds since the sampler started."""
        return wall - self.started

    def cores(self, start: float, end: float) -> float:
        """The process's CPU use between two times, in cores (from the samples nearest inside)."""
        inside = [(t, c) for t, c in self.cpu if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def window(self, start: float, end: float) -> list[float]:
        return [mib for t, mib in self.samples if start <= t <= end]


def scrape_split(http: str, model: str) -> dict[str, tuple[float, float]] | None:
    """{part: (sum seconds, count)} over the model's series, or None without the split series."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{http}/metrics", timeout=10).text
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        part = next((p for p, name in SPLIT_SERIES.items() if family.name == name), None)
        if part is None:
            continue
        sums = totals.setdefault(part, [0.0, 0.0])
        for sample in family.samples:
            if sample.labels.get("model", model) != model:
                continue
            if sample.name.endswith("_sum"):
                sums[0] += sample.value
            elif sample.name.endswith("_count"):
                sums[1] += sample.value
    if len(totals) < len(SPLIT_SERIES):
        return None
    return {part: (value[0], value[1]) for part, value in totals.items()}


def split_between(
    before: dict[str, tuple[float, float]] | None, after: dict[str, tuple[float, float]] | None
) -> dict[str, float] | None:
    """Mean milliseconds per request of each part between two scrapes (None without both)."""
    if before is None or after is None:
        return None
    out = {}
    for part in SPLIT_SERIES:
        count = after[part][1] - before[part][1]
        out[f"{part}_ms"] = (after[part][0] - before[part][0]) / count * 1000 if count else 0.0
    return out
