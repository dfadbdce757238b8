"""The sampling session: streams that join and leave a running batch, each with its own
options, seed and stops; per-character logprobs; the engine's worker thread."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import random_weights

from textgen.errors import ConfigError, CorpusError
from textgen.generation.draw import log_softmax
from textgen.generation.engine import LSTMEngine
from textgen.generation.session import SamplingSession, StreamSpec

CHARS = list("abcdefg")


def finish(session, streams):
    while any(s.finish_reason is None for s in streams):
        session.step()
    return [s.text for s in streams]


@pytest.fixture(scope="module")
def engine():
    return LSTMEngine(random_weights(units=16, scale=1.0), 2)


def alone(engine, spec):
    session = SamplingSession(engine, CHARS)
    return finish(session, [session.add(spec)])[0]


@pytest.mark.slow
def test_a_stream_writes_the_same_text_alone_and_joining_a_busy_batch_late(engine):
    spec = StreamSpec(prime="abc", length=200, temperature=1.0, seed=7, index=3)
    expected = alone(engine, StreamSpec(**vars(spec)))
    session = SamplingSession(engine, CHARS)
    others = [session.add(StreamSpec(prime="g" * (i % 5), length=50 + 7 * i, temperature=0.5 + i / 40,
                                     top_k=None if i % 3 else 3, top_p=None if i % 4 else 0.9, seed=i, index=i))
              for i in range(60)]
    for _ in range(13):  # the batch is running when the stream joins; others leave while it runs
        session.step()
    late = session.add(StreamSpec(**vars(spec)))
    assert session.active == 61
    finish(session, [late, *others])
    assert late.text == expected and len(expected) == 200 and late.finish_reason == "length"
    assert session.active == 0
    assert alone(engine, StreamSpec(**{**vars(spec), "seed": 8})) != expected  # the seed matters


def test_cancelled_stream_leaves_at_once_and_the_others_are_unchanged(engine):
    specs = [StreamSpec(prime="a", length=120, temperature=1.0, seed=1, index=i) for i in range(4)]
    expected = [alone(engine, StreamSpec(**vars(s))) for s in specs]
    session = SamplingSession(engine, CHARS)
    streams = [session.add(StreamSpec(**vars(s))) for s in specs]
    for _ in range(30):
        session.step()
    session.cancel(streams[1])
    assert session.active == 3 and streams[1].finish_reason == "cancelled"
    assert len(streams[1].text) == 30
    finish(session, streams)
    assert [s.text for i, s in enumerate(streams) if i != 1] == [t for i, t in enumerate(expected) if i != 1]


def test_stops_end_one_stream_and_hold_back_at_most_the_longest_stop_minus_one(engine):
    session = SamplingSession(engine, CHARS)
    stream = session.add(StreamSpec(prime="a", length=2000, temperature=1.0, seed=3, stops=["ab", "gfe"]))
    shown = 0
    while stream.finish_reason is None:
        shown += sum(len(p.text) for p in session.step())
        assert stream.generated - shown <= 2 or stream.finish_reason is not None
    assert stream.finish_reason == "stop" and stream.stop in ("ab", "gfe")
    assert stream.stop not in stream.text and len(stream.text) < 2000


def test_logprobs_are_the_models_log_softmax_with_the_top_alternatives(engine):
    session = SamplingSession(engine, CHARS)
    stream = session.add(StreamSpec(prime="abc", length=40, temperature=0.7, seed=2, logprobs=3, prime_logprobs=True))
    entries = []
    while stream.finish_reason is None:
        for piece in session.step():
            assert len(piece.logprobs) == len(piece.text)
            entries += piece.logprobs
    # Recompute with a plain engine state: prime, then the generated characters one by one.
    state = engine.initial_state(1, threads=1)
    ids = [CHARS.index(c) for c in "abc" + stream.text]
    expected = []
    for previous, current in zip(ids, ids[1:]):
        row = log_softmax(engine.step(np.array([previous]), state))[0]
        expected.append((CHARS[current], row[current], sorted(row)[::-1][:3]))
    prime_part, generated_part = expected[:2], expected[2:]
    assert stream.prime_logprobs[0] is None
    for entry, (char, logprob, _) in zip(stream.prime_logprobs[1:], prime_part):
        assert entry.char == char and math.isclose(entry.logprob, logprob, abs_tol=1e-5)
    assert len(entries) == len(generated_part) == 40
    for entry, (char, logprob, top) in zip(entries, generated_part):
        assert entry.char == char and math.isclose(entry.logprob, logprob, abs_tol=1e-5)
        assert [round(lp, 5) for _, lp in entry.top] == [round(lp, 5) for lp in top]
        assert len({c for c, _ in entry.top}) == 3


def test_greedy_stream_is_the_argmax_path(engine):
    session = SamplingSession(engine, CHARS)
    stream = session.add(StreamSpec(prime="b", length=30, temperature=0))
    finish(session, [stream])
    state = engine.initial_state(1, threads=1)
    logits = engine.feed([CHARS.index("b")], state)
    text = ""
    for _ in range(30):
        i = int(np.argmax(logits[0]))
        text += CHARS[i]
        logits = engine.step(np.array([i]), state)
    assert stream.text == text


def test_bad_specs_are_refused_and_leave_the_batch_alone(engine):
    session = SamplingSession(engine, CHARS)
    running = session.add(StreamSpec(prime="a", length=10))
    for bad, message in ((StreamSpec(temperature=-1), "temperature"), (StreamSpec(top_k=0), "top_k"),
                         (StreamSpec(top_p=1.5), "top_p"), (StreamSpec(length=0), "length"),
                         (StreamSpec(stops=[""]), "stop"), (StreamSpec(logprobs=99), "logprobs")):
        with pytest.raises(ConfigError, match=message):
            session.add(bad)
    with pytest.raises(CorpusError, match="'z'"):
        session.add(StreamSpec(prime="abz"))
    assert session.active == 1
    finish(session, [running])
    assert len(running.text) == 10


def test_worker_thread_gives_the_same_logits_as_one_thread():
    weights = random_weights(units=32, scale=1.0)
    # the numpy step's worker thread (the compiled step's is tested in test_kernel.py)
    one, two = LSTMEngine(weights, 2, threads=1, compiled=False), LSTMEngine(weights, 2, threads=2, compiled=False)
    for rows in (1, 5, 40):
        a, b = one.initial_state(rows), two.initial_state(rows)
        ids = np.arange(rows) % 7
        for _ in range(25):
            x, y = one.step(ids, a).copy(), two.step(ids, b).copy()
            ids = np.argmax(x, axis=-1)
        assert np.abs(x - y).max() < 1e-4  # rounding only (column halves may sum in another order)
        b.close()
