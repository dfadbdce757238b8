"""Labels through `textgen serve`: `label` on /v1/completions (an extension, like `regex`) and on
the native endpoint (per request, and per choice in `samples`), fed before the prompt as
`textgen sample --label` and the Python API feed it; the unmodified openai client and httpx on a
real server that serves a run trained on a labelled table beside one trained without labels."""

from __future__ import annotations

import json
import math
import random
import re

import httpx
import openai
import pytest
from helpers import TINY_SIZE, Server, client, invoke, openai_error, page_generate, random_weights, sse_events, wait_js

from textgen.documents import BOUNDARY
from textgen.tables import LABEL_END, label_lead

NATIVE = "/v1/textgen/generate"
ANSWERS = {"good": "yes!", "bad": "no."}  # what the labelled run learns to write after each label


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    """A checkpoints directory with "answers" (trained on records labelled good or bad: the label
    decides the text, as in test_tables.py) and a copy of the unlabelled "tiny"."""
    root = tmp_path_factory.mktemp("labels")
    checkpoints = tiny_run.copy(root / "ck")
    rng = random.Random(0)
    path = root / "answers.jsonl"
    path.write_text("".join(json.dumps({"answer": ANSWERS[label], "mood": label}) + "\n"
                            for label in (rng.choice(["good", "bad"]) for _ in range(240))), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTGEN_CACHE_DIR", str(root / "cache"))
        result = invoke("train", "--jsonl", path, "--text-field", "answer", "--label-field", "mood", *TINY_SIZE,
                        "--dropout", 0, "--seq-len", 16, "--batch-size", 8, "--epochs", 15, "--learning-rate", 0.02,
                        "--checkpoints", checkpoints, "--run", "answers")
    assert result.exit_code == 0, result.output
    return checkpoints


@pytest.fixture(scope="module")
def server(runs):
    s = Server(runs, "--run", "answers", "--run", "tiny")
    yield s
    assert s.stop() == 0, s.log()


def _post(server, body, path=NATIVE):
    return httpx.post(server.url + path, json=body, timeout=60)


@pytest.mark.slow
def test_the_label_decides_the_text_on_both_endpoints(server):
    for label, answer in ANSWERS.items():
        greedy = client(server).completions.create(model="answers", prompt="", max_tokens=4, temperature=0,
                                                   stop=[BOUNDARY], extra_body={"label": label})
        assert greedy.choices[0].text == answer  # the label is read, not returned
    native = _post(server, {"model": "answers", "label": "good", "samples": [
        {"temperature": 0, "max_tokens": 4, "stop": BOUNDARY},  # the request's label
        {"temperature": 0, "max_tokens": 4, "stop": BOUNDARY, "label": "bad"}]})  # its own
    assert native.status_code == 200, native.text
    assert [s["text"] for s in native.json()["samples"]] == ["yes!", "no."]
    # usage counts what the model read: each distinct label's lead (its two marks too) with the prompt
    assert greedy.usage.prompt_tokens == len(BOUNDARY + "bad" + LABEL_END)
    assert native.json()["usage"]["prompt_tokens"] == len(BOUNDARY + "good" + LABEL_END + BOUNDARY + "bad" + LABEL_END)
    plain = client(server).completions.create(model="tiny", prompt="To be", max_tokens=2, temperature=0)
    assert plain.usage.prompt_tokens == len("To be")


@pytest.mark.slow
def test_chat_takes_a_label_before_its_rendered_messages(runs):
    # a template of the content alone: the labelled run's vocabulary has no roles' letters
    s = Server(runs, "--run", "answers", "--chat-template", "{content}")
    try:
        c = client(s)
        messages = [{"role": "user", "content": "n"}]
        chat = c.chat.completions.create(model="answers", messages=messages, max_tokens=12, temperature=0.5, seed=3,
                                         stop=[BOUNDARY], extra_body={"label": "bad"})
        same = c.completions.create(model="answers", prompt="n", max_tokens=12, temperature=0.5, seed=3,
                                    stop=[BOUNDARY], extra_body={"label": "bad"})
        assert chat.choices[0].message.content == same.choices[0].text
        assert chat.usage.prompt_tokens == len(BOUNDARY + "bad" + LABEL_END + "n")
        good = c.chat.completions.create(model="answers", messages=[{"role": "user", "content": ""}], max_tokens=4,
                                         temperature=0, stop=[BOUNDARY], extra_body={"label": "good"})
        assert good.choices[0].message.content == ANSWERS["good"]  # the label reached the model
        unknown = _post(s, {"model": "answers", "messages": messages, "label": "pyhton"}, "/v1/chat/completions")
        openai_error(unknown, "label", "Unknown label", "'good'", "Received: label='pyhton'")
    finally:
        assert s.stop() == 0, s.log()


@pytest.mark.slow
def test_seeded_text_is_the_clis_and_the_apis(server, runs):
    import textgen

    model = textgen.load("answers", checkpoints=runs)
    expected = model.sample(label="bad", length=12, temperature=0.5, seed=2, n=2)
    cli = invoke("sample", "--checkpoints", runs, "--run", "answers", "--label", "bad", "--length", 12, "--seed", 2,
                 "--num-samples", 2, "--temperature", 0.5, "--json")
    assert cli.exit_code == 0, cli.output
    assert [s["text"] for s in json.loads(cli.stdout)["samples"]] == expected
    assert expected != model.sample(length=12, temperature=0.5, seed=2, n=2)  # so the label has something to do
    c = client(server)
    whole = c.completions.create(model="answers", prompt="", max_tokens=12, temperature=0.5, seed=2, n=2,
                                 extra_body={"label": "bad"})
    assert [choice.text for choice in whole.choices] == expected
    streamed = ["", ""]
    for chunk in c.completions.create(model="answers", prompt="", max_tokens=12, temperature=0.5, seed=2, n=2, stream=True,
                                      extra_body={"label": "bad"}):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == expected
    body = {"model": "answers", "seed": 2, "samples": [{"temperature": 0.5, "max_tokens": 12, "label": "bad"}] * 2}
    assert [s["text"] for s in _post(server, body).json()["samples"]] == expected
    events = sse_events(httpx.post(server.url + NATIVE, json={**body, "stream": True}, timeout=60).content)
    texts = ["", ""]
    for event in events[:-1]:
        for sample in event.get("samples", []):
            texts[sample["index"]] += sample["text"]
    assert events[-1] == "[DONE]" and texts == expected
    # a prompt after the label, echoed with its scores: the label is fed first and scored by nobody
    prompt = model.sample(label="good", length=3, temperature=0)
    echoed = c.completions.create(model="answers", prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=0,
                                  extra_body={"label": "good"})
    assert echoed.choices[0].text == prompt + model.sample(prompt, label="good", length=1, temperature=0)
    scores = echoed.choices[0].logprobs.token_logprobs
    assert scores[0] is None and all(math.isfinite(s) and s > math.log(0.5) for s in scores[1:len(prompt)]), scores


@pytest.mark.slow
def test_an_unknown_label_lists_the_known_ones(server, runs):
    cli = invoke("sample", "--checkpoints", runs, "--run", "answers", "--label", "meh")
    message = openai_error(_post(server, {"model": "answers", "prompt": "", "max_tokens": 4, "label": "meh"},
                                 "/v1/completions"), "label", "Unknown label: run 'answers' knows")["message"]
    assert "Error: " + message in cli.stderr  # the CLI's words
    assert "'bad'" in message and "'good'" in message and message.endswith("Received: label='meh'")
    openai_error(_post(server, {"model": "answers", "label": "meh", "samples": [{}]}), "label", "Unknown label")
    openai_error(_post(server, {"model": "answers", "samples": [{"label": "good"}, {"label": "meh"}]}), "samples[1].label",
           "Unknown label: run 'answers' knows", "Received: samples[1].label='meh'")
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).completions.create(model="answers", prompt="", max_tokens=4, extra_body={"label": ""})
    assert caught.value.body["param"] == "label" and "Unknown label" in caught.value.body["message"]


