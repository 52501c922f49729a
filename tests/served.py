"""``taskgate serve`` as a user runs it: a real process on loopback ports, stopped with SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ServedProcess:
    """Starts ``taskgate serve --http-port 0 ARGS`` (gRPC on port 0 too) and waits for its
    "Taskgate serving" line; ``output`` holds every line it printed (stdout and stderr), read
    continuously so the pipe never fills."""

    def __init__(self, args: list[str], env: dict[str, str], start_timeout_s: float = 120) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--http-port", "0", *args],
            env={**os.environ, "TASKGATE_GRPC_PORT": "0", **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        serving = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(serving,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + start_timeout_s
        while not serving.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("taskgate did not start serving:\n" + "".join(self.output))
        match = re.search(r"gRPC (127\.0\.0\.1:\d+)\s+HTTP (http://127\.0\.0\.1:\d+)", self.said)
        assert match, self.said
        self.grpc, self.http = match.groups()

    @property
    def said(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after 60 s)."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()

    def _read(self, serving: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "Taskgate serving" in line:
                serving.set()
