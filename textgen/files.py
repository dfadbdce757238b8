"""Files written safely and read back with trust: atomic writes, SHA-256, dead temporaries, versions.

Every file textgen writes for later (prepared corpora, run.json, checkpoints, named corpora,
sample output, the MNIST model) is written under a temporary name in the same directory,
flushed to disk, and renamed over the final name: a reader sees the old file or the new
one, never half of one. A temporary is named `.<name>.tmp-<pid>`, so one left behind by a
process that died can be told from one a live process is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import stat
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

FRAMEWORKS = ("tensorflow", "keras", "numpy", "jax", "jaxlib", "torch")


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: `.<name>.tmp-<pid>` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write (by any means: a file, or a directory); on success it
    replaces `path`.

    For writers that want a path rather than a file object (`model.save`, `np.savez`, a
    SavedModel directory). An existing directory at `path` is moved aside, replaced, then
    deleted. On an exception the temporary is deleted and `path` is untouched.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        for written in ([p for p in tmp.rglob("*") if p.is_file()] if tmp.is_dir() else [tmp]):
            with open(written, "rb+") as f:
                os.fsync(f.fileno())
        if path.is_dir() and not path.is_symlink():
            aside = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, aside)
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_directory(path.parent)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", encoding: str | None = None) -> Iterator:
    """Open a temporary file for writing; on success it is synced and renamed over `path`.

    `mode` is "w" or "wb" (text mode defaults to UTF-8). On an exception the temporary is
    deleted and `path` keeps its old content (or stays absent).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb'. Received: mode={mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f
        f.flush()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the new one."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: Path, obj) -> None:
    """`obj` as indented UTF-8 JSON (non-ASCII kept), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (hex), read in 1 MB blocks."""
    with open(path, "rb") as f:
        return stream_sha256(f)


def stream_sha256(f) -> str:
    """SHA-256 (hex) of what is left to read in the binary file object `f`, read in 1 MB blocks."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def open_regular(path: Path, max_bytes: int):
    """Open `path` for binary reading only if it is a regular file of at most `max_bytes` bytes.

    For files that may have been crafted: a symbolic link (as the last component), FIFO, device,
    socket or directory is refused before anything reads it (a FIFO or /dev/zero would hang the
    reader), and the size is checked on the open file, so a swap after the check changes nothing.
    Raises OSError whose `strerror` says what was found instead.
    """
    try:
        found = os.lstat(path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    if not stat.S_ISREG(found.st_mode):
        raise OSError(errno.EINVAL, f"it is {_file_kind(found.st_mode)}, not a regular file", str(path))
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, "it is a symbolic link, not a regular file", str(path)) from None
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise OSError(errno.EINVAL, f"it is {_file_kind(opened.st_mode)}, not a regular file", str(path))
        if opened.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"it is {opened.st_size:,} bytes, more than the {max_bytes:,} allowed", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


# ----------------------------------------------------------------------------- processes


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a recycled PID apart), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` runs (and, given its recorded `start`, is still the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another user
    except OSError:
        return False
    return start is None or process_start(pid) in (None, start)


def remove_dead_temporaries(directory: Path, patterns: tuple[str, ...] = (".*.tmp-*",),
                            keep_live: bool = True) -> list[Path]:
    """Delete temporaries (files or directories) in `directory` left by processes that died.

    A temporary's name ends in `-<pid>` of the process that wrote it; with `keep_live`, one
    whose process still runs (a concurrent writer) is left alone. `keep_live=False` is for a
    caller that holds the directory's lock, so that every temporary in it is stale.
    Returns what was deleted.
    """
    removed = []
    for pattern in patterns:
        for tmp in Path(directory).glob(pattern):
            if keep_live:
                try:
                    pid = int(tmp.name.rsplit("-", 1)[1])
                except (IndexError, ValueError):
                    continue
                if pid == os.getpid() or process_alive(pid):
                    continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ----------------------------------------------------------------------------- versions


def package_version(distribution: str) -> str | None:
    """The installed version of `distribution` (from its metadata; nothing is imported), or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions(backend: str | None = None, installed_only: bool = False) -> dict:
    """Python, textgen, the Keras backend and the framework versions (None: not installed).

    Read from package metadata, so no framework is imported; `backend` is the Keras backend
    in use when the caller knows it (else `KERAS_BACKEND`, else Keras' default, tensorflow).
    `installed_only` leaves out what is not installed (for files such as run.json).
    """
    from textgen import __version__

    found = {"python": platform.python_version(), "textgen": __version__,
             "backend": backend or os.environ.get("KERAS_BACKEND") or "tensorflow"}
    for name in FRAMEWORKS:
        found[name] = package_version(name)
    if installed_only:
        found = {k: v for k, v in found.items() if v is not None}
    return found
