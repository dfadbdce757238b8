"""The command line: help texts, the main commands end to end, and every bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_TRAIN, assert_one_line_error, invoke, run_cli, textgen_into, wait_until

from textgen import checkpoints
from textgen.cli import app


@pytest.fixture
def trained(copy_tiny_run):
    """The session's tiny run in ./checkpoints/tiny; its `textgen train --json` summary."""
    return copy_tiny_run


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


@pytest.mark.slow
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
    assert_one_line_error(invoke("train", tmp_path / "one.txt", *TINY_TRAIN, "--epochs", "1"), "one-character vocabulary")
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


@pytest.mark.slow
def test_sigterm_saves_and_resume_continues(tiny_corpus, tmp_path):
    """A real training process gets SIGTERM mid-run, saves, exits cleanly; --resume continues."""
    args = [sys.executable, "-m", "textgen", "train", str(tiny_corpus), "--run", "term", *TINY_TRAIN,
            "--epochs", "500", "--eval-every", "30", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = Path("checkpoints") / "term"
    # Mid-run: its first evaluation's checkpoint says it has taken steps (30).
    wait_until(lambda: checkpoints.list_checkpoints(run_dir), what="the first checkpoint (step 30)", timeout=120,
               process=proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["stopped"] == "SIGTERM" and summary["step"] >= 30
    ckpt = checkpoints.latest(run_dir)
    assert ckpt.step == summary["step"] == checkpoints.read_run_file(run_dir)["stopped_at_step"]
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
    from textgen.training.model import ModelConfig

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


def test_runs_lists_a_run_with_a_crafted_state(trained):
    """One run whose latest state.json is refused is shown as unreadable; the others are still listed."""
    import shutil

    shutil.copytree(Path("checkpoints") / "tiny", Path("checkpoints") / "crafted")
    latest = checkpoints.list_checkpoints(Path("checkpoints") / "crafted")[-1]
    (latest / "state.json").write_text('{"step": "<img src=x onerror=alert(1)>"}')
    result = invoke("runs", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["runs"]}
    assert "error" not in rows["tiny"] and "unreadable" in rows["crafted"]["error"]


@pytest.mark.slow
def test_help_tables_show_no_type_hints():
    """Typer prints `<int>`, `<bool>`, `<path>` beside every option; ours are clean (choices stay)."""
    hints = ("<int>", "<bool>", "<str>", "<path>", "<float>", "<int,int>", "list[str]")
    for path in [(), *all_commands()]:
        result = invoke(*path, "--help", env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.stdout, path
        assert not [hint for hint in hints if hint in result.stdout], (path, result.stdout)
    assert "digits|fashion" in invoke("mnist", "--help", env={"COLUMNS": "200"}).stdout


def test_train_help_shows_the_config_defaults():
    """`train --help` reads its defaults from ModelConfig / TrainConfig (no copies by hand)."""
    import dataclasses

    import typer.main

    from textgen.config import DEFAULT_PRESET, PRESETS, ModelConfig, TrainConfig, defaults

    values = {**defaults(TrainConfig), **defaults(ModelConfig)}
    values["layers"] = values["num_layers"]
    options = {param.name: param.help or "" for param in typer.main.get_command(app).commands["train"].params}
    checked = []
    # No fixed default: the help states the rule instead.
    chosen_by_corpus = {"dropout", "precision", "weight_drop", "input_dropout"}
    for name, value in values.items():
        if name in options and name not in chosen_by_corpus and value is not None and not isinstance(value, bool):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert f"(default: {shown})" in options[name], (name, options[name])
            checked.append(name)
    from textgen.defaults import CORPUS_RULES

    assert all(f"{dropout:g} up to {limit:,} characters" in options["dropout"] for limit, dropout, _ in CORPUS_RULES[:-1])
    assert f"{CORPUS_RULES[-1][1]:g} above" in options["dropout"]
    from textgen.defaults import PASS_RULES

    assert all(f"{dropout:g} up to {passes:g}" in options["dropout"] for passes, dropout in PASS_RULES[:-1])
    assert {"layers", "units", "embedding_dim", "seq_len", "batch_size", "epochs", "learning_rate",
            "clip_norm", "eval_chars", "lr_schedule", "warmup_steps", "state_reset", "strategy", "seed"} <= set(checked)
    assert f"{defaults(TrainConfig)['min_lr_fraction']:.0%}" in options["lr_schedule"]
    assert all(size in options["size"] for size in PRESETS) and f"{DEFAULT_PRESET} is the default" in options["size"]
    assert dataclasses.asdict(ModelConfig(vocab_size=2, **PRESETS[DEFAULT_PRESET])) == \
        dataclasses.asdict(ModelConfig(vocab_size=2)), "the default preset is the default model"


@pytest.mark.slow
def test_train_help_does_not_import_keras():
    code = ("import sys\nfrom textgen.cli import main\nsys.argv = ['textgen', 'train', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout and result.stdout.strip().endswith("[]"), result.stdout[-500:]


LONG_NAME = "shakespeare-medium-cosine-seed1"  # 31 characters


def test_runs_table_fits_80_columns_and_never_cuts_the_name(trained):
    import shutil

    shutil.copytree(Path("checkpoints") / "tiny", Path("checkpoints") / LONG_NAME)
    result = invoke("runs", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert any(line.startswith(LONG_NAME + " ") for line in lines), result.stdout
    row = next(line for line in lines if line.startswith(LONG_NAME))
    summary = json.loads(invoke("runs", "--json").stdout)["runs"][0]
    from textgen.cli.common import compact_count, compact_duration

    for figure in (compact_count(summary["parameters"]), compact_count(summary["chars_seen"]),
                   f"{summary['best_val_bpc']:.4f}", compact_duration(summary["train_seconds"]), "1x16"):
        assert f" {figure}" in row, (figure, row)


@pytest.mark.slow
def test_runs_table_in_a_pipe(trained):
    import shutil

    shutil.copytree(Path("checkpoints") / "tiny", Path("checkpoints") / LONG_NAME)
    result = run_cli("runs", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert LONG_NAME + " " in result.stdout and "tiny" in result.stdout


@pytest.mark.slow
def test_runs_into_a_closed_pipe_exits_quietly(trained):
    """`textgen runs | head -1` and `textgen runs --json | head -c 10` on 1,500 runs: more than a
    pipe holds, so textgen is still writing when the reader leaves; status 0, nothing on stderr."""
    run_file = (Path("checkpoints") / "tiny" / "run.json").read_bytes()
    for i in range(1500):
        (Path("checkpoints") / f"{LONG_NAME}-{i:04d}").mkdir()
        (Path("checkpoints") / f"{LONG_NAME}-{i:04d}" / "run.json").write_bytes(run_file)
    table = textgen_into("head -1", "runs", env={"COLUMNS": "120"})
    assert (table.returncode, table.stderr.decode()) == (0, "")
    assert table.stdout.startswith(b"Runs in ") and table.stdout.count(b"\n") == 1
    data = textgen_into("head -c 10", "runs", "--json")
    assert (data.returncode, data.stderr.decode()) == (0, "")
    assert data.stdout.startswith(b"{") and len(data.stdout) == 10


@pytest.mark.parametrize("args", [["--help"], ["sample", "--help"], ["train", "--help"]])
def test_help_into_a_closed_pipe_exits_quietly(args):
    """Typer prints help through its own Rich console, which exits with status 1 when the reader has
    gone; `true` closes the pipe before textgen has started, so every write meets a closed pipe."""
    result = textgen_into("true", *args)
    assert (result.returncode, result.stderr.decode()) == (0, "")


@pytest.mark.parametrize("value,shown", [(0, "0"), (950, "950"), (12_345, "12K"), (1_812_345, "1.8M"),
                                         (999_960, "1.0M"), (3_300_000_000, "3.3G"), (None, "0")])
def test_compact_count(value, shown):
    from textgen.cli.common import compact_count

    assert compact_count(value) == shown


@pytest.mark.parametrize("seconds,shown", [(0, "0s"), (45.4, "45s"), (67, "1m07s"), (7385, "2h03m"),
                                           (3 * 86400 + 4 * 3600 + 59, "3d04h"), (None, "0s")])
def test_compact_duration(seconds, shown):
    from textgen.cli.common import compact_duration

    assert compact_duration(seconds) == shown
