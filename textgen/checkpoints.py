"""The run directory: the only module that knows the file names inside it.

```
checkpoints/<run>/
  run.json                 model config, training config, vocabulary, corpus, versions
  ckpt-00001200/           one checkpoint per save (the last two are kept)
    weights.npz            every model variable (weights, carried LSTM state, RNG state)
    optimizer.npz          every optimizer variable, in order
    state.json             progress (epoch, step, data position), metrics history
    manifest.json          SHA-256 of each file above; written last
  best-00001000/           weights.npz + state.json + manifest.json of the best validation loss
```

Every checkpoint is written into a hidden temporary directory and renamed into place, so a
crash never leaves a half-written checkpoint under a name that loads. Everything is numpy
`.npz` and JSON, and every read is checked first (textgen.run_checks): only regular files named
in the manifest, of bounded sizes, arrays of numbers whose headers match their bytes; loading never
executes code, follows a link out of the checkpoint or reads a FIFO or a device.

Checkpoint names carry the step in at least eight digits (`ckpt-00001200`, `ckpt-123456789`) and
are ordered by that number, not by the name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen import run_checks
from textgen.errors import CheckpointError
from textgen.files import (
    atomic_write_json,
    file_sha256,
    fsync_directory,
    process_alive,
    process_start,
    remove_dead_temporaries,
)

RUN_FILE = "run.json"
LOCK = "lock"
WEIGHTS = "weights.npz"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
MANIFEST = "manifest.json"
BEST = "best"  # prefix: best-<step>
TENSORBOARD = "tensorboard"
KEEP_LATEST = 2
# `{step:08d}` pads to eight digits and writes more past step 99,999,999: both are read back.
_CKPT = re.compile(r"^ckpt-(\d{8,20})$")
_BEST = re.compile(r"^best-(\d{8,20})$")
CHECKPOINT_FILES = (WEIGHTS, STATE, OPTIMIZER)  # what a manifest may name; weights and state are required
MAX_MANIFEST_BYTES = 1 << 20
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name or "") or name in (".", ".."):
        raise CheckpointError(
            "Run names may use letters, digits, '.', '_' and '-' (no path separators), "
            f"starting with a letter or digit. Received: run={name!r}"
        )
    return name


def new_run_name(root: Path) -> str:
    base = time.strftime("run-%Y%m%d-%H%M%S")
    name, k = base, 1
    while (root / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


def run_dir(root: Path, name: str) -> Path:
    return Path(root) / check_run_name(name)


def tensorboard_dir(directory: Path) -> Path:
    return Path(directory) / TENSORBOARD


def _save_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_run_file(directory: Path, info: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_json(directory / RUN_FILE, info)
    except OSError as e:
        raise CheckpointError(
            f"Could not write {RUN_FILE} in {str(directory)!r}: {e.strerror or e}; the previous one is intact."
        ) from None


def read_run_file(directory: Path) -> dict:
    """run.json, checked for the fields and types that sampling and resuming rely on."""
    path = Path(directory) / RUN_FILE
    try:
        return run_checks.check_run_info(run_checks.read_json(path), path)
    except FileNotFoundError:
        raise CheckpointError(f"Not a textgen run (no {RUN_FILE}). Received: {str(directory)!r}") from None


def _write_checkpoint_dir(directory: Path, final_name: str, files: dict) -> Path:
    """Write `files` ({name: ('npz', arrays) | ('json', obj)}) as `directory/final_name`."""
    tmp = directory / f".tmp-{final_name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        manifest, sizes = {}, {}
        for name, (kind, payload) in files.items():
            target = tmp / name
            if kind == "npz":
                _save_npz(target, payload)
            else:
                _write_json(target, payload)
            manifest[name], sizes[name] = file_sha256(target), target.stat().st_size
        _write_json(tmp / MANIFEST, {"files": manifest, "bytes": sizes, "written": time.time()})
        fsync_directory(tmp)
        final = directory / final_name
        if final.exists():
            old = directory / f".old-{final_name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_directory(directory)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Checkpoint:
    path: Path
    state: dict

    @property
    def step(self) -> int:
        return int(self.state["step"])


def _by_step(directory: Path, pattern: re.Pattern) -> list[Path]:
    """The directories in `directory` whose names match `pattern`, by step (oldest first)."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p.name, p) for p in Path(directory).iterdir()
             if (m := pattern.match(p.name)) and p.is_dir()]
    return [p for _, _, p in sorted(found)]


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    return _by_step(directory, _CKPT)


def clean_temporaries(directory: Path) -> None:
    """Remove the temporaries of writers that died mid-write (the caller holds the run's lock)."""
    remove_dead_temporaries(directory, (".tmp-*", ".old-*", f".{LOCK}.stale-*"), keep_live=False)


