"""Fixtures: every test runs with its own cache and checkpoints directories; the tiny runs are
trained here, once per session, by what tests need (helpers.TRAINED_RUNS); `browser` is Debian's
Chromium through Playwright. Everything else tests share is in tests/helpers.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import TRAINED_RUNS, TrainedRun, invoke, missing, require, write_tiny_corpus

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Help and tables follow the terminal width: a test sets COLUMNS itself rather than inherit the caller's.
os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test touches the user's cache, checkpoints or working directory."""
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TEXTGEN_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("TEXTGEN_CATALOG", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """About 12 KB of play-like English text."""
    return write_tiny_corpus(tmp_path / "tiny.txt")


def train_once(tmp_path_factory, recipe: str) -> TrainedRun:
    """The one place the shared runs are trained: `textgen train` (in this process) with
    helpers.TRAINED_RUNS[recipe], a run named "tiny" in a directory of its own."""
    root = tmp_path_factory.mktemp(f"{recipe}-run")
    corpus = write_tiny_corpus(root / "tiny.txt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTGEN_CACHE_DIR", str(root / "cache"))
        patch.delenv("TEXTGEN_CATALOG", raising=False)
        result = invoke("train", corpus, "--run", "tiny", "--checkpoints", root / "checkpoints",
                        *TRAINED_RUNS[recipe], "--json")
    assert result.exit_code == 0, result.output
    return TrainedRun(root / "checkpoints", json.loads(result.stdout), corpus, root / "cache")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TrainedRun:
    """The 1x16 run, trained when a test first asks for it (TRAINED_RUNS["tiny"])."""
    return train_once(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def two_layer_run(tmp_path_factory) -> TrainedRun:
    """The 2x16 run that has learnt its text, trained when a test first asks for it (TRAINED_RUNS["two_layer"])."""
    return train_once(tmp_path_factory, "two_layer")


@pytest.fixture
def copy_tiny_run(tiny_run, isolated) -> dict:
    """The tiny run copied into this test's ./checkpoints/tiny; returns its training summary."""
    shutil.copytree(tiny_run.run, isolated / "checkpoints" / "tiny")
    return tiny_run.summary


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
