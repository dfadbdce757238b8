"""Serving while training: a new checkpoint is picked up for new requests, requests in flight
finish on the weights they started with, and a damaged checkpoint is never loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from helpers import TINY_TEXT, Server, sse_events, wait_until

pytestmark = pytest.mark.slow
LONG = 1_000_000  # long enough to be still streaming when the new checkpoint lands (200,000 took ~1 s)


def _reference(run: Path, checkpoint: str, prime: str, length: int, seed: int) -> str:
    """What the library itself writes from `checkpoint` for one seeded stream (temperature 1)."""
    from textgen.generation.loading import load_run, start_id
    from textgen.generation.session import SamplingSession, StreamSpec

    info, _, engine = load_run(run, which=checkpoint)
    session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]))
    spec = StreamSpec(prime=prime, length=length, temperature=1.0, seed=seed, index=0)
    return "".join(p.text for pieces in session.run([spec], max_steps=16) for p in pieces)


def _install(source: Path, run: Path, name: str) -> None:
    """Put a checkpoint directory in place the way training does: a temporary name, then one rename."""
    shutil.copytree(source, run / f".tmp-{name}")
    os.rename(run / f".tmp-{name}", run / name)


@pytest.fixture(scope="module")
def resumed(tiny_run, tmp_path_factory):
    """A copy of the run trained one epoch further (its ckpt-00000500)."""
    base = tmp_path_factory.mktemp("resumed")
    root = tiny_run.copy(base / "checkpoints")
    (base / "tiny.txt").write_text(TINY_TEXT * 60, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "textgen", "train", "tiny.txt", "--resume", "--run", "tiny",
                             "--checkpoints", str(root), "--epochs", "2"], capture_output=True, text=True, cwd=base,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert (root / "tiny" / "ckpt-00000500").is_dir()
    return root / "tiny"


def test_new_checkpoints_serve_new_requests_while_old_ones_finish(tiny_run, resumed, tmp_path):
    root = tiny_run.copy(tmp_path / "ck")
    run = root / "tiny"
    old_text = _reference(tiny_run.run, "ckpt-00000250", "O", LONG, seed=5)
    new_text = _reference(resumed, "ckpt-00000500", "O", 200, seed=5)
    assert old_text[:200] != new_text
    s = Server(root, "--reload-seconds", "0.2", "--max-length", str(LONG))
    try:
        received: list = []

        def read():
            body = {"model": "tiny", "prompt": "O", "max_tokens": LONG, "seed": 5, "stream": True}
            with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=120) as answer:
                for chunk in answer.iter_bytes():
                    received.append(chunk)

        httpx.post(s.url + "/v1/completions", json={"model": "tiny", "prompt": "O", "max_tokens": 5}, timeout=30)
        threads_before = len(os.listdir(f"/proc/{s.process.pid}/task"))  # after the first request's threads
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        s.wait_streams(1)
        _install(resumed / "ckpt-00000500", run, "ckpt-00000500")
        wait_until(lambda: httpx.get(s.url + "/v1/models/tiny", timeout=10).json()["checkpoint_step"],
                   lambda step: step == 500, what="the model card to show step 500", timeout=20, details=s.log)
        in_flight = s.streams()
        fresh = httpx.post(s.url + "/v1/completions", timeout=60,
                           json={"model": "tiny", "prompt": "O", "max_tokens": 200, "seed": 5}).json()
        assert fresh["choices"][0]["text"] == new_text
        reader.join(timeout=120)
        events = sse_events(b"".join(received))
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == old_text
        assert in_flight == 1  # the long request was still running on the old weights at the swap
        assert "now serving ckpt-00000500 (step 500)" in s.log()
        httpx.post(s.url + "/v1/completions", json={"model": "tiny", "prompt": "O", "max_tokens": 5}, timeout=30)
        # The old session was closed once drained: no worker thread is left behind per reload.
        assert len(os.listdir(f"/proc/{s.process.pid}/task")) <= threads_before
    finally:
        assert s.stop() == 0


def test_a_damaged_checkpoint_is_never_loaded_and_said_once(tiny_run, tmp_path):
    root = tiny_run.copy(tmp_path / "ck")
    run = root / "tiny"
    shutil.copytree(run, root / "other")  # a second run: its reloads show that polls went on
    s = Server(root, "--run", "tiny", "--run", "other", "--reload-seconds", "0.1")
    try:
        before = httpx.post(s.url + "/v1/completions", timeout=30,
                            json={"model": "tiny", "prompt": "O", "max_tokens": 50, "seed": 1}).json()
        damaged = tmp_path / "damaged"
        shutil.copytree(run / "ckpt-00000250", damaged)
        weights = damaged / "weights.npz"
        weights.write_bytes(weights.read_bytes()[:-100])
        os.rename(damaged, run / "ckpt-00000750")
        s.wait_log("Not loading tiny/ckpt-00000750")
        # Each poll visits tiny, then other. Two new checkpoints in other, each installed once the
        # one before is served: the poll that serves the second began after the first was served,
        # so after the poll that refused 750, and it looked at tiny (750 still newest) first.
        for name in ("ckpt-00000260", "ckpt-00000270"):
            _install(run / "ckpt-00000250", root / "other", name)
            s.wait_log(f"other: now serving {name}")
        assert httpx.get(s.url + "/v1/models/tiny", timeout=10).json()["checkpoint_step"] == 250
        after = httpx.post(s.url + "/v1/completions", timeout=30,
                           json={"model": "tiny", "prompt": "O", "max_tokens": 50, "seed": 1}).json()
        assert after["choices"][0]["text"] == before["choices"][0]["text"]
    finally:
        assert s.stop() == 0
    assert s.log().count("Not loading tiny/ckpt-00000750") == 1
    assert "damaged" in s.log()