def save(directory: Path, step: int, weights: dict, optimizer: dict | None, state: dict,
         best: bool = False) -> Path:
    """Write checkpoint `ckpt-<step>` (and `best-<step>` when `best`), then prune old ones.

    Each directory appears under its final name in one rename; older ones are deleted only
    after the new one is complete, so a crash at any moment leaves a loadable latest and best.
    """
    directory = Path(directory)
    files = {WEIGHTS: ("npz", weights), STATE: ("json", state)}
    if optimizer is not None:
        files[OPTIMIZER] = ("npz", optimizer)
    path = _write_checkpoint_dir(directory, f"ckpt-{step:08d}", files)
    if best:
        _write_checkpoint_dir(directory, f"{BEST}-{step:08d}", {WEIGHTS: ("npz", weights), STATE: ("json", state)})
        for old in _best_dirs(directory)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    for old in list_checkpoints(directory)[:-KEEP_LATEST]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def verify(path: Path) -> None:
    """Check a checkpoint against its manifest; name the damaged file.

    The checkpoint must be a directory (not a link to one) holding exactly the files its manifest
    names, each from `CHECKPOINT_FILES` (weights and state at least), a regular file (no links,
    FIFOs or devices) of the size the manifest records (where it does) and of its SHA-256.
    """
    run_checks.check_sealed(Path(path), MANIFEST, MAX_MANIFEST_BYTES, CHECKPOINT_FILES, (WEIGHTS, STATE))


def load_state(path: Path) -> dict:
    """A checkpoint's state.json: its step, progress and metrics history (types checked)."""
    file = Path(path) / STATE
    try:
        return run_checks.check_state(run_checks.read_json(file), file)
    except FileNotFoundError:
        raise run_checks.damaged(file, "it is missing") from None


def load_arrays(path: Path, name: str = WEIGHTS, expect: dict | None = None) -> dict:
    """The arrays of `name` in checkpoint `path` (see `run_checks.read_npz`; `expect`: {name: shape})."""
    return run_checks.read_npz(Path(path) / name, expect=expect)


def latest(directory: Path, use_previous: bool = False) -> Checkpoint:
    """The newest verified checkpoint of a run.

    A damaged newest checkpoint is an error that names the damaged file and says that an
    older good one exists; `use_previous=True` falls back to it (and says so via the
    returned checkpoint's `fell_back_from`).
    """
    candidates = list_checkpoints(directory)
    if not candidates:
        raise CheckpointError(f"Run {str(directory)!r} has no checkpoint yet.")
    newest = candidates[-1]
    try:
        verify(newest)
        return Checkpoint(newest, load_state(newest))
    except CheckpointError as damage:
        older = []
        for p in reversed(candidates[:-1]):
            try:
                verify(p)
                older.append(p)
            except CheckpointError:
                continue
        if not older:
            raise
        if not use_previous:
            raise CheckpointError(
                f"{damage}. An older good checkpoint exists ({older[0].name}); "
                "pass --use-previous to load it."
            ) from None
        ckpt = Checkpoint(older[0], load_state(older[0]))
        ckpt.state["fell_back_from"] = newest.name
        return ckpt


def _best_dirs(directory: Path) -> list[Path]:
    return _by_step(directory, _BEST)


def best(directory: Path) -> Checkpoint | None:
    """The checkpoint with the lowest validation loss so far (None before any evaluation)."""
    found = _best_dirs(directory)
    if not found:
        return None
    verify(found[-1])
    return Checkpoint(found[-1], load_state(found[-1]))


def find_run(root: Path, name: str | None) -> Path:
    """The directory of run `name`, or of the most recently updated run when `name` is None."""
    root = Path(root)
    if name is not None:
        directory = run_dir(root, name)
        if not (directory / RUN_FILE).exists():
            known = ", ".join(sorted(p.name for p in list_runs(root))) or "none"
            raise CheckpointError(
                f"Unknown run {name!r} in {str(root)!r} (runs there: {known})."
            )
        return directory
    runs = list_runs(root)
    if not runs:
        raise CheckpointError(
            f"No trained runs in {str(root)!r}. Train one first: textgen train"
        )
    return max(runs, key=last_update)


def list_runs(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and (p / RUN_FILE).exists()]


def last_update(directory: Path) -> float:
    times = [p.stat().st_mtime for p in list_checkpoints(directory)]
    times.append((Path(directory) / RUN_FILE).stat().st_mtime)
    return max(times)


# ----------------------------------------------------------------------------- one writer per run


class RunLock:
    """An exclusive lock on a run directory: `lock` holds the owner's PID, host and start time.

    Taken with O_EXCL, so two trainers never both believe they own a run. A lock whose
    process is gone (killed, crashed, machine rebooted) is stale and taken over.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start(os.getpid()),
              "since": time.time()}
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released between our two calls: try again
                if owner == {}:
                    # Unreadable: either being written this instant or left half-written by a crash.
                    if time.time() - self.path.stat().st_mtime < 5:
                        time.sleep(0.2)
                        continue
                elif owner.get("host") != socket.gethostname():
                    raise CheckpointError(
                        f"Run {self.directory.name!r} is locked by process {owner.get('pid')} on host "
                        f"{owner.get('host')!r}. If that process is gone, delete {str(self.path)!r}."
                    ) from None
                elif owner.get("pid") != os.getpid() and process_alive(int(owner["pid"]), owner.get("start")):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
                    raise CheckpointError(
                        f"Run {self.directory.name!r} is being trained by process {owner['pid']} "
                        f"(since {since}); wait for it to finish, stop it, or use another --run."
                    ) from None
                # Stale lock of a dead process (or our own): take it over.
                stale = self.path.with_name(f".{LOCK}.stale-{os.getpid()}")
                try:
                    os.rename(self.path, stale)
                    stale.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise CheckpointError(f"Could not lock run {self.directory.name!r}: {str(self.path)!r} keeps changing.")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
