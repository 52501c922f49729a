"""``taskgate serve`` and ``taskgate kserve`` as a user runs them: real processes on loopback
ports, stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

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


def free_port() -> int:
    """A loopback port free now (for servers that cannot report the port they bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HostedKServe:
    """``taskgate kserve --model_name NAME --model_dir DIR ARGS`` on free loopback ports, waited
    for until its model answers ready over HTTP; ``output`` holds every line it printed."""

    def __init__(self, name: str, model_dir: Path, args: tuple[str, ...] = (), start_timeout_s: float = 120):
        self.name = name
        http_port, grpc_port = free_port(), free_port()
        while grpc_port == http_port:
            grpc_port = free_port()
        self.http, self.grpc = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        command = [sys.executable, "-m", "gateway.cli", "kserve", "--model_name", name, "--model_dir"]
        command += [str(model_dir), "--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        self.process = subprocess.Popen(
            [*command, *args],
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("taskgate kserve did not become ready:\n" + self.said)
            time.sleep(0.1)

    @property
    def said(self) -> str:
        return "".join(self.output)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.http}/v2/models/{self.name}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGKILL: the remote is gone at once), then the exit code."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(sig)
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)


# How a remote that is gone shows in the error, depending on timing: a new connection is refused
# (httpx ConnectError, gRPC UNAVAILABLE), or a connection kept alive from earlier calls is closed
# (RemoteProtocolError) or reset under the request (ReadError / WriteError).
REFUSALS = ("ConnectError", "UNAVAILABLE", "RemoteProtocolError", "ReadError", "WriteError")


class SwitchableProxy:
    """A plain TCP proxy on a free loopback port in front of ``target`` (host:port) that the
    test can turn into a remote that accepts connections but never answers (``silence()``),
    or one that is gone (``refuse()``: the port is closed and open connections are reset)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self.silent = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        self.silent.set()

    def refuse(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; stops listening
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._sockets.append(client)
            if self.silent.is_set():
                continue  # held open, never read, never answered
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.silent.is_set():  # silenced: bytes are swallowed, nothing comes back
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class FakeV2Server:
    """A stand-in for a third-party v2 server: ready, describing an encoder's tensors
    (``input_ids``, ``attention_mask`` -> FP32 ``embedding`` [-1, 384]), and answering every
    infer with ``status`` and ``body``, to see 5xx and malformed answers handled.
    ``infer_calls`` counts the infer requests it got."""

    def __init__(self, status: int, body: bytes, model_name: str = "minilm") -> None:
        tokens = ("input_ids", "attention_mask")
        metadata = json.dumps(
            {
                "name": model_name,
                "inputs": [{"name": name, "datatype": "INT64", "shape": [-1, -1]} for name in tokens],
                "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
            }
        ).encode()
        self.infer_calls = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, metadata)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                fake.infer_calls += 1
                self._send(status, body)

            def _send(self, code: int, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
