"""A failed engine loop recovers and says so: requests in flight get the 500 envelope or a final
SSE error event, the loop restarts on the last good checkpoint (an older one when the served
one went bad, none while none loads: /health 503 naming the model, without paths unless the
key is given), /metrics counts restarts; the scheduler's failures map to HTTP in one place.

No real input makes the loop fail (that is the point of the hardening), so the loop is made
to fail by the documented test hook TEXTGEN_SERVE_FAULT_AT_STEP=N, read once at start: each
model's loop raises once after its N-th step. The checkpoints it restarts on are really
damaged on disk."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from helpers import Server, require, sse_events, wait_until

require("fastapi")

from textgen.errors import ConfigError  # noqa: E402
from textgen.serve import envelopes, failures  # noqa: E402

FAULT = {"TEXTGEN_SERVE_FAULT_AT_STEP": "100"}
KEY = "recovery-key"


def test_the_schedulers_failures_map_to_http_in_one_place():
    cases = {failures.QueueFull(2): (429, "queue_full"), failures.ShuttingDown(): (503, "shutting_down"),
             failures.EngineFailed("m"): (500, "engine_failed"), failures.EngineRestarting("m"): (503, "engine_restarting"),
             failures.ModelLoading(): (503, "loading"), failures.ModelNotFound("x", ["m"]): (404, "model_not_found"),
             ConfigError("n too big. Received: n=99"): (400, "invalid_value"), RuntimeError("bug"): (500, "internal_error")}
    for failure, (status, code) in cases.items():
        error = envelopes.to_api(failure)
        assert (error.status, error.code) == (status, code), failure
        assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    assert envelopes.to_api(failures.QueueFull(2)).headers["Retry-After"] == "2"
    assert "secret-detail" not in envelopes.to_api(RuntimeError("secret-detail")).message  # its words stay in the log


def _restarts(server: Server, headers=None) -> float:
    return server.metric("textgen_engine_restarts_total", headers)


@pytest.mark.slow
def test_a_stream_in_flight_ends_with_an_error_event_and_the_loop_restarts(tiny_run, tmp_path):
    server = Server(tiny_run.copy(tmp_path / "ck"), "--run", "tiny", "--quiet", env=FAULT)
    try:
        body = {"model": "tiny", "prompt": "ROMEO:", "n": 2, "max_tokens": 4096, "stream": True}
        answer = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
        events = sse_events(answer.content)
        assert answer.status_code == 200 and events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "engine_failed" and events[-2]["error"]["type"] == "server_error"
        assert 0 < sum(len(c["text"]) for e in events[:-2] for c in e["choices"]) < 2 * 4096
        wait_until(lambda: httpx.get(server.url + "/health", timeout=10).status_code == 200, timeout=30,
                   what="the restarted loop")
        assert _restarts(server) == 1
        again = httpx.post(server.url + "/v1/completions", json={**body, "stream": False, "max_tokens": 300}, timeout=60)
        assert again.status_code == 200 and [len(c["text"]) for c in again.json()["choices"]] == [300, 300]
        log = server.log()
        assert log.count("The engine loop of tiny failed") == 1 and "engine restarted on ckpt-" in log
    finally:
        assert server.stop() == 0


def _damage(checkpoint) -> bytes:
    weights = checkpoint / "weights.npz"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    return good


@pytest.mark.slow
def test_the_loop_restarts_on_the_last_good_checkpoint_and_health_names_a_model_that_does_not_step(tiny_run, tmp_path):
    root = tiny_run.copy(tmp_path / "ck")
    server = Server(root, "--run", "tiny", "--quiet", "--reload-seconds", "0.2", env={**FAULT, "TEXTGEN_API_KEY": KEY})
    keyed = {"Authorization": f"Bearer {KEY}"}
    try:
        served = httpx.get(server.url + "/v1/models/tiny", headers=keyed, timeout=10).json()["checkpoint_step"]
        saved = sorted((root / "tiny").glob("ckpt-*"))
        assert len(saved) >= 2 and saved[-1].name.endswith(f"{served:08d}")
        good = {path: _damage(path) for path in saved}  # every checkpoint goes bad while the newest is served
        failed = httpx.post(server.url + "/v1/completions", headers=keyed, timeout=60,
                            json={"model": "tiny", "prompt": "O", "max_tokens": 4096})
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "engine_failed"
        health = httpx.get(server.url + "/health", timeout=10)
        assert health.status_code == 503 and set(health.json()["waiting"]) == {"tiny"}
        assert health.json()["status"] == "unavailable" and "detail" not in health.json()
        assert str(tmp_path) not in health.text and "ckpt-" not in health.text  # no paths without the key
        detail = httpx.get(server.url + "/health", headers=keyed, timeout=10).json()["detail"]["tiny"]
        assert saved[0].name in detail  # with the key: the log's words
        refused = httpx.post(server.url + "/v1/completions", headers=keyed, timeout=10,
                             json={"model": "tiny", "prompt": "O", "max_tokens": 5})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_restarting"
        older = saved[0]
        (older / "weights.tmp").write_bytes(good[older])  # an older checkpoint is good again: the retry takes it
        os.replace(older / "weights.tmp", older / "weights.npz")
        wait_until(lambda: httpx.get(server.url + "/health", timeout=10).status_code == 200, timeout=30,
                   what="the restart on the older checkpoint")
        step = httpx.get(server.url + "/v1/models/tiny", headers=keyed, timeout=10).json()["checkpoint_step"]
        assert step < served and older.name.endswith(f"{step:08d}")
        assert _restarts(server, keyed) == 1
        answer = httpx.post(server.url + "/v1/completions", headers=keyed, timeout=60,
                            json={"model": "tiny", "prompt": "O", "max_tokens": 50})
        assert answer.status_code == 200 and len(answer.json()["choices"][0]["text"]) == 50
        assert server.log().count("could not restart the engine") == 1  # one line, not one per retry
    finally:
        assert server.stop() == 0
    shutil.rmtree(root)
