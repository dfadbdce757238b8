"""Steering through `textgen serve`: `regex` (and vLLM's `guided_regex`) and `ban` on the OpenAI
endpoints and per choice on the native one, lines mode (`lines`, `novel`, `unique`) on the native
endpoint; the unmodified openai client and httpx on a real server."""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
from helpers import Server, client, invoke, openai_error, sse_events

pytestmark = pytest.mark.slow
PATTERN = "[A-Z][a-z]+ [a-z]+[.?]"
NATIVE = "/v1/textgen/generate"


@pytest.fixture(scope="module")
def server(tiny_run):
    s = Server(tiny_run.checkpoints, "--run", "tiny", "--chat-template", "{role}: {content}\n")
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def names_server(names_run):
    checkpoints, _ = names_run
    s = Server(checkpoints, "--run", "names")
    yield s
    assert s.stop() == 0, s.log()


def _post(server, body, path=NATIVE):
    return httpx.post(server.url + path, json=body, timeout=60)


def test_every_completion_matches_whole_or_streamed(server):
    c = client(server)
    answer = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=40, n=4, seed=3,
                                  extra_body={"regex": PATTERN})
    texts = [choice.text for choice in answer.choices]
    assert all(re.fullmatch(PATTERN, t) for t in texts), texts
    assert {choice.finish_reason for choice in answer.choices} <= {"stop", "length"}
    assert answer.usage.completion_tokens == sum(map(len, texts))
    streamed = [""] * 4
    for chunk in c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=40, n=4, seed=3, stream=True,
                                      extra_body={"guided_regex": PATTERN}):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == texts


def test_chat_keeps_to_the_pattern_and_skips_the_templates_stop(server):
    c = client(server)
    messages = [{"role": "user", "content": "ROMEO"}]
    pattern = "[a-z]+ [a-z]+\n[A-Z]+:"  # a line end inside: the template's default stop ("\n") would cut it
    reply = c.chat.completions.create(model="tiny", messages=messages, max_tokens=60, seed=4,
                                      extra_body={"regex": pattern})
    assert re.fullmatch(pattern, reply.choices[0].message.content), reply.choices[0].message.content
    deltas = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="tiny", messages=messages, max_tokens=60, seed=4, stream=True, extra_body={"regex": pattern})
        if ch.choices]
    assert "".join(deltas) == reply.choices[0].message.content


def test_a_banned_word_is_never_completed(server):
    c = client(server)
    free = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=200, n=4, seed=6, temperature=0.5)
    assert any("the" in choice.text for choice in free.choices)  # so the ban has something to do
    banned = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=200, n=4, seed=6, temperature=0.5,
                                  extra_body={"ban": ["the", "Romeo"]})
    for choice in banned.choices:
        assert "the" not in choice.text and "Romeo" not in choice.text and len(choice.text) == 200


def test_same_seed_and_constraint_same_text_alone_or_in_a_full_batch(server):
    c = client(server)
    steer = {"regex": PATTERN, "ban": ["ee"]}
    alone = c.completions.create(model="tiny", prompt="O", max_tokens=50, seed=11, temperature=1.2, extra_body=steer)
    others: list = []

    def busy():  # an unconstrained stream stepping in the same batch meanwhile
        others.append("".join(ch.choices[0].text for ch in c.completions.create(
            model="tiny", prompt="JULIET", max_tokens=400, seed=1, stream=True)))

    thread = threading.Thread(target=busy)
    thread.start()
    full = c.completions.create(model="tiny", prompt="O", max_tokens=50, n=16, seed=11, temperature=1.2,
                                extra_body=steer)
    thread.join(timeout=60)
    assert full.choices[0].text == alone.choices[0].text and len(others[0]) == 400
    # per choice on the native endpoint: choice 0 steered among choices that are not, or otherwise
    one = {"temperature": 1.2, "max_tokens": 50, **steer}
    native_alone = _post(server, {"model": "tiny", "prompt": "O", "seed": 11, "samples": [one]}).json()
    mixed = [one, {"max_tokens": 80}, {"max_tokens": 30, "ban": ["the"]}, {"regex": "[a-z ]+", "top_k": 5},
             {"temperature": 0, "max_tokens": 20}, {"top_p": 0.9}]
    native = _post(server, {"model": "tiny", "prompt": "O", "seed": 11, "samples": mixed}).json()
    assert native["samples"][0]["text"] == native_alone["samples"][0]["text"] == alone.choices[0].text
    assert re.fullmatch("[a-z ]+", native["samples"][3]["text"]) and "the" not in native["samples"][2]["text"]
    events = sse_events(httpx.post(server.url + NATIVE, json={"model": "tiny", "prompt": "O", "seed": 11,
                                                              "samples": mixed, "stream": True}, timeout=60).content)
    texts = [""] * len(mixed)
    for event in events[:-2]:
        for sample in event["samples"]:
            texts[sample["index"]] += sample["text"]
    assert texts == [s["text"] for s in native["samples"]]


