"""Shared fixtures and helpers: every test runs with its own cache and checkpoints directories.

Helpers for test files: `invoke` (the CLI in this process), `run_cli` (the CLI in a real
subprocess), `assert_one_line_error`, `wait_until`, `require` (a dependency outside the test's
control), the `browser` fixture (Debian's Chromium through Playwright), and `TINY_MODEL` /
`TINY_TRAIN`, the smallest model and training settings the CLI accepts for a quick real run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Help and tables follow the terminal width: a test sets COLUMNS itself rather than inherit the caller's.
os.environ.pop("COLUMNS", None)

REPO = Path(__file__).resolve().parents[1]
TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
    "Deny thy father and refuse thy name.\n\n"
)
# A 1x16 LSTM on 8-dimensional embeddings, trained on segments of 16 characters, 4 at a time.
TINY_SIZE = ["--layers", "1", "--units", "16", "--embedding-dim", "8"]
# Explicit --dropout 0: tests that read what a tiny run learnt (greedy text, stop strings) need it
# to memorise its tiny corpus, where textgen would choose dropout (tests/test_defaults.py checks that).
TINY_MODEL = [*TINY_SIZE, "--dropout", "0"]
TINY_TRAIN = [*TINY_MODEL, "--seq-len", "16", "--batch-size", "4"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test touches the user's cache, checkpoints or working directory."""
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TEXTGEN_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("TEXTGEN_CATALOG", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def write_tiny_corpus(path: Path) -> Path:
    """About 12 KB of play-like English text at `path`."""
    path.write_text(TINY_TEXT * 60, encoding="utf-8")
    return path


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """About 12 KB of play-like English text."""
    return write_tiny_corpus(tmp_path / "tiny.txt")


@pytest.fixture(scope="session")
def tiny_run_once(tmp_path_factory):
    """(summary, run directory) of one tiny run `tiny` trained by the CLI once per session:
    one epoch, evaluated every 20 steps. Copy it with `copy_tiny_run`; never modify it."""
    root = tmp_path_factory.mktemp("tiny-run")
    corpus = write_tiny_corpus(root / "tiny.txt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTGEN_CACHE_DIR", str(root / "cache"))
        patch.delenv("TEXTGEN_CATALOG", raising=False)
        result = invoke("train", corpus, "--run", "tiny", "--checkpoints", root / "checkpoints", *TINY_TRAIN,
                        "--epochs", "1", "--eval-every", "20", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), root / "checkpoints" / "tiny"


@pytest.fixture
def copy_tiny_run(tiny_run_once, isolated):
    """The session's tiny run copied into this test's ./checkpoints/tiny; returns its summary."""
    summary, directory = tiny_run_once
    shutil.copytree(directory, isolated / "checkpoints" / "tiny")
    return summary


def invoke(*args, **kwargs):
    """Run `textgen ARGS` in this process (Typer's CliRunner); stdout and stderr apart."""
    from typer.testing import CliRunner

    from textgen.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def run_cli(*args, env=None, timeout=300, input=None):
    """Run `python -m textgen ARGS` in a real subprocess; returns CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, input=input)


def assert_one_line_error(result, *fragments, code=1):
    """A user mistake: exit status `code`, nothing on stdout, and one line `Error: ...` on stderr
    holding every fragment, with no traceback. `result` comes from `invoke` or `run_cli`."""
    status = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert status == code, (status, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def wait_until(predicate, timeout: float = 120, interval: float = 0.1, what: str = "the condition"):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:g} s waiting for {what}.")
        time.sleep(interval)


def missing(what: str, install: str):
    """A system part the test needs is absent: a skip on a laptop, a failure under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI ({install})")
    pytest.skip(f"{what} is not installed ({install})")


def require(module: str, install: str = 'pip install ".[test]"'):
    """Import `module`, or `missing` it (never a silent skip in CI)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        missing(module, install)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright for Python (no `playwright install`);
    Playwright gives every context a fresh profile."""
    sync_api = require("playwright.sync_api", "pip install playwright")
    if not Path(CHROMIUM).exists():
        missing(CHROMIUM, "apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()
