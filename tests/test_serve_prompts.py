"""Prompts count: a prime fed in slices starts the same stream and is scored in the same pass; a
request's prompt runs once for its n choices; prompt characters x choices meet a limit; a long
prompt never stops a short request; a client that leaves during admission frees its prompt."""

from __future__ import annotations

import math
from dataclasses import replace

import httpx
import numpy as np
import pytest
from helpers import TINY_TEXT, require, wait_until

require("fastapi")

from helpers import send_request, settings_server  # noqa: E402

from textgen.generation.draw import log_softmax  # noqa: E402
from textgen.generation.loading import load_run, start_id  # noqa: E402
from textgen.generation.session import SamplingSession, StreamSpec  # noqa: E402

LONG = 800_000  # characters of each long prompt (the body stays under the 1 MB limit)


def _finish(session, streams):
    while any(s.finish_reason is None for s in streams):
        session.step()


def test_a_prime_fed_in_slices_starts_the_same_stream_and_is_scored_once_for_all_choices(tiny_run):
    info, _, engine = load_run(tiny_run.run)
    chars = info["vocab"]
    prompt = TINY_TEXT[:150]
    spec = StreamSpec(prime=prompt, length=120, temperature=1.0, seed=5, logprobs=3, prime_logprobs=True)
    whole = SamplingSession(engine, chars, start_id(chars))
    expected = [whole.add(replace(spec, index=i)) for i in range(3)]
    _finish(whole, expected)
    session = SamplingSession(engine, chars, start_id(chars))
    busy = session.add(StreamSpec(prime="O", length=500, seed=1))
    specs = [replace(spec, index=i) for i in range(3)]
    primings = session.prepare(specs)
    assert primings[0] is primings[1] is primings[2] and primings[0].left == len(prompt)  # one prime for 3 choices
    steps = 0
    while not primings[0].done:  # the batch keeps stepping between slices
        primings[0].feed(7)
        session.step()
        steps += 1
    assert steps == math.ceil(len(prompt) / 7) and busy.generated == steps
    streams = [session.add(s, p) for s, p in zip(specs, primings)]
    _finish(session, [*streams, busy])
    assert [s.text for s in streams] == [s.text for s in expected]
    assert streams[0].prime_logprobs is streams[1].prime_logprobs is streams[2].prime_logprobs
    # The scores against a direct pass: the logits after character j score character j + 1.
    state = engine.initial_state(1, threads=1)
    ids = [chars.index(c) for c in prompt]
    scores = streams[0].prime_logprobs
    assert scores[0] is None and len(scores) == len(prompt)
    for j, (previous, current) in enumerate(zip(ids, ids[1:])):
        row = log_softmax(engine.step(np.array([previous]), state))[0]
        entry = scores[j + 1]
        assert entry.char == chars[current] and math.isclose(entry.logprob, row[current], abs_tol=1e-9)
        assert [c for c, _ in entry.top] == [chars[i] for i in np.argsort(-row, kind="stable")[:3]]


# ----------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(tiny_run):
    s = settings_server(tiny_run.checkpoints, max_prompt=LONG, max_prompt_total=1_000_000, quiet=True)
    yield s
    assert s.stop() == 0


def _post(server, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", json={"model": "tiny", **body}, timeout=120)


@pytest.mark.slow
def test_prompt_characters_times_choices_meet_a_limit_and_a_prompt_runs_once_for_its_choices(server):
    over = _post(server, {"prompt": "O" * 400_000, "n": 3, "max_tokens": 1})
    assert over.status_code == 400, over.text
    error = over.json()["error"]
    assert error["param"] == "prompt" and error["code"] == "invalid_value"
    assert "1000000" in error["message"] and "1200000 over 3 choices" in error["message"]
    prompt = (TINY_TEXT * 5)[17:517]  # a prompt no earlier request used (a fed prime is cached)
    fed = server.metric("textgen_prompt_characters_fed_total")
    eight = _post(server, {"prompt": prompt, "n": 8, "echo": True, "logprobs": 2, "max_tokens": 5, "seed": 3}).json()
    assert server.metric("textgen_prompt_characters_fed_total") - fed == len(prompt)  # once, not 8 times
    echoed = [c["logprobs"]["token_logprobs"][: len(prompt)] for c in eight["choices"]]
    assert all(e == echoed[0] for e in echoed) and echoed[0][0] is None and len(echoed[0]) == len(prompt)
    assert all(c["text"].startswith(prompt) for c in eight["choices"])
    one = _post(server, {"prompt": prompt, "echo": True, "logprobs": 2, "max_tokens": 5, "seed": 3}).json()
    assert one["choices"][0]["logprobs"]["token_logprobs"][: len(prompt)] == echoed[0]
    assert one["choices"][0]["text"] == eight["choices"][0]["text"]


@pytest.mark.slow
def test_a_short_request_is_answered_while_long_prompts_are_fed_and_leaving_clients_free_theirs(server):
    fed = server.metric("textgen_prompt_characters_fed_total")
    long = [send_request(server.port, {"model": "tiny", "prompt": (TINY_TEXT * 8000)[i:i + LONG], "max_tokens": 1,
                                       "stream": True}) for i in range(3)]
    try:
        # One long prompt is fed at a time (two pass PRIMING_CHARS): all three wait for the batch.
        wait_until(lambda: server.metric("textgen_prompt_characters_waiting") > 0
                   and server.metric("textgen_queue_length") == 3, timeout=60, what="a long prompt being fed")
        short = _post(server, {"prompt": "O", "max_tokens": 5})
        assert short.status_code == 200 and len(short.json()["choices"][0]["text"]) == 5
        assert server.metric("textgen_prompt_characters_waiting") > 0  # the first long one was still being fed
        assert server.metric("textgen_queue_length") == 3  # and the short one passed the two behind it
    finally:
        for sock in long:
            sock.close()
    wait_until(lambda: server.metric("textgen_prompt_characters_waiting") == 0
               and server.metric("textgen_queue_length") == 0, timeout=30, what="the leaving clients' prompts freed")
    # What was fed stopped where the clients left: far from the three prompts' 2,400,000 characters.
    assert server.metric("textgen_prompt_characters_fed_total") - fed < LONG


@pytest.mark.slow
def test_stop_strings_are_capped_in_count_and_length(server):
    from textgen.serve.settings import MAX_STOP_LENGTH, MAX_STOPS

    for stop, said in ((["a"] * (MAX_STOPS + 1), f"at most {MAX_STOPS} stop strings"),
                       ("O" * (MAX_STOP_LENGTH + 1), f"at most {MAX_STOP_LENGTH} characters")):
        answer = _post(server, {"prompt": "O", "max_tokens": 5, "stop": stop})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "stop", answer.text
        assert said in answer.json()["error"]["message"]
    native = httpx.post(server.url + "/v1/textgen/generate", timeout=60, json={
        "model": "tiny", "prompt": "O", "samples": [{"max_tokens": 5, "stop": "O" * (MAX_STOP_LENGTH + 1)}]})
    assert native.status_code == 400 and native.json()["error"]["param"] == "samples[0].stop", native.text
    assert _post(server, {"prompt": "O", "max_tokens": 5, "stop": "O" * MAX_STOP_LENGTH}).status_code == 200