@pytest.mark.parametrize("body, param, fragments", [
    ({"regex": "[xzQ]+"}, "regex", ["No text over the model's 36 characters matches regex"]),
    ({"regex": "(ab"}, "regex", ["not a valid regular expression"]),
    ({"guided_regex": "(?=a)b"}, "guided_regex", ["lookahead"]),
    ({"regex": "[ab]*a[ab]{20}"}, "regex", ["more than 20,000 states"]),
    ({"regex": "a", "guided_regex": "b"}, "guided_regex", ["give one, or the same in both"]),
    ({"regex": "[a-z]{30}", "max_tokens": 5}, "max_tokens", ["needs at least 30 more characters"]),
    ({"regex": "[a-z]+", "stop": "\n"}, "stop", ["stop does not combine with regex"]),
    ({"ban": ["Zebra"]}, "ban", ["never saw ('Z')", "Received: ban='Zebra'"]),
    ({"ban": [""]}, "ban", ["must not be empty"]),
    ({"ban": ["x" * 65]}, "ban", ["at most 64 characters"]),
])
def test_constraints_that_cannot_be_kept_are_400_naming_the_field(server, body, param, fragments):
    for stream in (False, True):  # refused before anything streams
        answer = _post(server, {"model": "tiny", "prompt": "O", "max_tokens": 40, "stream": stream, **body},
                       "/v1/completions")
        assert answer.headers["content-type"].startswith("application/json")
        openai_error(answer, param, *fragments)
    native = {key: value for key, value in body.items() if key != "stream"}
    answer = _post(server, {"model": "tiny", "prompt": "O", "samples": [{}, {"max_tokens": 40, **native}]})
    openai_error(answer, f"samples[1].{param}", *fragments)


def test_lines_mode_gives_the_lines_of_textgen_sample(names_server, names_run):
    checkpoints, names = names_run
    settings = {"temperature": 0.8, "max_tokens": 40}
    body = {"model": "names", "lines": 12, "novel": True, "unique": True, "seed": 3, "samples": [settings]}
    answer = _post(names_server, body).json()
    lines = [sample["text"] for sample in answer["samples"]]
    assert len(lines) == 12 and len(set(lines)) == 12 and not set(lines) & names
    assert all(line.strip() and "\n" not in line for line in lines)
    report = answer["lines"]
    assert report["kept"] == 12 and report["sampled"] == 12 + sum(report["dropped"].values())
    cli = invoke("sample", "--checkpoints", checkpoints, "--run", "names", "--seed", 3, "--lines", 12, "--novel",
                 "--unique", "--temperature", 0.8, "--length", 40, "--json")
    assert cli.exit_code == 0, cli.output
    data = json.loads(cli.stdout)
    assert data["lines"] == lines and data["dropped"] == report["dropped"]
    assert report["report"] == cli.stderr.strip()
    worded = _post(names_server, {"model": "names", "lines": 5, "seed": 2, "must_include": ["a"],
                                  "samples": [{"max_tokens": 20, "temperature": 0.8}]}).json()
    cli = invoke("sample", "--checkpoints", checkpoints, "--run", "names", "--seed", 2, "--lines", 5, "--length", 20,
                 "--must-include", "a", "--json")
    assert [s["text"] for s in worded["samples"]] == json.loads(cli.stdout)["lines"]
    assert all("a" in s["text"] for s in worded["samples"]) and worded["lines"]["dropped"]["missing_word"] > 0
    steered = _post(names_server, {"model": "names", "lines": 5, "prompt": "Ma", "seed": 2,
                                   "samples": [{"regex": "Ma[a-z]{2,4}", "max_tokens": 10}]}).json()
    assert len(steered["samples"]) == 5
    assert all(re.fullmatch("Ma[a-z]{2,4}", s["text"]) for s in steered["samples"]), steered


def test_lines_mode_streams_each_rounds_kept_lines(names_server):
    body = {"model": "names", "lines": 12, "novel": True, "unique": True, "seed": 3,
            "samples": [{"temperature": 0.8, "max_tokens": 40}]}
    whole = _post(names_server, body).json()
    answer = _post(names_server, {**body, "stream": True})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer.content)
    assert events[-1] == "[DONE]"
    kept = [sample for event in events[:-2] for sample in event["samples"]]
    assert [s["index"] for s in kept] == list(range(12))  # the kept lines' places, in order
    assert [s["text"] for s in kept] == [s["text"] for s in whole["samples"]]  # the same lines as the whole answer
    assert all(s["finish_reason"] == "stop" and s["seed"] == 3 for s in kept)
    closing = events[-2]
    assert closing["id"] == events[0]["id"] and closing["lines"] == whole["lines"] and closing["usage"] == whole["usage"]
    # no line kept: the 422's error object as the stream's last event
    none = sse_events(_post(names_server, {"model": "names", "lines": 4, "must_include": ["zqz"], "seed": 1,
                                           "samples": [{"max_tokens": 20}], "stream": True}).content)
    assert none[-1] == "[DONE]" and none[-2]["error"]["code"] == "no_line_kept", none
    # a client that leaves after the first event: the server goes on serving, with nothing left in its batch
    with httpx.stream("POST", names_server.url + NATIVE, json={"model": "names", "lines": 16, "stream": True,
                                                                "must_include": ["zq"], "seed": 5}, timeout=60) as r:
        assert r.status_code == 200 and next(r.iter_lines()).startswith("data: ")
    names_server.wait_streams(0, timeout=10)
    assert _post(names_server, {**body, "lines": 2}).status_code == 200


