"""Fast checks of the server's pure parts (no process, no socket): chat template, settings,
error translation, response shapes, metrics text, and the thread-to-event-loop hand-over."""

from __future__ import annotations

import asyncio
import threading

import pytest
from helpers import require

require("fastapi")

from textgen.errors import ConfigError  # noqa: E402
from textgen.generation.session import CharLogprob, StreamSpec  # noqa: E402
from textgen.serve import chat, envelopes  # noqa: E402
from textgen.serve.jobs import Job, Outbox, Update  # noqa: E402
from textgen.serve.metrics import Metrics  # noqa: E402
from textgen.serve.requests import Plan  # noqa: E402
from textgen.serve.schemas import ChatMessage, CompletionRequest  # noqa: E402
from textgen.serve.settings import Settings  # noqa: E402
from textgen.serve.views import View  # noqa: E402


def test_chat_template_renders_messages_and_the_reply_label():
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello")]
    assert chat.render("{ROLE}:\n{content}\n\n", messages) == "SYSTEM:\nBe brief.\n\nUSER:\nHello\n\nASSISTANT:\n"
    assert chat.render("{Role}: {content}\n", messages[1:]) == "User: Hello\nAssistant: "
    assert chat.default_stop("{ROLE}:\n{content}\n\n") == ["\n\n"]
    assert chat.default_stop("<{role}>{content}") == []


def test_settings_are_checked():
    assert Settings().max_n == 16 and Settings(max_streams=4).max_n == 4
    with pytest.raises(ConfigError, match="max_streams=0"):
        Settings(max_streams=0)
    with pytest.raises(ConfigError, match="max_n=8, max_streams=4"):
        Settings(max_streams=4, max_n=8)
    with pytest.raises(ConfigError, match="content"):
        Settings(chat_template="{role}")
    with pytest.raises(ConfigError, match="api_key"):
        Settings(api_key=" ")
    assert Settings(host="0.0.0.0").exposed and not Settings().exposed


def test_validation_errors_become_400_naming_parameter_and_value():
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        CompletionRequest(model="m", temperature=7)
    error = envelopes.from_validation_error(RequestValidationError(
        [{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()]))
    assert error.status == 400 and error.param == "temperature"
    assert "Received: temperature=7" in error.message
    assert envelopes.from_textgen_error(ConfigError("x must be 1. Received: top_k=0")).param == "top_k"


def _plan(prompts, logprobs=None):
    specs = [StreamSpec(prime=p, length=3, seed=5, index=i, logprobs=logprobs) for i, p in enumerate(prompts)]
    return Plan(specs, 5, list(prompts), sum(len(p) for p in set(prompts)))


def test_completion_view_joins_chunks_and_continues_offsets():
    view = View("text", "m", _plan(["ab"], logprobs=1), echo=True, logprobs=1)
    lp = [CharLogprob("x", -0.5, [("x", -0.5)]), CharLogprob("y", -1.0, [("z", -0.2)])]
    opening = view.opening([[None, CharLogprob("b", -2.0, [("a", -0.1)])]])
    assert opening[0]["choices"][0]["text"] == "ab"
    assert opening[0]["choices"][0]["logprobs"]["token_logprobs"] == [None, -2.0]
    first = view.chunks([Update(0, "x", lp[:1]), Update(0, "y", lp[1:])])
    assert first[0]["choices"][0]["text"] == "xy" and first[0]["choices"][0]["logprobs"]["text_offset"] == [2, 3]
    last = view.chunks([Update(0, "", [], True, "length")])
    assert last[0]["choices"][0]["finish_reason"] == "length"
    assert view.usage() == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_chat_view_deltas():
    view = View("chat", "m", _plan(["p", "p"]))
    assert [c["delta"] for c in view.opening([])[0]["choices"]] == [{"role": "assistant", "content": ""}] * 2
    chunks = view.chunks([Update(1, "hi"), Update(0, "yo", None, True, "stop")])
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks] == [(0, {"content": "yo"}),
                                                                                      (1, {"content": "hi"})]
    whole = view.response([])
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "yo"}


def test_metrics_text_format():
    metrics = Metrics()
    metrics.request("/v1/completions", 200)
    for seconds in (0.003, 0.07, 20):
        metrics.observe_ttfc(seconds)
    text = metrics.render({})
    assert 'textgen_requests_total{path="/v1/completions",status="200"} 1' in text
    assert 'textgen_time_to_first_character_seconds_bucket{le="0.005"} 1' in text
    assert 'textgen_time_to_first_character_seconds_bucket{le="0.1"} 2' in text
    assert 'textgen_time_to_first_character_seconds_bucket{le="+Inf"} 3' in text
    assert "textgen_time_to_first_character_seconds_count 3" in text


def test_outbox_hands_engine_updates_to_the_event_loop_in_batches():
    async def main():
        loop = asyncio.get_running_loop()
        job = Job([StreamSpec(), StreamSpec()], loop)
        outbox = Outbox(loop)

        def engine():
            for k in range(50):
                outbox.put([(job, [Update(k % 2, "a")])])
            outbox.put([(job, [Update(0, "", None, True, "length"), Update(1, "", None, True, "length")])])

        thread = threading.Thread(target=engine)
        thread.start()
        batches = [items async for items in job.updates(interval=0.01, keepalive=5)]
        thread.join()
        return batches

    batches = asyncio.run(main())
    updates = [u for batch in batches for u in batch]
    assert "".join(u.text for u in updates) == "a" * 50
    assert sum(u.finished for u in updates) == 2
    assert len(batches) < 50  # merged, not one wake-up per update