@pytest.mark.slow
def test_a_run_without_labels_takes_none(server):
    openai_error(_post(server, {"model": "tiny", "prompt": "O", "label": "good"}, "/v1/completions"), "label",
           "label needs a run trained with --label-field or --label-column; run 'tiny' has no labels",
           "Received: label='good'")
    openai_error(_post(server, {"model": "tiny", "samples": [{"label": "good"}]}), "samples[0].label", "has no labels")
    openai_error(_post(server, {"model": "tiny", "lines": 2, "label": "good"}), "label", "label writes records")
    assert _post(server, {"model": "tiny", "prompt": "O", "max_tokens": 3}, "/v1/completions").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", {"label": 5}, "label"),
    ("/v1/completions", {"label": ["good"]}, "label"),
    (NATIVE, {"label": True, "samples": [{}]}, "label"),
    (NATIVE, {"samples": [{"label": {"mood": "good"}}]}, "samples[0].label"),
    ("/v1/chat/completions", {"label": 5, "messages": [{"role": "user", "content": "x"}]}, "label"),
])
def test_a_label_that_is_not_text_is_refused(server, path, body, param):
    openai_error(_post(server, {"model": "answers", **body}, path), param)


def test_a_streams_own_lead_is_the_sessions_lead():
    # the server's per-request label (StreamSpec.lead) takes the path of the CLI's and the API's (session.lead)
    from textgen.generation.engine import LSTMEngine
    from textgen.generation.session import SamplingSession, StreamSpec

    chars = [BOUNDARY, LABEL_END, "a", "b", "c", "d", "e"]
    engine = LSTMEngine(random_weights(units=16, scale=1.0), 2)
    lead = tuple(label_lead({"corpus": {"documents": {"labels": {"a": 1}}}}, chars, "a"))

    def text(session_lead=(), spec_lead=()):
        session = SamplingSession(engine, chars, start_id=0)
        session.lead = session_lead
        stream = session.add(StreamSpec(prime="b", length=40, temperature=1.0, seed=3, index=1, lead=spec_lead))
        while stream.finish_reason is None:
            session.step()
        return stream.text

    assert text(spec_lead=lead) == text(session_lead=lead) == text(spec_lead=lead, session_lead=(2,)) != text()


