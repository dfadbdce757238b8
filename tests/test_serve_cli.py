"""`textgen serve` as a command: help, one-line errors, the missing extra, the exposure warning."""

from __future__ import annotations

import socket

import pytest
from helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow


def test_help_has_an_example():
    result = run_cli("serve", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "Example:" in result.stdout and "--api-key" in result.stdout and "TEXTGEN_API_KEY" in result.stdout


def test_without_the_serve_extra_it_says_what_to_install(tmp_path):
    blocker = tmp_path / "blocked"
    for name in ("fastapi", "uvicorn"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    line = assert_one_line_error(run_cli("serve", env={"PYTHONPATH": str(blocker)}))
    assert 'pip install "textgen[serve]"' in line


def test_unknown_run_and_bad_limits_are_one_line(tiny_run):
    root = tiny_run.checkpoints
    line = assert_one_line_error(run_cli("serve", "--checkpoints", root, "--run", "nope"))
    assert "nope" in line and "tiny" in line
    line = assert_one_line_error(run_cli("serve", "--checkpoints", root, "--max-streams", "0"))
    assert "--max-streams" in line and "max_streams=0" in line
    line = assert_one_line_error(run_cli("serve", "--checkpoints", root, "--chat-template", "no placeholder"))
    assert "{content}" in line
    line = assert_one_line_error(run_cli("serve", "--checkpoints", root / "empty"))
    assert "No trained runs" in line


def test_open_host_without_key_warns(tiny_run):
    # The port is taken (on 127.0.0.1), so the server warns, then cannot listen: nothing is exposed.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--checkpoints", tiny_run.checkpoints, "--host", "0.0.0.0", "--port", port, timeout=60,
                         env={"COLUMNS": "200"})
    assert "without --api-key" in result.stderr
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Could not listen on 0.0.0.0")