def test_lines_mode_refuses_what_it_cannot_do(names_server):
    openai_error(_post(names_server, {"model": "names", "lines": 3, "logprobs": 2}), "logprobs", "Lines mode")
    openai_error(_post(names_server, {"model": "names", "lines": 3, "samples": [{}, {}]}), "samples", "Lines mode")
    openai_error(_post(names_server, {"model": "names", "lines": 3, "samples": [{"stop": "a"}]}), "samples[0].stop")
    openai_error(_post(names_server, {"model": "names", "lines": 17}), "lines", "at most 16")
    openai_error(_post(names_server, {"model": "names", "samples": [{}], "novel": True}), "novel", "give lines")
    openai_error(_post(names_server, {"model": "names"}), "samples", "Missing required parameter")
    openai_error(_post(names_server, {"model": "names", "lines": 2, "samples": [{"regex": "[0-9]+"}]}), "samples[0].regex")
    openai_error(_post(names_server, {"model": "names", "samples": [{}], "must_include": ["a"]}), "must_include", "give lines")
    openai_error(_post(names_server, {"model": "names", "lines": 2, "must_include": ["José"]}), "must_include", "never saw")
    openai_error(_post(names_server, {"model": "names", "lines": 2, "must_include": [""]}), "must_include", "must not be empty")
    openai_error(_post(names_server, {"model": "names", "lines": 2, "must_include": ["abcdef"], "samples": [{"max_tokens": 3}]}),
           "must_include", "longer than a sample")


def test_lines_need_line_ends_and_novel_needs_the_training_text():
    from types import SimpleNamespace

    from textgen.serve.envelopes import APIError
    from textgen.serve.requests import plan_lines
    from textgen.serve.schemas import NativeRequest
    from textgen.serve.settings import Settings

    flat = SimpleNamespace(name="flat", info={"vocab": list("abc ")}, chars=frozenset("abc "))
    with pytest.raises(APIError) as caught:
        plan_lines(NativeRequest(model="flat", lines=2), flat, Settings())
    assert caught.value.param == "lines" and "lines needs a run trained on lines" in caught.value.message
    gone = SimpleNamespace(name="gone", info={"vocab": list("ab\n"), "corpus": {"source": "/nowhere/names.txt", "lines": True}},
                           chars=frozenset("ab\n"))
    with pytest.raises(APIError) as caught:
        plan_lines(NativeRequest(model="gone", lines=2, novel=True), gone, Settings())
    assert caught.value.param == "novel" and "gone or not recorded" in caught.value.message


def test_lines_mode_refuses_unsatisfiable_and_loose_requests(names_server, server):
    none = _post(names_server, {"model": "names", "lines": 4, "must_include": ["zqz"], "seed": 1,
                                "samples": [{"max_tokens": 20}]})
    assert none.status_code == 422, none.text  # valid, but no line could be kept: as the CLI's exit 1
    error = none.json()["error"]
    assert error["param"] == "lines" and error["code"] == "no_line_kept" and "No line was kept" in error["message"]
    assert "without a must_include word" in error["message"] and "--" not in error["message"], error
    openai_error(_post(server, {"model": "tiny", "lines": 2}), "lines", "lines needs a run trained on lines")
    openai_error(_post(names_server, {"model": "names", "lines": 2, "prompt": "Jo\n"}), "prompt", "cannot hold a line end")
    two = openai_error(_post(names_server, {"model": "names", "lines": 3, "samples": [{}, {}]}), "samples",
                       "Received: samples=2 entries")
    assert "SampleSpec" not in two["message"]
    openai_error(_post(names_server, {"model": "names", "lines": 2, "must_include": ["Jo"],
                                "samples": [{"ban": ["Jo"]}]}), "must_include", "opposite")
    for loose in ("3", True, 2.0):
        answer = _post(names_server, {"model": "names", "lines": loose})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "lines", answer.text
    answer = _post(names_server, {"model": "names", "lines": 2, "novel": "yes"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "novel", answer.text
