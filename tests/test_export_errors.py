"""Bad input to `textgen export` is one line on stderr, never a traceback, and never a
half-written or replaced output: unknown run, damaged checkpoint (the same message as
`textgen sample`), existing output without --force, unwritable directory, missing runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, ok, run_cli
from typer.testing import CliRunner

from textgen.cli import app


def no_leftovers(directory: Path):
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


def test_unknown_run_is_one_line(tmp_path):
    runner = CliRunner()
    (tmp_path / "checkpoints").mkdir()
    result = runner.invoke(app, ["export", "--checkpoints", str(tmp_path / "checkpoints"), "--run", "nope",
                                 "--format", "onnx"])
    assert result.exit_code == 1 and "Error: Unknown run 'nope'" in result.stderr and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.onnx"))


def test_help_has_an_example():
    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Example:" in result.stdout and "--precision" in result.stdout


@pytest.mark.slow
def test_bad_format_and_precision_are_one_line(two_layer_run, tmp_path):
    assert_one_line_error(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "pdf"),
                   "--format must be one of html, onnx, savedmodel, tflite", "Received: format='pdf'")
    assert_one_line_error(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "onnx",
                           "--precision", "int8"), "--precision applies to --format html only")
    assert_one_line_error(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "html",
                           "--precision", "int4"), "Received: precision='int4'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_damaged_checkpoint_gives_the_message_sample_gives(two_layer_run, tmp_path):
    root = tmp_path / "copy"
    two_layer_run.copy(root)
    ckpt = sorted((root / "tiny").glob("ckpt-*"))[-1]  # the newest
    weights = ckpt / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:100])
    sampled = assert_one_line_error(run_cli("sample", "--checkpoints", root, "--run", "tiny", "--length", 5), "damaged")
    exported = assert_one_line_error(run_cli("export", "--checkpoints", root, "--run", "tiny", "--format", "onnx"),
                              "damaged")
    assert exported == sampled
    assert not (tmp_path / "tiny.onnx").exists()
    no_leftovers(tmp_path)


@pytest.mark.slow
def test_existing_output_is_refused_without_force_and_replaced_with_it(two_layer_run, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"mine")
    line = assert_one_line_error(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "onnx",
                                  "--output", target), "already exists", "--force")
    assert str(target) in line and target.read_bytes() == b"mine"
    result = ok(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "onnx",
                                "--output", target, "--force", "--json"))
    assert json.loads(result.stdout)["bytes"] == target.stat().st_size > 1000
    directory = tmp_path / "tiny_savedmodel"
    directory.mkdir()
    (directory / "old").write_text("old")
    assert_one_line_error(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "savedmodel"),
                   "already exists")
    assert (directory / "old").exists()
    ok(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "savedmodel", "--force"))
    assert sorted(p.name for p in directory.iterdir()) == ["1"]
    no_leftovers(tmp_path)


def _unwritable(directory: Path) -> tuple[Path, callable]:
    """A directory this process cannot create files in (chmod; as root, the immutable flag;
    failing both, sysfs), and how to undo it."""
    directory.mkdir()
    directory.chmod(0o555)
    probe = directory / "probe"
    try:
        probe.touch()
    except PermissionError:
        return directory, lambda: directory.chmod(0o755)
    probe.unlink()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(directory)]).returncode == 0:
        return directory, lambda: subprocess.run(["chattr", "-i", str(directory)], check=True)
    return Path("/sys"), lambda: None


@pytest.mark.slow
def test_unwritable_directory_is_one_line(two_layer_run, tmp_path):
    directory, undo = _unwritable(tmp_path / "locked")
    try:
        assert_one_line_error(run_cli("export", "--checkpoints", two_layer_run.checkpoints, "--run", "tiny", "--format", "html",
                               "--output", directory / "page.html"), "Cannot write in", "permission denied")
        assert not (directory / "page.html").exists()
    finally:
        undo()


@pytest.mark.slow
def test_missing_runtime_names_the_extra_to_install(two_layer_run, tmp_path):
    code = ("import sys; sys.modules['onnx'] = None; sys.argv = ['textgen'] + sys.argv[1:]; "
            "from textgen.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, "export", "--checkpoints", str(two_layer_run.checkpoints), "--run", "tiny",
                             "--format", "onnx"], capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, 'pip install "textgen[export]"', "onnx")
    assert not (tmp_path / "tiny.onnx").exists()
    no_leftovers(tmp_path)


@pytest.mark.slow
def test_a_quantised_page_without_its_corpus_says_so_in_one_line(two_layer_run, tmp_path):
    root = tmp_path / "copy"
    two_layer_run.copy(root)
    info = json.loads((root / "tiny" / "run.json").read_text(encoding="utf-8"))
    info["corpus"]["source"] = str(tmp_path / "gone.txt")
    (root / "tiny" / "run.json").write_text(json.dumps(info), encoding="utf-8")
    result = ok(run_cli("export", "--checkpoints", root, "--run", "tiny", "--format", "html",
                                "--precision", "int8", env={"COLUMNS": "300"}))
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "gone.txt" in notes[0] and "is gone" in notes[0], result.stderr
    assert "bits/char" not in result.stdout and (tmp_path / "tiny.html").is_file()
    assert os.path.getsize(tmp_path / "tiny.html") > 1000
