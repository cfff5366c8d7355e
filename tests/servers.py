"""Real servers on 127.0.0.1 for tests and benchmarks: ``transformers serve`` with a local model,
and a fault injector in front of any HTTP server.

The fault injector is written here because no PyPI package injects HTTP-level faults (status
codes, stalls, dropped connections) in front of a server; toxiproxy works at the TCP level and
is a separate Go binary. It speaks just enough HTTP/1.1 for the openai client: it reads one
request, answers it (a fault, or the upstream's response via httpx), and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx2 as httpx

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servable_copy(model_dir: Path, target: Path) -> Path:
    """A copy of ``model_dir`` (weights linked) whose generation config samples when asked to:
    ``transformers serve`` samples only if the model's generation config says ``do_sample``."""
    target.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.name != "generation_config.json" and not (target / f.name).exists():
            os.symlink(f, target / f.name)
    config = json.loads((model_dir / "generation_config.json").read_text()) \
        if (model_dir / "generation_config.json").is_file() else {}
    (target / "generation_config.json").write_text(json.dumps({**config, "do_sample": True}))
    return target


@dataclass
class Server:
    """A ``transformers serve`` process; ``url`` is its API root (``.../v1``), ``model`` the served id."""

    proc: subprocess.Popen[bytes]
    port: int
    model: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_transformers_serve(model_dir: Path, log: Path, port: int | None = None, threads: int = 1,
                             batching: bool = False) -> Server:
    """Start ``transformers serve MODEL`` on the CPU and wait until it answers.

    ``batching``: continuous batching (concurrent requests share forward passes: the throughput
    benchmark). Without it requests run one at a time, each with its own decoding parameters; with
    it, transformers 5.24 keeps the decoding of the first request for all later ones, so tests that
    vary temperature or stop strings run without it.
    """
    port = port or free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe) if exe.exists() else shutil.which("transformers") or "transformers", "serve", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"] + (["--continuous-batching"] if batching else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    out = log.open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(proc, port, str(model_dir), log)
    deadline = time.time() + STARTUP_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"transformers serve did not answer within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


@dataclass
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects faults by request number.

    ``faults[i]`` (request ``i`` counted from 0; missing means forward) is one of ``429``, ``500``
    (that status, with ``Retry-After: 0`` for 429), ``"stall"`` (no answer for ``stall_s``
    seconds, longer than the client's timeout) or ``"drop"`` (the connection closed with no
    answer). ``after_forward(count)`` runs after each forwarded answer (e.g. to kill the server).
    Every request's headers are kept in ``headers``, so a test can see what the client sent.
    """

    upstream: str  # e.g. http://127.0.0.1:8000
    faults: dict[int, int | str] = field(default_factory=dict)
    stall_s: float = 3.0
    after_forward: Callable[[int], None] | None = None
    port: int = 0
    seen: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    forwarded: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def counts(self) -> dict[str, int]:
        return {kind: self.seen.count(kind) for kind in set(self.seen)}

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=300)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            number = len(self.seen)
            fault = self.faults.get(number, "forward")
            self.seen.append(str(fault))
            self.headers.append(headers)
            if fault == "drop":
                return
            if fault == "stall":
                await asyncio.sleep(self.stall_s)
                return
            if isinstance(fault, int):
                extra = b"Retry-After: 0\r\n" if fault == 429 else b""
                payload = json.dumps({"error": {"message": f"injected {fault}"}}).encode()
                writer.write(b"HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (fault, extra, len(payload), payload))
                await writer.drain()
                return
            keep = {k: v for k, v in headers.items() if k in ("content-type", "authorization", "accept")}
            response = await self._client.request(method, target, content=body, headers=keep)
            data = response.content
            writer.write(b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (response.status_code, response.headers.get("content-type", "application/json").encode(),
                            len(data), data))
            await writer.drain()
            self.forwarded += 1
            if self.after_forward is not None:
                self.after_forward(self.forwarded)
        except (asyncio.IncompleteReadError, ConnectionError, httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            if not self._loop.is_closed():
                writer.close()
