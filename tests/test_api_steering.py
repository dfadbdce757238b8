"""The Python API's steering and lines: `Model.sample/stream(regex=, ban=)` and `Model.lines`
give `textgen sample`'s text for the same run and seed (the CLI run in this process), and refuse
what it refuses with its one-line messages."""

from __future__ import annotations

import json
import re

import pytest
from helpers import invoke

import textgen
from textgen.errors import ConfigError

PATTERN = "[A-Z][a-z]+ [a-z]+[.?]"


@pytest.fixture(scope="module")
def model(tiny_run):
    return textgen.load("tiny", checkpoints=tiny_run.checkpoints)


@pytest.fixture(scope="module")
def names_model(names_run):
    checkpoints, _ = names_run
    return textgen.load("names", checkpoints=checkpoints)


def cli_json(checkpoints, run, *args) -> dict:
    result = invoke("sample", "--checkpoints", checkpoints, "--run", run, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_steered_sample_and_stream_are_the_clis_text(tiny_run, model):
    texts = model.sample("O", length=60, temperature=1.1, seed=4, n=3, regex="O" + PATTERN, ban=["the", "ee"])
    data = cli_json(tiny_run.checkpoints, "tiny", "--prime", "O", "--length", 60, "--temperature", 1.1, "--seed", 4,
                    "--num-samples", 3, "--regex", "O" + PATTERN, "--ban", "the", "--ban", "ee")
    assert texts == [s["text"] for s in data["samples"]]
    assert all(re.fullmatch("O" + PATTERN, "O" + t) and "the" not in t and "ee" not in t for t in texts), texts
    assert "".join(model.stream("O", length=60, temperature=1.1, seed=4, regex="O" + PATTERN,
                                ban=["the", "ee"])) == texts[0]
    assert "the" not in model.sample(length=200, seed=2, ban="the")  # one word as a str


def test_lines_are_the_clis_lines(names_run, names_model):
    checkpoints, names = names_run
    lines = names_model.lines(10, length=40, temperature=0.9, seed=5, novel=True, unique=True)
    result = invoke("sample", "--checkpoints", checkpoints, "--run", "names", "--json", "--lines", 10, "--length", 40,
                    "--temperature", 0.9, "--seed", 5, "--novel", "--unique")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(lines) == data["lines"] and len(lines) == 10 and not set(lines) & names
    assert lines.sampled == data["sampled"] and lines.dropped == data["dropped"]
    assert lines.report == result.stderr.strip()
    steered = names_model.lines(6, prime="Jo", length=12, seed=1, regex="Jo[a-z]{1,5}", ban=["e"])
    assert len(steered) == 6 and all(re.fullmatch("Jo[a-df-z]{1,5}", line) for line in steered), steered


@pytest.mark.parametrize(("call", "fragments"), [
    (lambda m: m.sample(regex="(ab"), ["not a valid regular expression"]),
    (lambda m: m.sample(regex="[0-9]+"), ["No text over the model's 36 characters matches --regex"]),
    (lambda m: m.sample(regex="[a-z]+", stop="\n"), ["--stop does not combine with --regex"]),
    (lambda m: m.sample(regex=5), ["--regex must be a str", "regex=5"]),
    (lambda m: m.sample(ban=["the", 3]), ["--ban takes a list of words", "ban=['the', 3]"]),
    (lambda m: m.sample(ban=["Zed"]), ["never saw ('Z')"]),
    (lambda m: next(m.stream(regex="a{20}", length=10)), ["needs at least 20 more characters"]),
    (lambda m: m.lines(0), ["n must be a positive integer"]),
    (lambda m: m.lines(3, regex="[0-9]"), ["--lines needs a run trained on lines", "train FILE --lines"]),
])
def test_what_the_cli_refuses_the_api_refuses(model, call, fragments):
    with pytest.raises(ConfigError) as caught:
        call(model)
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message

