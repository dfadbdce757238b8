"""`textgen serve` through the unmodified openai client: models, completions, chat, native."""

from __future__ import annotations

import math

import httpx
import pytest
from helpers import Server, client, sse_events

pytestmark = pytest.mark.slow
TEMPLATE = "{role}: {content}\n"


@pytest.fixture(scope="module")
def server(tiny_run):
    s = Server(tiny_run.checkpoints, "--run", "tiny", "--chat-template", TEMPLATE)
    yield s
    assert s.stop() == 0, s.log()


def test_models_list_and_get(server):
    c = client(server)
    models = c.models.list().data
    assert [m.id for m in models] == ["tiny"]
    card = c.models.retrieve("tiny")
    extra = card.model_extra
    assert extra["vocab_size"] == 36 and extra["checkpoint_step"] == 250
    assert extra["parameters"] == 36 * 8 + 16 * 36 + 36 + 4 * 16 * (8 + 16 + 1)
    assert 0 < extra["validation_bpc"] < 10


def test_completion_and_stream_give_the_same_seeded_text(server):
    c = client(server)
    whole = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=60, seed=7, temperature=0.8)
    assert len(whole.choices[0].text) == 60 and whole.choices[0].finish_reason == "length"
    assert whole.model_extra["seed"] == 7
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (6, 60)
    pieces = [chunk.choices[0].text for chunk in
              c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=60, seed=7, temperature=0.8, stream=True)]
    assert "".join(pieces) == whole.choices[0].text


def test_a_request_without_seed_gets_one_that_replays_it(server):
    c = client(server)
    first = c.completions.create(model="tiny", prompt="O", max_tokens=40)
    seed = first.model_extra["seed"]
    assert isinstance(seed, int)
    again = c.completions.create(model="tiny", prompt="O", max_tokens=40, seed=seed)
    assert again.choices[0].text == first.choices[0].text


def test_n_choices_and_prompt_lists(server):
    c = client(server)
    answer = c.completions.create(model="tiny", prompt=["ROMEO", "JULIET"], n=3, max_tokens=20, seed=1)
    assert [ch.index for ch in answer.choices] == list(range(6))
    assert len({ch.text for ch in answer.choices}) > 1  # choices differ: each draws from (seed, index)
    assert answer.usage.completion_tokens == 6 * 20 and answer.usage.prompt_tokens == 5 + 6
    # Choice 3 is JULIET's first choice but draws from (seed, 3); alone, JULIET is choice 0.
    alone = c.completions.create(model="tiny", prompt="JULIET", n=4, max_tokens=20, seed=1)
    assert alone.choices[3].text == answer.choices[3].text


def test_temperature_zero_is_greedy(server):
    c = client(server)
    texts = {c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=30, temperature=0, seed=s).choices[0].text
             for s in (1, 2, 3)}
    assert len(texts) == 1


def test_stop_strings_end_the_text_without_showing_them(server):
    c = client(server)
    free = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=200, seed=5).choices[0].text
    stop = free[40:42]
    cut = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=200, seed=5, stop=[stop, "@@"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == free[: free.index(stop)]
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny", prompt="ROMEO:", max_tokens=200, seed=5, stop=stop, stream=True))
    assert streamed == cut.choices[0].text


def test_logprobs_and_echo(server):
    c = client(server)
    answer = c.completions.create(model="tiny", prompt="ROMEO", max_tokens=10, seed=3, logprobs=3, echo=True)
    choice = answer.choices[0]
    assert choice.text.startswith("ROMEO") and len(choice.text) == 15
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == list(range(15))
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for value, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert value <= 0 and len(top) == 3
        assert max(top.values()) >= value - 1e-9  # the best alternative is at least as likely
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6


def test_streamed_logprobs_carry_offsets_across_chunks(server):
    c = client(server)
    offsets, text = [], ""
    for chunk in c.completions.create(model="tiny", prompt="O", max_tokens=50, seed=3, logprobs=1, stream=True):
        choice = chunk.choices[0]
        if choice.logprobs:
            offsets += choice.logprobs.text_offset
            assert "".join(choice.logprobs.tokens) == choice.text
        text += choice.text
    assert offsets == list(range(len(text))) and len(text) == 50


def test_stream_include_usage(server):
    c = client(server)
    chunks = list(c.completions.create(model="tiny", prompt="O", max_tokens=12, seed=1, stream=True,
                                       stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_through_the_template(server):
    c = client(server)
    messages = [{"role": "user", "content": "ROMEO"}]
    answer = c.chat.completions.create(model="tiny", messages=messages, max_tokens=30, seed=2)
    text = answer.choices[0].message.content
    assert answer.choices[0].message.role == "assistant"
    # The template's text after {content} ("\n") is the default stop: a reply is one line.
    assert "\n" not in text
    same = c.completions.create(model="tiny", prompt="user: ROMEO\nassistant: ", max_tokens=30, seed=2, stop="\n")
    assert text == same.choices[0].text
    deltas = [ch.choices[0].delta for ch in c.chat.completions.create(
        model="tiny", messages=messages, max_tokens=30, seed=2, stream=True) if ch.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == text


def test_native_endpoint_runs_choices_with_their_own_settings(server):
    body = {"model": "tiny", "prompt": "ROMEO", "seed": 9,
            "samples": [{"temperature": 0, "max_tokens": 20}, {"temperature": 1.5, "max_tokens": 30, "top_k": 5}]}
    answer = httpx.post(server.url + "/v1/textgen/generate", json=body, timeout=30).json()
    first, second = answer["samples"]
    assert len(first["text"]) == 20 and len(second["text"]) == 30
    greedy = client(server).completions.create(model="tiny", prompt="ROMEO", max_tokens=20, temperature=0)
    assert first["text"] == greedy.choices[0].text
    hot = client(server).completions.create(model="tiny", prompt="ROMEO", max_tokens=30, temperature=1.5, seed=9, n=2,
                                            extra_body={"top_k": 5})
    assert second["text"] == hot.choices[1].text  # choice 1 of seed 9 either way
    streamed = httpx.post(server.url + "/v1/textgen/generate", json={**body, "stream": True}, timeout=30)
    events = sse_events(streamed.content)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 50
    texts = ["", ""]
    for e in events[:-2]:
        for sample in e["samples"]:
            texts[sample["index"]] += sample["text"]
    assert texts == [first["text"], second["text"]]


def test_openapi_documents_the_native_endpoint(server):
    schema = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert "/v1/textgen/generate" in schema["paths"] and "/v1/completions" in schema["paths"]
    assert "samples" in schema["components"]["schemas"]["NativeRequest"]["properties"]
    assert httpx.get(server.url + "/docs", timeout=10).status_code == 200


def test_runs_view_data(server):
    data = httpx.get(server.url + "/v1/textgen/runs", timeout=10).json()["data"]
    assert data[0]["id"] == "tiny" and data[0]["history"][-1]["step"] == 250
    assert [r["step"] for r in data[0]["history"] if "val_bpc" in r] == [50, 100, 150, 200, 250]
    assert data[0]["config"]["model"]["units"] == 16
