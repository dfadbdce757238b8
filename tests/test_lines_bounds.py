"""Lines and steering at their bounds: lines drawn in bounded rounds and written as judged,
--tries capped, contradictions refused before sampling, no line kept is an error, and the runs,
primes and values lines mode cannot use are one clear line (CLI and Python API)."""

from __future__ import annotations

import json

import pytest
from helpers import assert_one_line_error, invoke

import textgen
from textgen.errors import ConfigError, TextgenError


def names(names_run, *args):
    checkpoints, _ = names_run
    return invoke("sample", "--checkpoints", checkpoints, "--run", "names", *args)


@pytest.fixture(scope="module")
def names_model(names_run):
    checkpoints, _ = names_run
    return textgen.load("names", checkpoints=checkpoints)


def test_a_round_draws_at_most_round_lines_however_many_are_asked():
    from textgen.generation.lines import ROUND_LINES, LinePicker

    picker = LinePicker("", 10_000)
    first = picker.round_specs(5, 1.0, seed=1)
    assert len(first) == ROUND_LINES and [s.index for s in first] == list(range(ROUND_LINES))
    for _ in range(10):
        picker.judge("Ann", "stop")
    second = picker.round_specs(5, 1.0, seed=1)
    assert len(second) == ROUND_LINES and second[0].index == ROUND_LINES  # line i is stream (seed, i)


def test_kept_lines_are_written_as_they_are_judged_and_are_the_same_lines(names_run):
    from textgen.generation.lines import sample_lines
    from textgen.generation.loading import load_run, start_id
    from textgen.generation.session import SamplingSession

    checkpoints, _ = names_run
    info, _, engine = load_run(checkpoints / "names", "latest")
    session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]))
    written = []
    streamed = sample_lines(session, "", 300, 12, 1.0, 5, write=written.append)
    stored = sample_lines(session, "", 300, 12, 1.0, 5)
    session.close()
    assert streamed.lines == [] and streamed.kept == len(written) == 300
    assert written == stored.lines and streamed.sampled == stored.sampled
    cli = names(names_run, "--lines", 300, "--length", 12, "--temperature", 1.0, "--seed", 5)
    assert cli.exit_code == 0 and cli.stdout.splitlines() == written


@pytest.mark.parametrize(("args", "fragments"), [
    (["--must-include", "qqq", "--tries", 1_000_000_000], ["--tries must be at most 1,000", "tries=1000000000"]),
    (["--must-include", "a", "--tries", 0], ["--tries must be a positive integer"]),
    (["--ban", "Jo", "--must-include", "Jo"], ["contains no banned word ('Jo')", "word 'Jo'", "opposite"]),
    (["--ban", "o", "--must-include", "Jon"], ["contains no banned word ('o')", "word 'Jon'"]),
    (["--regex", "[a-z]+", "--must-include", "Jo"], ["matches --regex '[a-z]+'", "word 'Jo'"]),
    (["--lines", 3, "--regex", "Ma[a-z]+", "--must-include", "Jo"], ["matches --regex 'Ma[a-z]+'", "word 'Jo'"]),
    (["--lines", 3, "--must-include", "a\\nb"], ["cannot hold a line end"]),
    (["--lines", 3, "--must-include", "el", "--tries", 5], ["--tries does not apply with --lines", "in rounds"]),
    (["--tries", 5], ["--tries bounds --must-include's draws per sample: give --must-include too."]),
    (["--lines", 4, "--must-include", "zqz", "--length", 20, "--seed", 1], ["No line was kept",
                                                                          "without a --must-include word"]),
    (["--lines", 3, "--length", 1], ["No line was kept", "too long", "try a longer --length"]),
    (["--lines", 3, "--prime", "Jo\\n"], ["cannot hold a line end", "prime='Jo\\n'"]),
    (["--lines", 3, "--regex", "a\nb"], ["a line cannot contain a line end", "regex='a\\nb'"]),
    (["--regex", "Zo\\u00eb.*"], ["\\u, \\U and \\N escapes are not supported; type the character itself"]),
    (["--regex", "[[:alpha:]]+"], ["does not support POSIX classes"]),
    (["--lines", 3, "--novelty"], ["--novel drops lines of the training text"]),
])
def test_what_cannot_be_kept_is_refused_in_one_line(names_run, args, fragments):
    assert_one_line_error(names(names_run, "--length", 30, *args), *fragments)


def test_a_word_the_pattern_allows_is_not_refused(names_run):
    result = names(names_run, "--lines", 2, "--regex", "Jo[a-z]*", "--must-include", "an", "--length", 12,
                   "--seed", 1, "--json")
    assert result.exit_code == 0, result.output
    assert all(line.startswith("Jo") and "an" in line for line in json.loads(result.stdout)["lines"])


