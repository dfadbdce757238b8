"""Shared fixtures: every test runs with its own cache and checkpoints directories."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
    "Deny thy father and refuse thy name.\n\n"
)


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
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT * 60, encoding="utf-8")
    return path


def run_cli(*args, env=None, timeout=300, input=None):
    """Run `python -m textgen ARGS` in a real subprocess; returns CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, input=input)
