"""Every error row of the API (400/401/404/413/429 is in test_serve_batching/503) and every limit."""

from __future__ import annotations

import os
import shutil

import httpx
import openai
import pytest
from helpers import Server, client

pytestmark = pytest.mark.slow
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def server(tiny_run):
    s = Server(tiny_run.checkpoints, "--max-length", "100", "--max-n", "3", "--max-prompt", "50")
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def keyed(tiny_run):
    s = Server(tiny_run.checkpoints, "--cors-origin", "http://good.example", env={"TEXTGEN_API_KEY": KEY})
    yield s
    assert s.stop() == 0, s.log()


def _error(answer: httpx.Response, status: int, param=None) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    return error


def _post(server, body, path="/v1/completions", **kwargs):
    return httpx.post(server.url + path, json=body, timeout=30, **kwargs)


@pytest.mark.parametrize("field, value", [
    ("temperature", 5), ("temperature", -1), ("top_p", 0), ("top_p", 1.5), ("top_k", 0), ("n", 0),
    ("max_tokens", 0), ("max_tokens", "many"), ("logprobs", 6), ("seed", -1), ("stop", ["a", "b", "c", "d", "e"]),
    ("stop", ""), ("presence_penalty", 0.5), ("logit_bias", {"5": 1}), ("best_of", 3), ("suffix", "x"),
])
def test_invalid_values_are_400_naming_parameter_and_value(server, field, value):
    error = _error(_post(server, {"model": "tiny", "prompt": "O", field: value}), 400, field)
    assert error["type"] == "invalid_request_error"
    assert f"Received: {field}=" in error["message"] and repr(value)[:10] in error["message"]


def test_missing_model_unknown_parameter_and_bad_json(server):
    assert "model" in _error(_post(server, {"prompt": "O"}), 400, "model")["message"]
    assert "frobnicate" in _error(_post(server, {"model": "tiny", "frobnicate": 1}), 400, "frobnicate")["message"]
    bad = httpx.post(server.url + "/v1/completions", content=b"{not json", timeout=10,
                     headers={"content-type": "application/json"})
    _error(bad, 400)
    _error(_post(server, {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, "/v1/chat/completions"),
           400, "messages[0].role")


def test_openai_client_sees_400_as_bad_request(server):
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).completions.create(model="tiny", prompt="O", temperature=3)
    assert caught.value.body["param"] == "temperature"


def test_characters_outside_the_vocabulary_are_listed(server):
    error = _error(_post(server, {"model": "tiny", "prompt": "ROMEO~ <Zz>"}), 400, "prompt")
    for char in ("'~'", "'<'", "'Z'", "'z'", "'>'"):
        assert char in error["message"]
    chat = _post(server, {"model": "tiny", "messages": [{"role": "user", "content": "§"}]}, "/v1/chat/completions")
    assert "'§'" in _error(chat, 400, "prompt")["message"]


def test_unknown_model_is_404_and_never_a_path(server, tmp_path):
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    for name in ("nope", "../tiny", "tiny/..", "/etc/passwd", "%2e%2e"):
        error = _error(_post(server, {"model": name, "prompt": "O"}), 404, "model")
        assert error["code"] == "model_not_found"
    assert httpx.get(server.url + "/v1/models/nope", timeout=10).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client(server).completions.create(model="other", prompt="O")
    _error(httpx.get(server.url + "/v1/nothing-here", timeout=10), 404)


def test_limits_on_length_n_prompt(server):
    assert "--max-length" in _error(_post(server, {"model": "tiny", "prompt": "O", "max_tokens": 101}), 400,
                                    "max_tokens")["message"]
    assert _post(server, {"model": "tiny", "prompt": "O", "max_tokens": 100}).status_code == 200
    assert "--max-n" in _error(_post(server, {"model": "tiny", "prompt": "O", "n": 4}), 400, "n")["message"]
    _error(_post(server, {"model": "tiny", "prompt": ["O", "R"], "n": 2}), 400, "n")
    assert "--max-prompt" in _error(_post(server, {"model": "tiny", "prompt": "O" * 51}), 400, "prompt")["message"]
    assert _post(server, {"model": "tiny", "prompt": "O" * 50, "max_tokens": 1}).status_code == 200
    native = {"model": "tiny", "samples": [{"max_tokens": 101}]}
    _error(_post(server, native, "/v1/textgen/generate"), 400, "samples[0].max_tokens")
    _error(_post(server, {"model": "tiny", "samples": [{}] * 4}, "/v1/textgen/generate"), 400, "samples")