def test_no_line_kept_leaves_no_output_file(names_run, tmp_path):
    output = tmp_path / "names.txt"
    assert_one_line_error(names(names_run, "--lines", 3, "--length", 1, "--output", output), "No line was kept")
    assert not output.exists()
    kept = names(names_run, "--lines", 3, "--length", 12, "--seed", 1, "--output", output)
    assert kept.exit_code == 0 and output.read_text(encoding="utf-8") == kept.stdout


def test_fewer_lines_than_asked_are_written_with_exit_0_and_the_report(names_run):
    result = names(names_run, "--lines", 3, "--temperature", 0, "--unique", "--length", 20)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    assert "lines: kept 1 of" in result.stderr and "(3 asked:" in result.stderr


def test_lines_from_a_run_not_trained_on_lines_is_refused(tiny_run):
    result = invoke("sample", "--checkpoints", tiny_run.checkpoints, "--run", "tiny", "--lines", 3)
    assert_one_line_error(result, "--lines needs a run trained on lines", "textgen train FILE --lines",
                          "run 'tiny'")


@pytest.mark.parametrize(("call", "fragments"), [
    (lambda m: m.sample(length=10, must_include=3), ["--must-include takes a list of words", "must_include=3"]),
    (lambda m: m.sample(length=10, ban=3), ["--ban takes a list of words", "ban=3"]),
    (lambda m: m.lines(2, ban=3), ["--ban takes a list of words", "ban=3"]),
    (lambda m: m.lines(2, must_include=3), ["--must-include takes a list of words", "must_include=3"]),
    (lambda m: m.sample(length=10, tries=5), ["tries bounds must_include", "tries=5"]),
    (lambda m: m.sample(length=10, must_include="a", tries=5000), ["--tries must be at most 1,000"]),
    (lambda m: m.lines(2, novel="yes"), ["novel must be True or False", "novel='yes'"]),
    (lambda m: m.lines(2, unique=1), ["unique must be True or False"]),
    (lambda m: m.lines(2, prime="Jo\n"), ["cannot hold a line end"]),
    (lambda m: m.lines(2, ban="Jo", must_include="Jo"), ["opposite"]),
    (lambda m: m.lines(4, must_include="zqz", length=20, seed=1), ["No line was kept"]),
])
def test_the_api_refuses_with_the_clis_messages(names_model, call, fragments):
    with pytest.raises(ConfigError) as caught:
        call(names_model)
    assert isinstance(caught.value, TextgenError)
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_the_api_refuses_lines_from_a_run_not_trained_on_lines(tiny_run):
    model = textgen.load("tiny", checkpoints=tiny_run.checkpoints)
    with pytest.raises(ConfigError, match="--lines needs a run trained on lines"):
        model.lines(2)


def test_resuming_a_run_not_trained_on_lines_as_lines_is_refused(copy_tiny_run, isolated):
    info = json.loads((isolated / "checkpoints" / "tiny" / "run.json").read_text(encoding="utf-8"))
    result = invoke("train", info["corpus"]["source"], "--run", "tiny", "--resume", "--lines", "--epochs", 2)
    assert_one_line_error(result, "Run 'tiny' was trained without --lines", "train a new run")


def test_resuming_without_a_corpus_keeps_the_runs_own_and_refuses_lines(copy_tiny_run, isolated):
    # `--resume` without a corpus reads what the run was trained on; --lines cannot turn it into a lines run
    result = invoke("train", "--run", "tiny", "--resume", "--lines", "--epochs", 2)
    assert_one_line_error(result, "Run 'tiny' was trained without --lines", "train a new run")


@pytest.mark.parametrize("flag", ["lines", "resume", "use_previous"])
def test_train_refuses_a_flag_that_is_not_a_bool(isolated, flag):
    with pytest.raises(ConfigError, match=f"{flag} must be True or False. Received: {flag}='yes'"):
        textgen.train("Ann\nBob\n" * 50, run="flagged", **{flag: "yes"})
    assert not (isolated / "checkpoints" / "flagged").exists()


def test_the_help_steered_example_runs_and_keeps_its_ban(names_run):
    import re
    import shlex

    from textgen.cli.sample import sample

    example = re.search(r"Steered: \[bold\]textgen sample (.*?)\[/\]", sample.__doc__).group(1)
    assert "--ban" in example and "--length" in example
    result = names(names_run, *shlex.split(example), "--seed", 3)
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    assert re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)*", text) and "the" not in text, text
