"""`--must-include WORD` (CLI) and `must_include=` (API): a sample without every word is drawn
again, up to `--tries` times, and the tries are reported; try 1 is the plain sample, try a + 1
of sample i draws from (seed, i, a), so a seed gives the same text alone or in a batch."""

from __future__ import annotations

import json
import re

import pytest
from helpers import assert_one_line_error, invoke

import textgen
from textgen.errors import ConfigError


def sample(run, *args):
    result = invoke("sample", "--checkpoints", run.checkpoints, "--run", "tiny", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_every_kept_sample_has_the_words_and_the_tries_are_reported(tiny_run):
    data, report = sample(tiny_run, "--must-include", "th", "--must-include", "e", "--num-samples", 6, "--length", 8,
                          "--seed", 4, "--tries", 30)
    found = [s for s in data["samples"] if s["text"] is not None]
    assert found and all("th" in s["text"] and "e" in s["text"] for s in found)
    tries = [s["tries"] for s in data["samples"]]
    assert max(tries) > 1 and all(1 <= t <= 30 for t in tries)  # short samples: some needed several draws
    assert re.fullmatch(r"must-include: \d of 6 samples contain 'th', 'e'; tries per sample "
                        + ", ".join(map(str, tries)) + r"( \(samples? .* left out: none of (its|their) 30 tries had every word\))?\n",
                        report), report
    assert data["must_include"] == ["th", "e"]


def test_try_one_is_the_plain_sample_and_a_seed_repeats_alone_or_in_a_batch(tiny_run):
    plain, _ = sample(tiny_run, "--prime", "O", "--length", 40, "--seed", 9)
    word = plain["samples"][0]["text"][20:23]
    kept, _ = sample(tiny_run, "--prime", "O", "--length", 40, "--seed", 9, "--must-include", word)
    assert kept["samples"][0]["text"] == plain["samples"][0]["text"] and kept["samples"][0]["tries"] == 1
    alone, _ = sample(tiny_run, "--length", 10, "--seed", 3, "--must-include", "o")
    batch, _ = sample(tiny_run, "--length", 10, "--seed", 3, "--must-include", "o", "--num-samples", 5)
    assert alone["samples"][0] == batch["samples"][0]


def test_the_api_gives_the_clis_samples_and_tries(tiny_run):
    model = textgen.load("tiny", checkpoints=tiny_run.checkpoints)
    texts = model.sample(length=8, seed=4, n=6, must_include=["th", "e"], tries=30)
    data, _ = sample(tiny_run, "--must-include", "th", "--must-include", "e", "--num-samples", 6, "--length", 8,
                     "--seed", 4, "--tries", 30, "--temperature", 1)  # the API's default temperature
    assert texts == [s["text"] for s in data["samples"]]
    assert [None if t is None else t.tries for t in texts] == [s["tries"] if s["text"] else None for s in data["samples"]]
    one = model.sample("O", length=12, seed=1, must_include="e")
    assert isinstance(one, str) and "e" in "O" + one and one.tries >= 1
    with pytest.raises(ConfigError, match="No sample contained every --must-include word"):
        model.sample(length=6, seed=1, must_include="RRRR", tries=2)


def test_lines_without_the_word_are_dropped_and_counted(names_run):
    checkpoints, _ = names_run
    result = invoke("sample", "--checkpoints", checkpoints, "--run", "names", "--lines", 6, "--length", 20, "--seed", 2,
                    "--must-include", "a", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["lines"]) == 6 and all("a" in line for line in data["lines"])
    assert data["dropped"]["missing_word"] > 0 and "without a --must-include word" in result.stderr
    lines = textgen.load("names", checkpoints=checkpoints).lines(6, length=20, seed=2, temperature=0.8,
                                                                 must_include="a")
    assert list(lines) == data["lines"] and lines.dropped == data["dropped"]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--must-include", ""], ["A --must-include word must not be empty"]),
    (["--must-include", "Zed"], ["never saw ('Z')", "must_include='Zed'"]),
    (["--must-include", "ROMEO", "--length", "3"], ["longer than a sample", "length=3"]),
    (["--must-include", "R", "--tries", "0"], ["tries"]),
    (["--tries", "3"], ["--tries bounds --must-include"]),
    (["--must-include", "R", "--lines", "2", "--tries", "3"], ["--tries does not apply with --lines",
                                                                "lines are drawn in rounds"]),
    (["--must-include", "R", "--interactive"], ["does not combine with --must-include"]),
    (["--must-include", "RRRR", "--length", "6", "--tries", "2"], ["No sample contained every --must-include word",
                                                                   "within 2 tries each"]),
])
def test_what_cannot_be_kept_is_one_line(tiny_run, args, fragments):
    result = invoke("sample", "--checkpoints", tiny_run.checkpoints, "--run", "tiny", "--seed", 1, *args)
    assert_one_line_error(result, *fragments)


def test_kept_lines_are_the_first_that_pass_whatever_the_rounds(names_run):
    """sample_lines grows its rounds when few lines pass; the lines it keeps are still the first
    `count` streams (seed, i) that pass, in index order: here against lines drawn one at a time."""
    from textgen.generation.lines import LinePicker, sample_lines
    from textgen.generation.loading import load_run, start_id
    from textgen.generation.session import SamplingSession, StreamSpec

    checkpoints, _ = names_run
    info, _, engine = load_run(checkpoints / "names", "latest")
    session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]))
    grown = sample_lines(session, "", 5, 20, 1.0, 4, must_include=["el"])
    one_by_one = LinePicker("", 5, must_include=["el"])  # judges; the streams are drawn here, one at a time
    index = 0
    while len(one_by_one.result.lines) < 5 and index < 2000:
        stream = session.add(StreamSpec(prime="\n", length=20, temperature=1.0, stops=["\n"], seed=4, index=index))
        while session.active:
            session.step(16)
        one_by_one.judge(stream.text, stream.finish_reason)
        index += 1
    session.close()
    assert len(grown.lines) == 5 and all("el" in line for line in grown.lines)
    assert grown.lines == one_by_one.result.lines and grown.sampled == one_by_one.result.sampled
    assert grown.dropped == one_by_one.result.dropped and grown.dropped["missing_word"] > 5
