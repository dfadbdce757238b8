"""What a run directory may hold, checked before anything trusts it.

A run directory can come from anywhere (downloaded, copied, edited by hand, crafted), and the
server loads whatever appears in it. So every file is opened only if it is a regular file of a
bounded size (`files.open_regular`), JSON is checked for the types textgen writes, and an npz is
read member by member: its zip directory first (how many members, their declared sizes, how much
a compressed one may expand), then each array's header (a numeric dtype, a shape that matches
the member's size and, where the caller knows it, the expected shape), and only then its data.
Every failure is a `CheckpointError` that names the file and what was wrong with it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import zipfile
import zlib

import numpy as np

from textgen.errors import CheckpointError
from textgen.files import open_regular, stream_sha256

MAX_JSON_BYTES = 64 << 20    # run.json and state.json (a long run's metrics history grows)
MAX_NPZ_BYTES = 4 << 30      # weights.npz / optimizer.npz, on disk and declared (uncompressed) alike
MAX_MEMBERS = 4096           # arrays in one npz (a 64-layer model has about 200)
INFLATE_RATIO = 100          # a deflated member may expand 100x (+ INFLATE_SLACK), never more: no zip bombs
INFLATE_SLACK = 1 << 20
NUMERIC_KINDS = "biuf"       # bool, signed, unsigned, float: no objects, strings, structures or dates
MODEL_LIMITS = {"vocab_size": 0x110000, "embedding_dim": 1 << 16, "units": 1 << 16, "num_layers": 256}
NUMBER_FIELDS = ("epoch", "step_in_epoch", "steps_per_epoch", "chars_seen", "train_seconds", "best_val_loss")
HISTORY_FIELDS = ("step", "epoch", "chars_seen", "train_loss", "val_loss", "val_bpc", "val_chars",
                  "learning_rate", "time")
# What zipfile and numpy's header parser raise on bytes that are not what they claim. They raise
# others too (tokenize.TokenError, from a header numpy tokenizes): read_npz treats any exception
# from them as a damaged file, since the bytes, not textgen, are at fault.
UNREADABLE = (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, OverflowError, MemoryError,
              NotImplementedError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error)


def damaged(path, reason: str) -> CheckpointError:
    """The error for a file that is not what it should be; `reason` is put on one line."""
    return CheckpointError(f"{str(path)!r} is damaged and cannot be read: {' '.join(str(reason).split())}")


def read_json(path, max_bytes: int = MAX_JSON_BYTES):
    """The JSON value in `path` (a regular file of at most `max_bytes`), or a CheckpointError
    (FileNotFoundError where there is no such file)."""
    try:
        return _load_json(path, max_bytes)
    except ValueError as e:
        raise damaged(path, str(e)) from None


def _load_json(path, max_bytes: int):
    """The JSON value in `path`; FileNotFoundError, or a ValueError that says what is wrong with the file."""
    try:
        with open_regular(path, max_bytes) as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"it is more than the {max_bytes:,} bytes allowed")
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from None
    except RecursionError:
        raise ValueError("its JSON is nested too deeply") from None
    except (ValueError, MemoryError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(str(e) or type(e).__name__) from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_run_info(info, path) -> dict:
    """`info` (a parsed run.json) if it holds what sampling and resuming rely on, else a CheckpointError.

    The model's sizes are positive integers within `MODEL_LIMITS`; the vocabulary is a list of
    `vocab_size` distinct single characters (no lone surrogates, which no text decodes to);
    the other sections are objects where present.
    """
    if not isinstance(info, dict):
        raise damaged(path, f"expected a JSON object. Received: {type(info).__name__}")
    model = info.get("model")
    if not isinstance(model, dict):
        raise damaged(path, f"'model' must be an object. Received: {shown(model)}")
    for name, limit in MODEL_LIMITS.items():
        value = model.get(name)
        if not _is_int(value) or not 1 <= value <= limit:
            raise damaged(path, f"model.{name} must be an integer in [1, {limit}]. Received: {shown(value)}")
    for name in ("dropout", "input_dropout", "weight_drop"):
        if name in model and not _is_number(model[name]):
            raise damaged(path, f"model.{name} must be a number. Received: {shown(model[name])}")
    if "locked_dropout" in model and not isinstance(model["locked_dropout"], bool):
        raise damaged(path, f"model.locked_dropout must be true or false. Received: {shown(model['locked_dropout'])}")
    vocab = info.get("vocab")
    if not isinstance(vocab, list) or len(vocab) != model["vocab_size"]:
        raise damaged(path, f"'vocab' must be a list of model.vocab_size={model['vocab_size']} characters. "
                            f"Received: {shown(vocab)}")
    for i, char in enumerate(vocab):
        if not isinstance(char, str) or len(char) != 1 or 0xD800 <= ord(char) <= 0xDFFF:
            raise damaged(path, f"vocab[{i}] must be one character. Received: {shown(char)}")
    if len(set(vocab)) != len(vocab):
        twice = next(c for i, c in enumerate(vocab) if c in vocab[:i])
        raise damaged(path, f"'vocab' lists {twice!r} more than once")
    for section in ("training", "corpus", "chosen", "versions"):
        if section in info and not isinstance(info[section], dict):
            raise damaged(path, f"{section!r} must be an object. Received: {shown(info[section])}")
    for name in ("created", "updated"):
        if info.get(name) is not None and not _is_number(info[name]):
            raise damaged(path, f"{name!r} must be a number. Received: {shown(info[name])}")
    return info


def check_state(state, path) -> dict:
    """`state` (a parsed state.json) if its progress and metrics history have the types textgen writes."""
    if not isinstance(state, dict):
        raise damaged(path, f"expected a JSON object. Received: {type(state).__name__}")
    if not _is_int(state.get("step")) or state["step"] < 0:
        raise damaged(path, f"'step' must be a non-negative integer. Received: {shown(state.get('step'))}")
    for name in NUMBER_FIELDS:
        if state.get(name) is not None and not _is_number(state[name]):
            raise damaged(path, f"{name!r} must be a number. Received: {shown(state[name])}")
    history = state.get("history", [])
    if not isinstance(history, list):
        raise damaged(path, f"'history' must be a list. Received: {shown(history)}")
    for i, record in enumerate(history):
        if not isinstance(record, dict):
            raise damaged(path, f"history[{i}] must be an object. Received: {shown(record)}")
        for name in HISTORY_FIELDS:
            if record.get(name) is not None and not _is_number(record[name]):
                raise damaged(path, f"history[{i}].{name} must be a number. Received: {shown(record[name])}")
    return state


def shown(value) -> str:
    """A value for a one-line message: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- a sealed checkpoint