def test_bodies_over_one_megabyte_are_413(server):
    big = {"model": "tiny", "prompt": "O" * 1_100_000}
    error = _error(_post(server, big), 413)
    assert "1,000,000 bytes" in error["message"]

    def chunks():  # no Content-Length: counted while read
        for _ in range(12):
            yield b" " * 100_000

    chunked = httpx.post(server.url + "/v1/completions", content=chunks(), timeout=30,
                         headers={"content-type": "application/json"})
    _error(chunked, 413)
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_api_key_guards_everything_but_health_and_page(keyed):
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("POST", "/v1/completions"),
                         ("POST", "/v1/chat/completions"), ("POST", "/v1/textgen/generate"), ("GET", "/metrics"),
                         ("GET", "/v1/textgen/runs")):
        body = {"model": "tiny", "prompt": "O"} if method == "POST" else None
        missing = httpx.request(method, keyed.url + path, json=body, timeout=10)
        assert _error(missing, 401)["code"] == "invalid_api_key"
        wrong = httpx.request(method, keyed.url + path, json=body, timeout=10, headers={"Authorization": "Bearer x"})
        assert "Incorrect API key" in _error(wrong, 401)["message"]
    assert httpx.get(keyed.url + "/health", timeout=10).status_code == 200
    assert httpx.get(keyed.url + "/", timeout=10).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client(keyed, key="wrong").models.list()
    assert client(keyed, key=KEY).completions.create(model="tiny", prompt="O", max_tokens=5).choices[0].text
    assert "textgen_active_streams" in httpx.get(keyed.url + "/metrics", timeout=10,
                                                 headers={"Authorization": f"Bearer {KEY}"}).text


def test_cors_is_off_unless_an_origin_is_given(server, keyed):
    plain = httpx.get(server.url + "/health", headers={"Origin": "http://good.example"}, timeout=10)
    assert "access-control-allow-origin" not in plain.headers
    preflight = httpx.options(keyed.url + "/v1/completions", timeout=10, headers={
        "Origin": "http://good.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://good.example"
    other = httpx.options(keyed.url + "/v1/completions", timeout=10, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert other.headers.get("access-control-allow-origin") != "http://evil.example"
    denied = httpx.get(keyed.url + "/v1/models", headers={"Origin": "http://good.example"}, timeout=10)
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "http://good.example"


def test_503_while_a_run_has_no_checkpoint_then_it_loads(tiny_run, tmp_path):
    root = tiny_run.copy(tmp_path / "ck")
    held = tmp_path / "held"
    held.mkdir()
    for path in (root / "tiny").iterdir():
        if path.is_dir():
            shutil.move(str(path), held / path.name)
    s = Server(root, "--run", "tiny", "--reload-seconds", "0.2", wait=False)
    try:
        s.wait_ready(status=503)
        assert s.health_after < 20  # answers at once (about a second on a quiet machine)
        error = _error(_post(s, {"model": "tiny", "prompt": "O"}), 503)
        assert error["code"] == "loading"
        assert httpx.post(s.url + "/v1/completions", json={"model": "tiny"}, timeout=10).headers["retry-after"]
        checkpoint = next(held.glob("ckpt-*"))
        shutil.copytree(checkpoint, root / "tiny" / f".tmp-{checkpoint.name}")
        os.rename(root / "tiny" / f".tmp-{checkpoint.name}", root / "tiny" / checkpoint.name)
        s.wait_ready(timeout=20)
        assert _post(s, {"model": "tiny", "prompt": "O"}).status_code == 200
    finally:
        assert s.stop() == 0
    assert s.log().count("has no checkpoint yet") == 1
