"""textgen.files: atomic writes, SHA-256 of a file, temporaries of dead processes, versions."""

from __future__ import annotations

import hashlib
import json
import os
import platform

import pytest

from textgen import files

DEAD_PID = 2**22 + 1  # above Linux's largest pid_max: no process has it


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_atomic_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with files.atomic_write(target, "w") as f:
        f.write("new ∂ text")
        assert target.read_text(encoding="utf-8") == "old", "readers see the old file until the rename"
        assert leftovers(tmp_path) == [f".out.txt.tmp-{os.getpid()}"]
    assert target.read_text(encoding="utf-8") == "new ∂ text"
    assert leftovers(tmp_path) == []


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_write(target, "wb") as f:
        f.write(b"half of it")
        raise RuntimeError("disk full, say")
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []
    fresh = tmp_path / "fresh.bin"
    with pytest.raises(RuntimeError), files.atomic_write(fresh) as f:
        raise RuntimeError
    assert not fresh.exists() and leftovers(tmp_path) == []


def test_atomic_write_refuses_appending():
    with pytest.raises(ValueError, match="Received: mode='a'"), files.atomic_write("x", "a"):
        pass


def test_atomic_path_for_writers_that_want_a_path(tmp_path):
    target = tmp_path / "model.bin"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.bin.tmp-")
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights" and leftovers(tmp_path) == []


def test_atomic_json_and_bytes(tmp_path):
    files.atomic_write_json(tmp_path / "a.json", {"vocab": ["é", "\n"], "n": 1})
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"vocab": ["é", "\n"], "n": 1} and "é" in text and text.endswith("\n")
    files.atomic_write_bytes(tmp_path / "b", b"\x00\x01")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"


def test_file_sha256_matches_hashlib_across_blocks(tmp_path):
    data = os.urandom((1 << 20) + 12345)  # more than one 1 MB block
    (tmp_path / "f").write_bytes(data)
    assert files.file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert files.file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_dead_temporaries_go_live_ones_stay(tmp_path):
    dead = tmp_path / f".ids.bin.tmp-{DEAD_PID}"
    mine = tmp_path / f".ids.bin.tmp-{os.getpid()}"
    live = tmp_path / f".meta.json.tmp-{os.getppid()}"
    odd = tmp_path / ".notes.tmp-abc"
    dead_dir = tmp_path / f".x.tmp-{DEAD_PID}"
    for path in (dead, mine, live, odd):
        path.write_bytes(b"partial")
    (dead_dir / "inner").mkdir(parents=True)
    removed = files.remove_dead_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead.name, dead_dir.name])
    assert leftovers(tmp_path) == sorted([mine.name, live.name, odd.name])


def test_under_a_lock_every_temporary_is_stale(tmp_path):
    (tmp_path / f".tmp-ckpt-00000010-{os.getppid()}").mkdir()
    (tmp_path / ".lock.stale-1").write_text("{}")
    (tmp_path / "ckpt-00000005").mkdir()
    files.remove_dead_temporaries(tmp_path, (".tmp-*", ".lock.stale-*"), keep_live=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000005"]


def test_process_alive():
    assert files.process_alive(os.getpid())
    assert files.process_alive(os.getpid(), files.process_start(os.getpid()))
    assert not files.process_alive(DEAD_PID)
    if files.process_start(os.getpid()) is not None:  # Linux: a recycled pid has another start time
        assert not files.process_alive(os.getpid(), "0")


def test_versions():
    found = files.versions("jax")
    assert found["backend"] == "jax" and found["python"] == platform.python_version()
    assert found["numpy"] and found["keras"] and "torch" in found
    from textgen import __version__

    assert found["textgen"] == __version__
    installed = files.versions("tensorflow", installed_only=True)
    assert None not in installed.values() and installed["tensorflow"] == files.package_version("tensorflow")
    assert files.package_version("no-such-distribution-textgen") is None