def test_a_primes_scores_leave_out_its_lead():
    # echo with logprobs after a label: character j of the prompt is scored by the logits after
    # character j - 1, whatever was fed before the prompt
    from textgen.generation.engine import LSTMEngine
    from textgen.generation.priming import Priming

    chars = [BOUNDARY, LABEL_END, "a", "b", "c", "d", "e"]
    engine = LSTMEngine(random_weights(units=16, scale=1.0), 2)
    lead, prime = [0, 2, 1], [3, 4, 5, 3, 6]
    whole = Priming(engine, lead + prime, lead + prime, chars, score=2)
    whole.feed()
    for budget in (None, 1, 2):  # in one go, and in slices that cut the lead from the prime
        after = Priming(engine, prime, lead + prime, chars, score=2)
        while not after.done:
            after.feed(budget)
        assert after.scores[0] is None and len(after.scores) == len(prime)
        for j in range(1, len(prime)):
            got, want = after.scores[j], whole.scores[len(lead) + j]
            assert got.char == want.char and got.logprob == pytest.approx(want.logprob, abs=1e-6), (budget, j)
            assert [c for c, _ in got.top] == [c for c, _ in want.top]


@pytest.mark.slow
def test_the_playground_offers_a_runs_labels_and_a_pattern(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + "/")
    wait_js(page, "document.querySelector('#model').options.length == 2")
    texts = ("Array.from(document.querySelectorAll('.sample .text')).map("
             "e => e.textContent.slice(e.querySelector('.prefix').textContent.length))")
    page.select_option("#model", "answers")
    wait_js(page, "!document.querySelector('#label-field').hidden")
    assert page.eval_on_selector_all("#label option", "os => os.map(o => o.value)") == ["", "good", "bad"]
    page.eval_on_selector("#temperature", "e => { e.value = '0'; }")
    for label, answer in ANSWERS.items():  # greedy after each label: one record, the answer the run learnt for it
        page.select_option("#label", label)
        page.dispatch_event("#model", "change")  # the run's labels fetched again: the picked one stays picked
        page.wait_for_load_state("networkidle")
        assert page.input_value("#label") == label
        page_generate(page, length=12, n=1)
        assert page.evaluate(texts) == [answer]  # it stops where the next record would begin
        assert page.inner_text(".sample .finish") == "stopped at a stop string"
    page.select_option("#model", "tiny")  # no labels: no label field, and none is sent
    wait_js(page, "document.querySelector('#label-field').hidden")
    page.eval_on_selector("#temperature", "e => { e.value = '1'; }")
    page_generate(page, regex="[a-z]+( [a-z]+)*", length=40, n=3)
    written = page.evaluate(texts)
    assert len(written) == 3 and all(re.fullmatch("[a-z]+( [a-z]+)*", t) for t in written), written
    page.click("#copy-python")
    assert 'extra_body={"regex":"[a-z]+( [a-z]+)*"}' in page.inner_text("#snippet")
    page.fill("#regex", "[")  # a pattern the server refuses: its one line, in the status
    page.click("#generate")
    wait_js(page, "document.querySelector('#status').classList.contains('error')")
    assert "regex" in page.inner_text("#status")
    page.close()
