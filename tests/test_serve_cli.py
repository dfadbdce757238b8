"""`textgen serve` as a command: help, one-line errors, the missing extra, the exposure warning."""

from __future__ import annotations

import socket

import pytest
from conftest import run_cli
from serve_helpers import trained  # noqa: F401

pytestmark = pytest.mark.slow


def _one_line_error(result) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_help_has_an_example():
    result = run_cli("serve", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "Example:" in result.stdout and "--api-key" in result.stdout and "TEXTGEN_API_KEY" in result.stdout


def test_without_the_serve_extra_it_says_what_to_install(tmp_path):
    blocker = tmp_path / "blocked"
    for name in ("fastapi", "uvicorn"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    line = _one_line_error(run_cli("serve", env={"PYTHONPATH": str(blocker)}))
    assert 'pip install "textgen[serve]"' in line


def test_unknown_run_and_bad_limits_are_one_line(trained):  # noqa: F811
    line = _one_line_error(run_cli("serve", "--checkpoints", trained, "--run", "nope"))
    assert "nope" in line and "tiny" in line
    line = _one_line_error(run_cli("serve", "--checkpoints", trained, "--max-streams", "0"))
    assert "--max-streams" in line and "max_streams=0" in line
    line = _one_line_error(run_cli("serve", "--checkpoints", trained, "--chat-template", "no placeholder"))
    assert "{content}" in line
    line = _one_line_error(run_cli("serve", "--checkpoints", trained / "empty"))
    assert "No trained runs" in line


def test_open_host_without_key_warns(trained):  # noqa: F811
    # The port is taken (on 127.0.0.1), so the server warns, then cannot listen: nothing is exposed.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--checkpoints", trained, "--host", "0.0.0.0", "--port", port, timeout=60,
                         env={"COLUMNS": "200"})
    assert "without --api-key" in result.stderr
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Could not listen on 0.0.0.0")
