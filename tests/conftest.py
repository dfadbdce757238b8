"""Fixtures: every test runs with its own cache and checkpoints directories; the tiny runs are
trained here, once per session, by what tests need (helpers.TRAINED_RUNS); `browser` is Debian's
Chromium through Playwright. Everything else tests share is in tests/helpers.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import NAMES, TINY_SIZE, TRAINED_RUNS, TrainedRun, invoke, missing, require, write_tiny_corpus

from textgen.generation.kernel import switched_off

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


@pytest.fixture(scope="session")
def names_run(tmp_path_factory):
    """A 1x16 run "names" trained with --lines on the first 1,500 census first names (helpers.NAMES),
    one epoch; returns its checkpoints directory and the set of those names."""
    root = tmp_path_factory.mktemp("names-run")
    names = NAMES.read_text(encoding="utf-8").splitlines()[:1500]
    source = root / "names.txt"
    source.write_text("\n".join(names) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTGEN_CACHE_DIR", str(root / "cache"))
        result = invoke("train", source, "--lines", "--run", "names", "--checkpoints", root / "checkpoints",
                        *TINY_SIZE, "--dropout", "0", "--seq-len", "16", "--batch-size", "8", "--epochs", "1",
                        "--learning-rate", "0.02", "--json")
    assert result.exit_code == 0, result.output
    return root / "checkpoints", set(names)


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


# ----------------------------------------------------------------------------- the numpy leg
# `TEXTGEN_KERNEL=0 pytest` is CI's second leg: the numpy step end to end. It runs the fast
# tests and, of the slow ones, those that sample, serve and export through the step (so the
# numpy step writes text, streams and checked exports, not only unit results); the tests of
# the compiled step itself are left to the first leg.
NUMPY_LEG_SLOW = ("test_sample_cli.py", "test_api.py", "test_serve_api.py", "test_serve_batching.py", "test_export_onnx.py",
                  "test_export_html.py", "test_session.py", "test_sampling.py", "test_serve_labels.py")
COMPILED_ONLY = ("test_kernel.py", "test_kernel_build.py", "test_the_compiled_step_leaves_numpys_blas_alone")


def pytest_report_header(config):
    if switched_off():
        return f"TEXTGEN_KERNEL=0: the numpy step's leg (fast tests, and the slow ones of {', '.join(NUMPY_LEG_SLOW)})"
    return None


def pytest_collection_modifyitems(config, items):
    if not switched_off():
        return
    keep, drop = [], []
    for item in items:
        name = item.path.name
        compiled = name in COMPILED_ONLY or item.originalname in COMPILED_ONLY
        slow_elsewhere = item.get_closest_marker("slow") is not None and name not in NUMPY_LEG_SLOW
        (drop if compiled or slow_elsewhere else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
