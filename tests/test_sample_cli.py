"""`textgen sample` driven as a user drives it: real subprocesses (and a pty) on a real run."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from helpers import communicate_or_dump, run_cli, textgen_into, wait_until


def sample(root, *args, **kw):
    return run_cli("sample", "--checkpoints", root, *args, **kw)


def sample_json(root, *args):
    result = sample(root, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_help_documents_every_option_with_an_example():
    result = run_cli("sample", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "Example:" in result.stdout
    for option in ("--temperature", "--top-k", "--top-p", "--length", "--prime", "--stop", "--num-samples",
                   "--seed", "--output", "--json", "--novelty", "--interactive", "--run", "--checkpoint "):
        assert option in result.stdout, option


@pytest.mark.slow
def test_same_seed_is_byte_identical_and_output_file_matches(tiny_run, tmp_path):
    first = sample(tiny_run.checkpoints, "--seed", 3, "--length", 300, "--prime", "ROMEO:", "--output", tmp_path / "a.txt")
    second = sample(tiny_run.checkpoints, "--seed", 3, "--length", 300, "--prime", "ROMEO:")
    other = sample(tiny_run.checkpoints, "--seed", 4, "--length", 300, "--prime", "ROMEO:")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout != other.stdout
    assert first.stdout.startswith("ROMEO:") and len(first.stdout) == len("ROMEO:") + 300 + 1
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == first.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.slow
def test_sample_i_does_not_depend_on_num_samples(tiny_run):
    one = sample_json(tiny_run.checkpoints, "--seed", 9, "--length", 200)["samples"]
    three = sample_json(tiny_run.checkpoints, "--seed", 9, "--length", 200, "--num-samples", 3)["samples"]
    forty = sample_json(tiny_run.checkpoints, "--seed", 9, "--length", 200, "--num-samples", 40)["samples"]
    assert [s["index"] for s in three] == [0, 1, 2]
    assert one[0]["text"] == three[0]["text"] == forty[0]["text"]
    assert [s["text"] for s in three] == [s["text"] for s in forty[:3]]
    assert len({s["text"] for s in forty}) > 30


@pytest.mark.slow
def test_temperatures_are_labelled_and_zero_is_greedy(tiny_run):
    data = sample_json(tiny_run.checkpoints, "--temperature", "0,1.5", "--temperature", "0.5", "--num-samples", 2,
                       "--length", 80, "--seed", 1)
    assert [(s["temperature"], s["index"]) for s in data["samples"]] == [(0.0, 0), (0.0, 1), (1.5, 0), (1.5, 1),
                                                                        (0.5, 0), (0.5, 1)]
    greedy = [s["text"] for s in data["samples"][:2]]
    assert greedy[0] == greedy[1]
    top1 = sample_json(tiny_run.checkpoints, "--temperature", "2", "--top-k", 1, "--length", 80, "--seed", 5)["samples"]
    assert top1[0]["text"] == greedy[0]
    human = sample(tiny_run.checkpoints, "--temperature", "0,1.5", "--length", 40, "--seed", 1, env={"COLUMNS": "100"})
    assert "temperature 0 " in human.stdout and "temperature 1.5" in human.stdout


def test_top_p_and_top_k_run(tiny_run):
    data = sample_json(tiny_run.checkpoints, "--top-p", "0.5", "--top-k", 3, "--length", 50, "--seed", 2, "--num-samples", 2)
    assert data["top_k"] == 3 and data["top_p"] == 0.5
    assert all(len(s["text"]) == 50 for s in data["samples"])


@pytest.mark.slow
def test_stop_strings_end_each_sample_and_are_left_out(tiny_run):
    full = sample_json(tiny_run.checkpoints, "--length", 400, "--seed", 7, "--num-samples", 4)["samples"]
    stopped = sample_json(tiny_run.checkpoints, "--length", 400, "--seed", 7, "--num-samples", 4,
                          "--stop", "\\n", "--stop", "e ")["samples"]
    cut_somewhere = False
    for whole, cut in zip(full, stopped):
        ends = [i for i in (whole["text"].find("\n"), whole["text"].find("e ")) if i >= 0]
        if ends:
            cut_somewhere = True
            assert cut["text"] == whole["text"][: min(ends)]
            assert cut["stop"] in ("\n", "e ")
        else:
            assert cut["text"] == whole["text"] and cut["stop"] is None
    assert cut_somewhere
    streamed = sample(tiny_run.checkpoints, "--length", 400, "--seed", 7, "--stop", "\\n", "--stop", "e ")
    assert streamed.stdout == stopped[0]["text"] + "\n"


@pytest.mark.parametrize("args, words", [
    (["--temperature", "-1"], "temperature"), (["--temperature", "nan"], "temperature"),
    (["--temperature", "inf"], "temperature"), (["--temperature", "warm"], "temperature"),
    (["--top-k", "0"], "top_k"), (["--top-p", "0"], "top_p"), (["--top-p", "1.5"], "top_p"),
    (["--stop", ""], "stop"), (["--length", "0"], "length"), (["--num-samples", "0"], "num_samples"),
    (["--prime", "Zebra~"], "vocabulary"), (["--run", "nope"], "Unknown run"),
    (["--interactive", "--json"], "interactive"),
])
@pytest.mark.slow
def test_invalid_values_are_one_line_errors(tiny_run, args, words):
    result = sample(tiny_run.checkpoints, *args)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], result.stderr


@pytest.mark.slow
def test_novelty_report(tiny_run):
    data = sample_json(tiny_run.checkpoints, "--novelty", "--temperature", "0,1", "--length", 300, "--seed", 1)
    text = tiny_run.corpus.read_text(encoding="utf-8")
    corpus_text = text[: len(text) - round(len(text) * 0.1)]  # the training split
    for s in data["samples"]:
        report = s["novelty"]
        assert 0.0 <= report["copied_share"] <= 1.0 and report["min_span"] == 20
        start, longest = report["longest_copied_start"], report["longest_copied"]
        assert s["text"][start: start + longest] in corpus_text
        assert not any(s["text"][i: i + longest + 1] in corpus_text for i in range(len(s["text"]) - longest))
        copied = sum(any(s["text"][j: j + 20] in corpus_text for j in range(max(0, i - 19), i + 1)
                         if j + 20 <= len(s["text"])) for i in range(len(s["text"])))
        assert report["copied_chars"] == copied
    human = sample(tiny_run.checkpoints, "--novelty", "--length", 100, "--seed", 1)
    assert "longest span copied" in human.stdout


def test_novelty_without_the_corpus_is_a_clear_error(tiny_run, tmp_path):
    root = tmp_path / "checkpoints"
    tiny_run.copy(root)
    run_file = root / "tiny" / "run.json"
    info = json.loads(run_file.read_text(encoding="utf-8"))
    info["corpus"]["source"] = str(tmp_path / "gone.txt")
    run_file.write_text(json.dumps(info), encoding="utf-8")
    result = sample(root, "--novelty", "--length", 20)
    assert result.returncode == 1 and result.stdout == ""
    assert "corpus is gone" in result.stderr and "gone.txt" in result.stderr and "Traceback" not in result.stderr


def test_single_sample_streams_while_generating(tiny_run):
    process = subprocess.Popen([sys.executable, "-m", "textgen", "sample", "--checkpoints", str(tiny_run.checkpoints),
                                "--length", "5000000", "--seed", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        first = process.stdout.read(200)
        assert len(first) == 200 and process.poll() is None  # text arrived long before the end
    finally:
        process.kill()
        process.communicate()


@pytest.mark.slow
def test_sample_into_a_closed_pipe_exits_quietly(tiny_run):
    """`textgen sample --length 200000 | head -c 100`: the reader leaves after 100 bytes, long
    before the text ends (200,000 characters overfill the pipe); textgen stops, status 0, no word."""
    result = textgen_into("head -c 100", "sample", "--checkpoints", tiny_run.checkpoints, "--length", 200_000,
                          "--seed", 1)
    assert (result.returncode, result.stderr.decode()) == (0, "")
    assert len(result.stdout) == 100


@pytest.mark.slow
def test_sample_json_into_a_closed_pipe_exits_quietly(tiny_run):
    """`textgen sample --json | head -c 10` with a 200,000-character sample in the JSON."""
    result = textgen_into("head -c 10", "sample", "--checkpoints", tiny_run.checkpoints, "--length", 200_000,
                          "--seed", 1, "--json")
    assert (result.returncode, result.stderr.decode()) == (0, "")
    assert result.stdout.startswith(b"{") and len(result.stdout) == 10


def interactive(root, *args):
    return subprocess.Popen([sys.executable, "-m", "textgen", "sample", "--checkpoints", str(root),
                             "--interactive", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_interactive_reads_primes_until_end_of_input(tiny_run):
    process = interactive(tiny_run.checkpoints, "--length", 60, "--seed", 2)
    stdout, stderr = process.communicate(b"ROMEO:\n\nJULIET:\n", timeout=120)
    assert process.returncode == 0, stderr
    lines = stdout.decode().split("\n")
    assert stdout.decode().startswith("ROMEO:") and "JULIET:" in stdout.decode()
    assert stderr.decode().count("prime> ") == 4 and "Traceback" not in stderr.decode()
    assert len(lines) >= 3
    # The same seed and primes give the same continuations.
    again = interactive(tiny_run.checkpoints, "--length", 60, "--seed", 2).communicate(b"ROMEO:\n\nJULIET:\n", timeout=120)
    assert again[0] == stdout


def test_interactive_unknown_characters_do_not_end_the_session(tiny_run):
    process = interactive(tiny_run.checkpoints, "--length", 20)
    stdout, stderr = process.communicate(b"Zebra~\nROMEO:\n", timeout=120)
    assert process.returncode == 0
    assert "not in the model's vocabulary" in stderr.decode() and stdout.decode().startswith("ROMEO:")


def test_interactive_ctrl_c_while_generating_leaves_cleanly(tiny_run):
    process = interactive(tiny_run.checkpoints, "--length", 5000000)
    process.stdin.write(b"ROMEO:\n")
    process.stdin.flush()
    assert len(process.stdout.read(100)) == 100  # generating
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in stderr.decode()


@pytest.mark.slow
def test_interactive_ctrl_c_and_ctrl_d_at_the_prompt_in_a_terminal(tiny_run):
    for key in (b"\x04", b"\x03"):
        primary, secondary = pty.openpty()
        process = subprocess.Popen([sys.executable, "-m", "textgen", "sample", "--checkpoints", str(tiny_run.checkpoints),
                                    "--interactive", "--length", "30", "--seed", "1"],
                                   stdin=secondary, stdout=secondary, stderr=secondary,
                                   start_new_session=True,
                                   preexec_fn=lambda: __import__("fcntl").ioctl(0, __import__("termios").TIOCSCTTY, 0))
        os.close(secondary)
        seen = read_until(primary, b"prime> ")
        os.write(primary, b"ROMEO:\n")
        seen += read_until(primary, b"prime> ")
        os.write(primary, key)
        assert process.wait(timeout=60) == 0, seen
        seen += read_until(primary, None)
        os.close(primary)
        text = seen.decode(errors="replace")
        assert text.count("ROMEO:") >= 2 and "Traceback" not in text  # the echo, then the sample


def read_until(fd, marker, timeout=60):
    """Read a pty until `marker` appears (or, with None, until it closes)."""
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk
        if marker is not None and data.count(marker) >= 1:
            return data
    if marker is None:
        return data
    raise AssertionError(f"no {marker!r} in {data!r}")


@pytest.mark.slow
def test_ctrl_c_during_a_batch_exits_cleanly_and_leaves_no_output_file(tiny_run, tmp_path):
    (tmp_path / "o").mkdir()
    output = tmp_path / "o" / "out.txt"
    process = subprocess.Popen([sys.executable, "-m", "textgen", "sample", "--checkpoints", str(tiny_run.checkpoints),
                                "--num-samples", "32", "--length", "5000000", "--output", str(output)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    # The temporary file is opened once the run is loaded, just before the batch starts: Ctrl-C
    # from then on must leave nothing behind.
    wait_until(lambda: list(output.parent.glob(".out.txt.tmp-*")), what="the output's temporary file", timeout=60,
               process=process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = communicate_or_dump(process, timeout=60)
    # Typer turns Ctrl-C into exit status 130 (silently); what matters: no traceback.
    assert process.returncode == 130 and "Traceback" not in stderr.decode(), stderr
    assert list(output.parent.iterdir()) == []  # FILE never half-written, the temporary file removed