def check_sealed(path, manifest_name: str, manifest_bytes: int, allowed: tuple, required: tuple) -> None:
    """Check the checkpoint directory `path` against its manifest (see `checkpoints.verify`).

    The manifest is `{"files": {name: SHA-256}, "bytes": {name: size}}` ("bytes" is absent in
    checkpoints written before it was added); it must name every `required` file, only `allowed`
    ones, and exactly the files the directory holds besides itself.
    """
    where = f"Checkpoint {str(path)!r} is damaged"
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise CheckpointError(f"{where}: it is not a directory (a symbolic link or a file)")
    except OSError as e:
        raise CheckpointError(f"{where}: {e.strerror}") from None
    try:
        manifest = _load_json(path / manifest_name, manifest_bytes)
    except FileNotFoundError:
        raise CheckpointError(f"{where}: {manifest_name} is missing") from None
    except ValueError as e:
        raise CheckpointError(f"{where}: {manifest_name} is unreadable: {e}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(name in files for name in required):
        raise CheckpointError(f"{where}: {manifest_name} must name at least {' and '.join(required)}. "
                              f"Received: files={shown(files)}")
    for name, digest in files.items():
        if name not in allowed:
            raise CheckpointError(f"{where}: {manifest_name} names {shown(name)}; a checkpoint holds only "
                                  f"{', '.join(allowed)}")
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise CheckpointError(f"{where}: {manifest_name} must give {name} a SHA-256 (64 hex digits). "
                                  f"Received: {shown(digest)}")
    sizes = manifest.get("bytes", {})
    if not isinstance(sizes, dict) or not all(name in files and _is_int(n) and n >= 0 for name, n in sizes.items()):
        raise CheckpointError(f"{where}: {manifest_name}'s sizes must be byte counts of its files. "
                              f"Received: bytes={shown(sizes)}")
    with os.scandir(path) as entries:
        present = set()
        for entry in entries:
            if entry.name != manifest_name and entry.name not in files:
                raise CheckpointError(f"{where}: {entry.name!r} is not named in its {manifest_name}")
            present.add(entry.name)
    for name, digest in files.items():
        if name not in present:
            raise CheckpointError(f"{where}: {name} is missing")
        try:
            with open_regular(path / name, MAX_NPZ_BYTES if name.endswith(".npz") else MAX_JSON_BYTES) as f:
                # Another size cannot have the recorded SHA-256: no need to read the file.
                resized = name in sizes and os.fstat(f.fileno()).st_size != sizes[name]
                actual = None if resized else stream_sha256(f)
        except OSError as e:
            raise CheckpointError(f"{where}: {name}: {e.strerror or e}") from None
        if actual != digest:
            raise CheckpointError(f"{where}: {name} does not match its SHA-256 (truncated or modified)")


# ----------------------------------------------------------------------------- npz


def read_npz(path, max_bytes: int = MAX_NPZ_BYTES, expect: dict | None = None) -> dict:
    """The arrays of the npz file `path`, checked before their data is read.

    Refused: anything but a regular file of at most `max_bytes`; more than `MAX_MEMBERS` members,
    a member that is not `<name>.npy`, a name given twice, compression other than none or deflate,
    encryption, declared sizes over `max_bytes` in all or expanding past `INFLATE_RATIO`; an array
    header that is not numeric (pickles, strings, structures) or whose shape does not fill its member
    exactly. With `expect` ({name: shape}), only those arrays are read: each must be present, a float
    array of that shape (checked from its header, before any data is read).
    """
    try:
        with open_regular(path, max_bytes) as f, zipfile.ZipFile(f) as archive:
            members = _members(archive, max_bytes)
            if expect is not None:
                missing = [name for name in expect if name not in members]
                if missing:
                    raise ValueError(f"it has no array {missing[0]!r}, which run.json's model calls for")
            return {name: _read_member(archive, member, None if expect is None else expect[name])
                    for name, member in members.items() if expect is None or name in expect}
    except FileNotFoundError:
        raise damaged(path, "it is missing") from None
    except OSError as e:
        raise damaged(path, e.strerror or str(e)) from None
    except RecursionError:
        raise damaged(path, "an array header is nested too deeply") from None
    except UNREADABLE as e:
        raise damaged(path, str(e) or type(e).__name__) from None
    except Exception as e:  # noqa: BLE001 — see UNREADABLE
        raise damaged(path, f"{type(e).__name__}: {e}") from None


def _members(archive: zipfile.ZipFile, max_bytes: int) -> dict:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"it holds {len(members):,} members, more than the {MAX_MEMBERS:,} allowed")
    found, declared = {}, 0
    for member in members:
        name = member.filename
        if not name.endswith(".npy") or len(name) == 4:
            raise ValueError(f"member {name!r} is not an array (<name>.npy)")
        if name[:-4] in found:
            raise ValueError(f"member {name!r} appears twice")
        if member.flag_bits & 0x1:
            raise ValueError(f"member {name!r} is encrypted")
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"member {name!r} uses compression method {member.compress_type}; "
                             "numpy writes only stored or deflated members")
        if member.compress_type == zipfile.ZIP_STORED and member.file_size != member.compress_size:
            raise ValueError(f"member {name!r} is stored but declares {member.file_size:,} bytes in "
                             f"{member.compress_size:,}")
        if member.compress_type == zipfile.ZIP_DEFLATED and \
                member.file_size > member.compress_size * INFLATE_RATIO + INFLATE_SLACK:
            raise ValueError(f"member {name!r} declares {member.file_size:,} bytes from {member.compress_size:,} "
                             "compressed (a zip bomb?)")
        declared += member.file_size
        if declared > max_bytes:
            raise ValueError(f"its members declare more than the {max_bytes:,} bytes allowed (a zip bomb?)")
        found[name[:-4]] = member
    return found


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, shape: tuple | None) -> np.ndarray:
    """One array: header checked against the member's size (and `shape`), then exactly its bytes."""
    name = member.filename[:-4]
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            found, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            found, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"array {name!r} has .npy format version {version}; expected 1.0 or 2.0")
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
            raise ValueError(f"array {name!r} must hold numbers. Received: dtype {dtype.str!r}")
        if any(n < 0 for n in found):
            raise ValueError(f"array {name!r} declares a negative shape {found}")
        count = math.prod(found)
        size = count * dtype.itemsize
        if size != member.file_size - f.tell():
            raise ValueError(f"array {name!r} declares shape {found} of {dtype.str} ({size:,} bytes) but its "
                             f"member holds {member.file_size - f.tell():,}")
        if shape is not None and (dtype.kind != "f" or dtype.itemsize > 8 or tuple(found) != tuple(shape)):
            raise ValueError(f"array {name!r} must be a float array of shape {tuple(shape)} (from run.json). "
                             f"Received: {dtype.name} {tuple(found)}")
        flat = np.empty(count, dtype=dtype)
        if size and f.readinto(flat.view(np.uint8)) != size:
            raise ValueError(f"array {name!r} is truncated")
        if f.read(1):
            raise ValueError(f"array {name!r} has bytes after its data")
    return flat.reshape(found, order="F" if fortran else "C")
