"""Back-pressure: a client that does not read pauses its streams (the same text once it reads),
the server's unread output stays under its bound, and a client that stops reading for the send
timeout is cancelled with its rows freed. Real sockets against a real `textgen serve`."""

from __future__ import annotations

import httpx
import pytest
from helpers import require, sse_events, wait_until

require("fastapi")

from helpers import read_response, send_request, settings_server  # noqa: E402

from textgen import checkpoints  # noqa: E402
from textgen.generation.engine import LSTMEngine  # noqa: E402
from textgen.generation.loading import load_run, start_id  # noqa: E402
from textgen.generation.session import SamplingSession, StreamSpec  # noqa: E402

MAX_BUFFERED = 300_000
MAX_UNSENT = 262_144


def _finish(session, streams):
    while any(s.finish_reason is None for s in streams):
        session.step()
    return [s.text for s in streams]


@pytest.mark.parametrize("compiled", [None, False])
def test_a_parked_stream_writes_what_it_would_have_written(tiny_run, compiled):
    info, checkpoint, engine = load_run(tiny_run.run)
    if compiled is False:  # the numpy reference step
        engine = LSTMEngine(checkpoints.load_arrays(checkpoint.path), int(info["model"]["num_layers"]), compiled=False)
    chars = info["vocab"]
    specs = [StreamSpec(prime="ROMEO:", length=300, temperature=1.0, seed=4, index=i, logprobs=2 if i else None,
                        stops=["xyz"] if i == 2 else ()) for i in range(3)]
    alone = SamplingSession(engine, chars, start_id(chars))
    expected = _finish(alone, [alone.add(StreamSpec(**vars(s))) for s in specs])
    session = SamplingSession(engine, chars, start_id(chars))
    others = [session.add(StreamSpec(prime="O", length=400, seed=9, index=i)) for i in range(4)]
    streams = [session.add(StreamSpec(**vars(s))) for s in specs]
    for turn in range(200):
        session.step(4)
        if turn % 7 == 0:
            session.park(*streams[turn % 3:])
            assert session.parked == len(streams[turn % 3:]) and all(s not in session.streams for s in streams[turn % 3:])
            session.step()
            session.unpark(*streams[turn % 3:])
    _finish(session, [*streams, *others])
    assert [s.text for s in streams] == expected and all(len(t) == 300 for t in expected)
    parked = session.add(StreamSpec(prime="O", length=50))
    session.park(parked)
    session.close()
    assert session.parked == 0 and parked.finish_reason == "cancelled"


# ----------------------------------------------------------------------------- a real server, real sockets


@pytest.fixture(scope="module")
def server(tiny_run):
    s = settings_server(tiny_run.checkpoints, max_buffered=MAX_BUFFERED, max_unsent=MAX_UNSENT, send_timeout=6.0, quiet=True)
    yield s
    assert s.stop() == 0


def _wait_paused(server, streams: int) -> None:
    """Until `streams` streams are paused and the engine has stopped stepping: every buffer between it
    and the clients is full (before that, a paused stream resumes whenever the kernel takes more)."""
    last = []

    def settled():
        seen = (server.metric("textgen_paused_streams"), server.metric("textgen_engine_steps_total"))
        still = seen[0] == streams and last[-1:] == [seen]
        last.append(seen)
        return still

    wait_until(settled, timeout=60, interval=0.3, what=f"{streams} paused streams and an idle engine",
               details=server.log)


@pytest.mark.slow
def test_clients_that_never_read_are_paused_bounded_and_cancelled_after_the_send_timeout(server):
    body = {"model": "tiny", "prompt": "ROMEO:", "n": 16, "max_tokens": 4096, "logprobs": 5, "stream": True}
    sockets = [send_request(server.port, {**body, "seed": i}) for i in range(2)]
    try:
        _wait_paused(server, 32)
        unsent = server.metric("textgen_unsent_output_bytes")
        # Each request pauses past max_unsent (262,144 bytes), so without the server-wide cap two would hold
        # ~540 KB here; past max_buffered every request over a sixteenth of max_unsent pauses too, which keeps
        # the total under the cap plus, per request, that sixteenth and a step or two (16 streams x ~1 KB).
        assert 0 < unsent <= MAX_BUFFERED + 2 * (MAX_UNSENT // 16 + 2 * 16 * 1000), unsent
        assert server.metric("textgen_active_streams") == 0
        normal = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "O", "max_tokens": 200},
                            timeout=60)
        assert normal.status_code == 200 and len(normal.json()["choices"][0]["text"]) == 200
        wait_until(lambda: server.metric("textgen_send_timeouts_total") == 2, timeout=60, what="2 send timeouts")
        wait_until(lambda: server.metric("textgen_paused_streams") == 0 and server.metric("textgen_unsent_output_bytes") == 0,
                   timeout=10, what="the paused rows and their output freed")
        assert server.metric("textgen_active_streams") == 0
        assert server.log().count("did not read its stream for 6 s") == 2
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_a_slow_reader_gets_the_same_text_as_a_fast_one(server):
    # ~10 MB of events: more than the kernel's socket buffers take (up to 4 MB), so the streams pause.
    body = {"model": "tiny", "prompt": "JULIET:", "n": 16, "max_tokens": 4096, "logprobs": 5, "seed": 11}
    timeouts = server.metric("textgen_send_timeouts_total")
    sock = send_request(server.port, {**body, "stream": True})
    try:
        _wait_paused(server, 16)
        events = sse_events(read_response(sock))
    finally:
        sock.close()
    assert events[-1] == "[DONE]"
    texts, logprobs = [""] * 16, [[] for _ in range(16)]
    for event in events[:-1]:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["text"]
            logprobs[choice["index"]] += choice["logprobs"]["token_logprobs"]
    assert all(len(t) == 4096 == len(lp) for t, lp in zip(texts, logprobs))
    # The same seed read at once (without logprobs, which change nothing in the text).
    fast = httpx.post(server.url + "/v1/completions", json={**body, "logprobs": None}, timeout=120).json()["choices"]
    assert texts == [c["text"] for c in fast]
    assert server.metric("textgen_send_timeouts_total") == timeouts  # it read in time
