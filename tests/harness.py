"""One harness that starts the real server (``maas up``) on a free port and drives it over HTTP.

In the spirit of vllm's ``RemoteOpenAIServer``: a real process, a real port, real clients.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from maas.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    def __init__(
        self, home: Path, *, env: dict[str, str] | None = None, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.home = home
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "server.log"

    def start(self, timeout: float = 90.0) -> LiveServer:
        self.home.mkdir(parents=True, exist_ok=True)
        # Publishing the shipped language models costs a minute of CPU per fresh home: only the tests of
        # the catalog and the /v1 routes ask for them.
        env = {**os.environ, "MAAS_HOME": str(self.home), "MAAS_SHIPPED_MODELS": "none", **self.extra_env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maas.cli.main", "up", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (output := self.output()):
                return output
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared in the server output:\n{self.output()[-3000:]}")

    @property
    def admin_key(self) -> str:
        return (self.home / "admin.key").read_text().strip()

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill_hard(self) -> None:
        """kill -9 the whole server process group (server and its workers)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def breast_cancer_frame() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    return frame


def new_tenant(server: LiveServer, name: str) -> dict[str, Any]:
    with server.client(server.admin_key) as admin:
        return admin.create_tenant(name)


class HealthWatch:
    """Polls /healthz from a thread while the block runs; ``worst`` is its slowest answer."""

    def __init__(self, server: LiveServer) -> None:
        self._url = f"{server.url}/healthz"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.latencies: list[float] = []

    def _poll(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get(self._url).status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    @property
    def worst(self) -> float:
        """The slowest answer (the probe in flight when the block ended is waited for, and counts)."""
        assert self.latencies, "/healthz was never asked"
        return max(self.latencies)
