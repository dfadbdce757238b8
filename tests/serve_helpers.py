"""Shared by the tests of `textgen serve`: a tiny run trained once, and real server processes.

The server runs as `python -m textgen serve` on a free 127.0.0.1 port, exactly as a user
starts it; tests talk to it with the openai client and httpx.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import TINY_TEXT

_TRAINED: dict = {}


def tiny_run(tmp_path_factory) -> Path:
    """A checkpoints directory holding run 'tiny' (1x16, one epoch), trained once per pytest process."""
    if "root" not in _TRAINED:
        base = tmp_path_factory.mktemp("serve-run")
        corpus = base / "tiny.txt"
        corpus.write_text(TINY_TEXT * 60, encoding="utf-8")
        root = base / "checkpoints"
        result = subprocess.run(
            [sys.executable, "-m", "textgen", "train", str(corpus), "--run", "tiny", "--checkpoints", str(root),
             "--layers", "1", "--units", "16", "--embedding-dim", "8", "--dropout", "0", "--seq-len", "10", "--batch-size", "4",
             "--epochs", "1", "--eval-every", "50"], capture_output=True, text=True, timeout=600, cwd=base,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert result.returncode == 0, result.stderr
        _TRAINED["root"] = root
    return _TRAINED["root"]


def copy_run(root: Path, destination: Path, name: str = "tiny") -> Path:
    """A private copy of the trained checkpoints directory (for tests that change it)."""
    shutil.copytree(root, destination)
    return destination


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `textgen serve` subprocess; `url` is its base URL, `log()` its stderr so far."""

    def __init__(self, checkpoints: Path, *args, env: dict | None = None, wait: bool = True, cwd=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(cwd or checkpoints.parent) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        command = [sys.executable, "-m", "textgen", "serve", "--checkpoints", str(checkpoints),
                   "--port", str(self.port), *map(str, args)]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd or checkpoints.parent,
                                        env={**os.environ, "COLUMNS": "200", **(env or {})})
        self.health_after = None
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0, status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                answer = httpx.get(self.url + "/health", timeout=1.0)
                if self.health_after is None:
                    self.health_after = time.monotonic() - self.started
                if answer.status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert text in self.log(), self.log()
        return self.log()

    def metric(self, name: str, headers: dict | None = None) -> float:
        """The sum of a metric's samples in /metrics."""
        text = httpx.get(self.url + "/metrics", headers=headers or {}, timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_metric(self, name: str, value: float, timeout: float = 10.0, headers: dict | None = None) -> float:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.metric(name, headers)
            if seen == value:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"{name} stayed at {seen}, expected {value}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


def client(server: Server, key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def sse_events(body: bytes) -> list:
    """The `data:` payloads of an SSE body, in order (comments dropped)."""
    import json

    events = []
    for block in body.decode("utf-8").split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
