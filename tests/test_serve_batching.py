"""Continuous batching as a client sees it: determinism under load, disconnects, the queue,
SSE bytes and headers, metrics, the access log, shutdown, and no TensorFlow in the server."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
from helpers import Server, client, sse_events, wait_until

pytestmark = pytest.mark.slow
STREAMED = 20_000  # characters: a whole stream, read to its end
LONG = 10_000_000  # characters: never finished by a test (the compiled step writes 100,000 in under a second)


@pytest.fixture(scope="module")
def server(tiny_run):
    s = Server(tiny_run.checkpoints, "--max-length", str(LONG), "--max-streams", "70")
    yield s
    assert s.stop() == 0, s.log()


def _stream_in_thread(url: str, body: dict, stop: threading.Event, received: list):
    """Read a streaming completion until `stop` is set (then leave) or it ends."""
    def run():
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as answer:
            for chunk in answer.iter_bytes():
                received.append(chunk)
                if stop.is_set():
                    return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_seeded_request_gives_the_same_text_alone_and_among_60_streams(server):
    body = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 300, "seed": 1234, "n": 2, "temperature": 0.9}
    alone = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
    stop, threads = threading.Event(), []
    for i in range(60):
        threads.append(_stream_in_thread(server.url, {"model": "tiny", "prompt": "JULIET"[: 1 + i % 6],
                                                      "max_tokens": LONG, "seed": i, "temperature": 0.5 + i / 60},
                                         stop, []))
    try:
        server.wait_streams(60, timeout=60, until=lambda active: active >= 60)
        busy = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
        assert server.streams() >= 60  # they were all still running
    finally:
        stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert [c["text"] for c in busy["choices"]] == [c["text"] for c in alone["choices"]]
    server.wait_streams(0)


def test_a_client_that_leaves_a_stream_frees_it_at_once(server):
    before = server.metric("textgen_client_disconnects_total")
    stop, received = threading.Event(), []
    thread = _stream_in_thread(server.url, {"model": "tiny", "prompt": "O", "max_tokens": LONG}, stop, received)
    wait_until(lambda: received, what="the stream's first bytes", timeout=30)
    assert server.streams() == 1
    stop.set()
    thread.join(timeout=10)
    # At once: the stream had 10,000,000 characters to go (minutes), so 10 s tells freed from finished.
    server.wait_streams(0, timeout=10)
    server.wait_metric("textgen_client_disconnects_total", before + 1)


def test_a_client_that_leaves_a_non_streaming_request_frees_it(server):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "O", "max_tokens": LONG, "n": 3},
                   timeout=httpx.Timeout(10, read=1.0))
    server.wait_streams(0, timeout=10)  # not the minutes its 3 x 10,000,000 characters take


def test_sse_bytes_and_headers(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": "O", "max_tokens": STREAMED, "seed": 4, "stream": True}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-cache"
        assert answer.headers["x-accel-buffering"] == "no"
        body = answer.read()
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    blocks = body.split(b"\n\n")[:-1]
    assert all(b.startswith(b"data: {") or b.startswith(b": ") for b in blocks[:-1])
    events = sse_events(body)
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert len(text) == STREAMED and events[-2]["choices"][0]["finish_reason"] == "length"
    # Text is sent as it is written, not at the end: a stream with minutes of text to go (LONG)
    # delivers event after event while the server is still generating it.
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": "O", "max_tokens": LONG, "seed": 4, "stream": True}) as answer:
        received, chunks = b"", answer.iter_bytes()  # kept: a dropped iterator closes the response
        for chunk in chunks:
            received += chunk
            events = sse_events(received[: received.rfind(b"\n\n") + 2])
            if len(events) >= 3:
                break
        held = server.streams()
    assert held == 1  # still in the server (stepping, or parked until its client reads): not finished
    assert all(e["choices"][0]["text"] and e["choices"][0]["finish_reason"] is None for e in events)
    server.wait_streams(0)  # the client left


def test_metrics_in_prometheus_format(server):
    client(server).completions.create(model="tiny", prompt="O", max_tokens=10)
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'textgen_requests_total{path="/v1/completions",status="200"}' in text
    for family in ("textgen_active_streams", "textgen_queue_length", "textgen_characters_generated_total",
                   "textgen_engine_steps_per_second", "textgen_time_to_first_character_seconds"):
        assert f"# TYPE {family} " in text
    buckets = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("textgen_time_to_first_character_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == server.metric("textgen_time_to_first_character_seconds_count")
    assert buckets[-1] >= 1 and server.metric("textgen_characters_generated_total") >= 10
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2 and float(line.rsplit(" ", 1)[1]) >= 0


def test_access_log_line_per_request(server, tiny_run):
    httpx.get(server.url + "/v1/models", timeout=10)
    server.wait_log('"GET /v1/models" 200')
    quiet = Server(tiny_run.checkpoints, "--quiet")
    try:
        httpx.get(quiet.url + "/v1/models", timeout=10)
        # The line would be printed in the same step that counts the request: once /metrics
        # counts it, a line would already be in the log.
        quiet.wait_metric('textgen_requests_total{path="/v1/models",status="200"}', 1)
    finally:
        assert quiet.stop() == 0
    assert "/v1/models" not in quiet.log() and "textgen serve" in quiet.log()  # the panel is still shown


def test_full_queue_is_429_with_retry_after_and_fifo(tiny_run):
    s = Server(tiny_run.checkpoints, "--max-streams", "1", "--max-queue", "1", "--max-length", str(LONG), "--keepalive", "0.2")
    try:
        first_stop, first = threading.Event(), []
        _stream_in_thread(s.url, {"model": "tiny", "prompt": "O", "max_tokens": LONG}, first_stop, first)
        s.wait_streams(1)
        second_stop, second = threading.Event(), []
        waiting = _stream_in_thread(s.url, {"model": "tiny", "prompt": "R", "max_tokens": 5}, second_stop, second)
        s.wait_metric("textgen_queue_length", 1)
        refused = httpx.post(s.url + "/v1/completions", json={"model": "tiny", "prompt": "J"}, timeout=10)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        # The queued stream is kept alive (a comment every 0.2 s) while it waits.
        wait_until(lambda: b"".join(second), lambda body: b": keep-alive\n\n" in body, what="a keep-alive comment",
                   timeout=30)
        assert s.metric("textgen_queue_length") == 1  # still queued when it came
        first_stop.set()  # the first client leaves: the queued request runs
        waiting.join(timeout=20)
        events = sse_events(b"".join(second))
        assert events[-1] == "[DONE]" and len("".join(e["choices"][0]["text"] for e in events[:-1])) == 5
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_ends_streams_with_a_final_event_and_exits_0(tiny_run, sig):
    s = Server(tiny_run.checkpoints, "--max-length", str(LONG))
    stop, received = threading.Event(), []
    thread = _stream_in_thread(s.url, {"model": "tiny", "prompt": "O", "max_tokens": LONG}, stop, received)
    s.wait_streams(1)
    started = time.monotonic()
    assert s.stop(sig) == 0, s.log()
    assert time.monotonic() - started < 15
    thread.join(timeout=10)
    events = sse_events(b"".join(received))
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "shutting_down"


def test_the_server_never_imports_tensorflow(tiny_run, tmp_path):
    blocker = tmp_path / "blocked"
    for name in ("tensorflow", "keras", "jax", "torch"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('textgen serve imported {name}')\n")
    s = Server(tiny_run.checkpoints, env={"PYTHONPATH": str(blocker)})
    try:
        answer = client(s).completions.create(model="tiny", prompt="O", max_tokens=5, stream=True)
        assert len("".join(c.choices[0].text for c in answer)) == 5
        maps = open(f"/proc/{s.process.pid}/maps").read()
        assert "tensorflow" not in maps and "keras" not in maps
    finally:
        assert s.stop() == 0
    assert "imported" not in s.log()


def test_it_listens_on_127_0_0_1_only_by_default(server):
    listening = []
    for line in open("/proc/net/tcp").read().splitlines()[1:] + open("/proc/net/tcp6").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if int(port, 16) == server.port and state == "0A":  # LISTEN
            listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex; nothing on 0.0.0.0 or ::
