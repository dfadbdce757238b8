"""The command line: help texts, the main commands end to end, and every bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import run_cli
from textgen import checkpoints
from textgen.cli import app

runner = CliRunner()
TINY = ["--layers", "1", "--units", "16", "--embedding-dim", "8", "--seq-len", "16",
        "--batch-size", "4", "--epochs", "1", "--eval-every", "20"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments, code=None):
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def trained(tiny_corpus):
    result = invoke("train", tiny_corpus, "--run", "tiny", *TINY, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def all_commands(group=None, prefix=()):
    """Every command path of the CLI, sub-commands included (walked, not listed by hand)."""
    import typer.main

    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        yield prefix + (name,)
        if hasattr(command, "commands"):
            yield from all_commands(command, prefix + (name,))


def test_every_command_has_help_with_an_example():
    commands = list(all_commands())
    assert {("prepare",), ("train",), ("sample",), ("evaluate",)} <= set(commands)
    for path in commands:
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, path


def test_train_sample_evaluate_end_to_end(trained, tiny_corpus):
    assert trained["run"] == "tiny" and trained["stopped"] == "finished"
    assert trained["val_bpc"] > 0 and trained["chars_per_second"] > 0
    result = invoke("sample", "--length", 40, "--seed", 7, "--prime", "ROMEO:", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"] == "tiny" and len(data["samples"][0]["text"]) == 40
    again = json.loads(invoke("sample", "--length", 40, "--seed", 7, "--prime", "ROMEO:", "--json").stdout)
    assert again["samples"] == data["samples"], "same seed, same text"
    plain = invoke("sample", "--length", 40, "--seed", 7, "--prime", "ROMEO:")
    assert plain.stdout == "ROMEO:" + data["samples"][0]["text"] + "\n"
    greedy = [json.loads(invoke("sample", "--length", 30, "--temperature", 0, "--seed", s, "--json").stdout)
              for s in (1, 2)]
    assert greedy[0]["samples"] == greedy[1]["samples"], "temperature 0 is greedy"
    result = invoke("evaluate", tiny_corpus, "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["bits_per_char"] == pytest.approx(scored["nats_per_char"] / 0.6931471805599453)
    assert 0 < scored["bits_per_char"] < 7


def test_prepare_json_and_table(tiny_corpus):
    result = invoke("prepare", tiny_corpus, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["characters"] == len(tiny_corpus.read_text())
    assert stats["train_chars"] + stats["val_chars"] == stats["characters"]
    table = invoke("prepare", tiny_corpus)
    assert "vocabulary" in table.stdout and "never seen" in table.stdout


def test_corpus_errors(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "short.txt").write_text("abcdefgh")
    (tmp_path / "one.txt").write_text("a" * 500)
    (tmp_path / "dir").mkdir()
    assert_one_line_error(invoke("train", tmp_path / "nope.txt"), "not found", "nope.txt")
    assert_one_line_error(invoke("train", tmp_path / "dir"), "directory")
    assert_one_line_error(invoke("train", tmp_path / "empty.txt"), "empty")
    assert_one_line_error(invoke("train", tmp_path / "bin.dat"), "--encoding")
    assert_one_line_error(invoke("train", tmp_path / "short.txt", "--seq-len", 16, "--val-fraction", "0.1"),
                          "--seq-len")
    assert_one_line_error(invoke("train", tmp_path / "one.txt", *TINY), "one-character vocabulary")
    assert_one_line_error(invoke("prepare", tmp_path / "nope.txt"), "not found")


@pytest.mark.parametrize("option,value,fragment", [
    ("--units", "0", "units=0"), ("--layers", "-1", "layers=-1"), ("--batch-size", "0", "batch_size=0"),
    ("--seq-len", "0", "seq_len=0"), ("--embedding-dim", "0", "embedding_dim=0"),
    ("--learning-rate", "-1", "learning_rate=-1"), ("--dropout", "1.5", "dropout=1.5"),
    ("--time-limit", "0", "time_limit=0"),
])
def test_bad_sizes(tiny_corpus, option, value, fragment):
    assert_one_line_error(invoke("train", tiny_corpus, option, value), fragment)


def test_sample_errors(trained, tiny_corpus):
    run_dir = Path("checkpoints") / "tiny"
    before = snapshot(run_dir)
    for t in ("-1", "nan", "inf"):
        assert_one_line_error(invoke("sample", "--temperature", t), "temperature")
    assert_one_line_error(invoke("sample", "--length", 0), "length=0")
    assert_one_line_error(invoke("sample", "--prime", "ROMEO Ж§"), "'Ж'", "'§'")
    assert_one_line_error(invoke("sample", "--run", "ghost"), "Unknown run 'ghost'", "tiny")
    assert_one_line_error(invoke("sample", "--length", "many"), "--length", code=2)
    assert snapshot(run_dir) == before, "a failed command must not touch the run"


def test_no_runs_yet():
    assert_one_line_error(invoke("sample"), "No trained runs")


def test_damaged_checkpoint(trained):
    run_dir = Path("checkpoints") / "tiny"
    newest = checkpoints.list_checkpoints(run_dir)[-1]
    weights = newest / "weights.npz"
    weights.write_bytes(weights.read_bytes()[: 1000])  # truncated
    result = invoke("sample", "--length", 5)
    assert_one_line_error(result, "damaged", "weights.npz")
    (run_dir / "run.json").write_text("{ not json")
    assert_one_line_error(invoke("sample", "--run", "tiny"), "run.json", "damaged")


def test_resume_with_a_different_vocabulary(trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Совсем другой текст на русском языке.\n" * 200, encoding="utf-8")
    run_dir = Path("checkpoints") / "tiny"
    before = snapshot(run_dir)
    assert_one_line_error(invoke("train", other, "--run", "tiny", "--resume"), "vocabulary differs")
    assert snapshot(run_dir) == before


def test_resume_unknown_run(tiny_corpus):
    assert_one_line_error(invoke("train", tiny_corpus, "--run", "ghost", "--resume"), "Unknown run")


def test_run_name_cannot_escape(tiny_corpus):
    assert_one_line_error(invoke("train", tiny_corpus, "--run", "../../x"), "Run names")


def test_sigterm_saves_and_resume_continues(tiny_corpus, tmp_path):
    """A real training process gets SIGTERM mid-run, saves, exits cleanly; --resume continues."""
    args = [sys.executable, "-m", "textgen", "train", str(tiny_corpus), "--run", "term",
            "--layers", "1", "--units", "16", "--embedding-dim", "8", "--seq-len", "16",
            "--batch-size", "4", "--epochs", "500", "--eval-every", "100000", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = Path("checkpoints") / "term"
    deadline = time.time() + 120
    while not (run_dir / "run.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(4.0)  # let it take some steps
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["stopped"] == "SIGTERM" and summary["step"] > 0
    ckpt = checkpoints.latest(run_dir)
    assert ckpt.step == summary["step"]
    resumed = run_cli("train", tiny_corpus, "--run", "term", "--resume", "--epochs", "500",
                      "--time-limit", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads(resumed.stdout)
    assert after["step"] > summary["step"], "resume continues from the saved step, not from scratch"


def test_runs_list_and_show(trained):
    result = invoke("runs", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["runs"]
    assert [r["name"] for r in rows] == ["tiny"]
    row = rows[0]
    assert row["size"] == "1x16" and row["chars_seen"] == trained["chars_seen"]
    assert row["best_val_bpc"] == pytest.approx(trained["best_val_loss"] / 0.6931471805599453)
    from textgen.model import ModelConfig

    info = json.loads((Path("checkpoints") / "tiny" / "run.json").read_text())
    assert row["parameters"] == ModelConfig(**info["model"]).num_parameters()
    table = invoke("runs")
    assert "tiny" in table.stdout and "best bpc" in table.stdout
    shown = invoke("runs", "show", "tiny")
    assert shown.exit_code == 0, shown.output
    assert "Metric history" in shown.stdout and "•" in shown.stdout
    data = json.loads(invoke("runs", "show", "tiny", "--json").stdout)
    assert data["model"]["units"] == 16 and data["history"][-1]["step"] == trained["step"]
    assert_one_line_error(invoke("runs", "show", "ghost"), "Unknown run")
