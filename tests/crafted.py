"""Crafted run directories: mutations of a real trained run, shared by tests/test_crafted_runs.py
(drawn by hypothesis) and benchmarks/crafted_runs.py (drawn from a seeded random.Random).

Each mutation takes a run directory (a copy: it is changed in place) and a `random.Random` that
picks what to damage and how. Many re-seal the checkpoint afterwards (`reseal`: the manifest's
hashes and sizes recomputed), as someone crafting a run would, so that the checks past the
manifest are reached. Loading the result must end in a clean load or a `CheckpointError`.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
from crafted_npz import bomb_npz, npy_bytes, npy_header, patch_declared_size, replace_member, zip_bytes

from textgen import checkpoints
from textgen.files import file_sha256

SEALED = ("weights.npz", "state.json", "optimizer.npz")
HUGE = 10**12


def get(path: Path) -> bytes:
    """The bytes of `path` if it is a regular file (links followed); FileNotFoundError otherwise:
    a mutation never reads a FIFO or a device that an earlier one left (it would hang)."""
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    return Path(path).read_bytes()


def put(path: Path, data: bytes | str) -> None:
    """Write `data` at `path`, first removing a link, FIFO or directory there (writing a FIFO would block)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or (path.exists() and not path.is_file()):
        path.unlink()
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def checkpoint_dirs(run: Path) -> list[Path]:
    """Every checkpoint directory of the run (ckpt-* and best-*), in name order."""
    return sorted(p for p in run.iterdir() if p.name.startswith(("ckpt-", "best-")) and p.is_dir()
                  and not p.is_symlink())


def target(run: Path, rng: random.Random) -> Path:
    """A checkpoint to damage: usually the newest (what `latest` loads), else any."""
    found = checkpoints.list_checkpoints(run)
    if found and rng.random() < 0.6:
        return found[-1]
    return rng.choice(checkpoint_dirs(run))


def reseal(ckpt: Path) -> None:
    """Rewrite the manifest so that it matches the checkpoint's regular files (what a forger does)."""
    names = [n for n in SEALED if (ckpt / n).is_file() and not (ckpt / n).is_symlink()]
    sizes = {n: (ckpt / n).stat().st_size for n in names}
    # A sparse file of gigabytes is not worth hashing: any digest will do, the size is refused first.
    files = {n: file_sha256(ckpt / n) if sizes[n] < (100 << 20) else "0" * 64 for n in names}
    put(ckpt / "manifest.json", json.dumps({"files": files, "bytes": sizes}))


def maybe_reseal(ckpt: Path, rng: random.Random) -> None:
    if rng.random() < 0.8:
        reseal(ckpt)


def read_weights(ckpt: Path) -> dict:
    with np.load(io.BytesIO(get(ckpt / "weights.npz")), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def model_keys(arrays: dict) -> list[str]:
    return sorted(k for k in arrays if k.startswith(("embedding/", "logits/")) or "/lstm_cell/" in k)


# ----------------------------------------------------------------------------- mutations


def truncate(run, rng, name=None):
    ckpt = target(run, rng)
    name = name or rng.choice([*SEALED, "manifest.json"])
    path = ckpt / name
    if path.is_file():
        data = get(path)
        put(path, data[: rng.randrange(0, max(1, len(data)))])
    if name != "manifest.json":
        maybe_reseal(ckpt, rng)


def flip_bytes(run, rng):
    ckpt = target(run, rng)
    path = ckpt / rng.choice(SEALED)
    if path.is_file():
        data = bytearray(get(path))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        put(path, bytes(data))
    maybe_reseal(ckpt, rng)


def edit_weights(run, rng, change, key=None):
    """Load a checkpoint's weights, `change(arrays, key)` one of the model's, save (and maybe re-seal)."""
    ckpt = target(run, rng)
    arrays = read_weights(ckpt)
    change(arrays, key or rng.choice(model_keys(arrays)))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    put(ckpt / "weights.npz", buffer.getvalue())
    maybe_reseal(ckpt, rng)


def weight_shape(run, rng, key=None, shape=None):
    def change(arrays, key):
        old, new = arrays[key], shape
        if new is None:
            first = old.shape[0] if old.ndim else 1
            new = rng.choice([(rng.randrange(0, first), *old.shape[1:]), (first + rng.randint(1, 9), *old.shape[1:]),
                              old.shape[::-1], (*old.shape, 1), (), (1,) * rng.randint(1, 3), (0,)])
        arrays[key] = np.resize(old, new).astype(old.dtype) if np.prod(new) else np.zeros(new, old.dtype)

    edit_weights(run, rng, change, key)


def weight_dtype(run, rng, dtype=None):
    def change(arrays, key):
        chosen = dtype or rng.choice(["int32", "int64", "float16", "float64", "complex64", "bool", "uint8", "U4", "S4",
                                      "datetime64[s]", "object", "f4,f4", ">f4"])
        if chosen == "object":
            arrays[key] = np.array([{"x": 1}] * 2, dtype=object)
        elif chosen == "f4,f4":
            arrays[key] = np.zeros(arrays[key].shape, dtype="f4,f4")
        else:
            arrays[key] = arrays[key].astype(chosen)

    edit_weights(run, rng, change)


def weight_missing(run, rng):
    def change(arrays, key):
        value = arrays.pop(key)
        if rng.random() < 0.5:
            arrays[key.replace("kernel", "weights").replace("bias", "offset") + "_"] = value

    edit_weights(run, rng, change)


def weight_values(run, rng):
    def change(arrays, key):
        flat = arrays[key].reshape(-1)
        flat[rng.randrange(flat.size)] = rng.choice([np.nan, np.inf, -np.inf, 3e38, -1e30, 1e7])

    edit_weights(run, rng, change)


def npz_crafted(run, rng, kind=None):
    """A weights.npz that lies about itself: zip bombs, headers, members, compression, formats."""
    ckpt = target(run, rng)
    arrays = read_weights(ckpt)
    key = rng.choice(model_keys(arrays))
    good = npy_bytes(arrays[key])
    kind = kind or rng.choice(["bomb", "declared_size", "huge_shape", "not_npy", "twice", "encrypted", "bzip2", "lzma",
                               "version3", "bad_magic", "header_not_dict", "deep_header", "many_members", "empty",
                               "not_zip", "no_members", "fortran", "big_endian", "data_short", "data_long",
                               "negative_shape", "compressed"])
    if kind == "bomb":  # 64 MiB of zeros in about 64 KB
        data = bomb_npz(arrays, key, 64)
    elif kind == "declared_size":
        data = patch_declared_size(zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()]), 0xFFFFFFF0)
    elif kind == "huge_shape":
        data = replace_member(arrays, key, npy_header((HUGE, HUGE)) + b"\0" * 64)
    elif kind == "not_npy":
        data = zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()] + [("../../evil.sh", b"echo hi")])
    elif kind == "twice":
        data = zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()] + [(f"{key}.npy", good)])
    elif kind == "encrypted":
        data = bytearray(zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()]))
        at = data.find(b"PK\x01\x02")
        data[at + 8] |= 1
        data = bytes(data)
    elif kind in ("bzip2", "lzma", "compressed"):
        method = {"bzip2": zipfile.ZIP_BZIP2, "lzma": zipfile.ZIP_LZMA, "compressed": zipfile.ZIP_DEFLATED}[kind]
        data = zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()], method)
    elif kind == "version3":
        data = replace_member(arrays, key, npy_header(arrays[key].shape, version=(3, 0)) + good[128:])
    elif kind == "bad_magic":
        data = replace_member(arrays, key, b"\x93NUMPZ" + good[6:])
    elif kind == "header_not_dict":
        data = replace_member(arrays, key, npy_header((), raw=rng.choice(["[1, 2]", "None", "'x'", "{1: 2}"])))
    elif kind == "deep_header":
        data = replace_member(arrays, key, npy_header((), raw="(" * 3000 + ")" * 3000))
    elif kind == "many_members":
        data = zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()] +
                         [(f"x{i}.npy", npy_bytes(np.zeros(1))) for i in range(5000)])
    elif kind == "empty":
        data = b""
    elif kind == "not_zip":
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    elif kind == "no_members":
        data = zip_bytes([])
    elif kind == "fortran":  # valid: must load
        data = zip_bytes([(f"{k}.npy", npy_bytes(np.asfortranarray(v))) for k, v in arrays.items()])
    elif kind == "big_endian":  # valid: must load
        data = zip_bytes([(f"{k}.npy", npy_bytes(v.astype(v.dtype.newbyteorder(">")))) for k, v in arrays.items()])
    elif kind == "data_short":
        data = replace_member(arrays, key, good[:-4])
    elif kind == "data_long":
        data = replace_member(arrays, key, good + b"\0" * 4)
    else:  # negative_shape
        data = replace_member(arrays, key, npy_header((-4, 8)) + b"\0" * 64)
    put(ckpt / "weights.npz", data)
    maybe_reseal(ckpt, rng)


def special_file(run, rng, name=None, kind=None):
    """A file of the run replaced by a link (out of the run, to a device, dangling), a FIFO or a directory."""
    ckpt = target(run, rng)
    name = name or rng.choice([*SEALED, "manifest.json", "run.json"])
    path = run / name if name == "run.json" else ckpt / name
    kind = kind or rng.choice(["/dev/zero", "/dev/urandom", "outside", "dangling", "fifo", "directory", "parent"])
    original = get(path) if path.is_file() else b""
    outside = run.parent / f"outside-{name}"
    put(outside, original)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "outside":
        path.symlink_to(outside)
    elif kind == "parent":
        path.symlink_to(Path("..") / "run.json" if name != "run.json" else Path(".."))
    elif kind == "dangling":
        path.symlink_to(run.parent / "nowhere")
    else:
        path.symlink_to(kind)
    if name in SEALED and rng.random() < 0.5:  # a manifest that hashes the original bytes
        manifest = json.loads(get(ckpt / "manifest.json"))
        manifest["files"][name] = file_sha256(outside)
        manifest.pop("bytes", None)
        put(ckpt / "manifest.json", json.dumps(manifest))


def checkpoint_link(run, rng):
    """The newest checkpoint directory replaced by a link to a copy outside the run, or by a file."""
    ckpt = checkpoints.list_checkpoints(run)[-1]
    outside = run.parent / "outside-ckpt"
    shutil.copytree(ckpt, outside, symlinks=True, dirs_exist_ok=True)  # links as links: never read /dev/zero
    shutil.rmtree(ckpt)
    if rng.random() < 0.7:
        ckpt.symlink_to(outside, target_is_directory=True)
    else:
        ckpt.write_bytes(b"not a directory")


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def manifest_json(run, rng, value=None):
    ckpt = target(run, rng)
    real = json.loads(get(ckpt / "manifest.json"))
    files = real["files"]
    digest = files["weights.npz"]
    choices = [{"files": {}}, {"files": []}, {"files": None}, [], "files", 7, {"files": {"/dev/zero": digest}},
               {"files": {**files, "../run.json": digest}}, {"files": {"weights.npz": digest}},
               {"files": {**files, "optimizer.npz": digest}} if "optimizer.npz" not in files else {"files": {
                   k: v for k, v in files.items() if k != "optimizer.npz"}},
               {"files": {**files, "weights.npz": 12}}, {"files": {**files, "weights.npz": digest.upper()}},
               {"files": files, "bytes": {"weights.npz": -1}}, {"files": files, "bytes": {"weights.npz": 10**30}},
               {"files": files, "bytes": "many"}, {"files": files, "bytes": {"lock": 3}},
               {"files": {**files, "lock": digest}}, {"files": {"weights.npz": [digest], "state.json": {}}}]
    text = json.dumps(value) if value is not None else rng.choice([*map(json.dumps, choices), deep_json(100_000)])
    put(ckpt / "manifest.json", text)


def manifest_huge(run, rng):
    """A sparse manifest.json (or state.json, run.json) far past its size limit: nothing should read it."""
    name = rng.choice(["manifest.json", "state.json", "run.json"])
    path = run / name if name == "run.json" else target(run, rng) / name
    if path.is_symlink() or not path.is_file():
        raise FileNotFoundError(path)
    with open(path, "r+b") as f:
        f.truncate(rng.choice([2 << 20, 80 << 20, 5 << 30]))
    if name == "state.json" and rng.random() < 0.5:
        reseal(path.parent)


def extra_file(run, rng):
    ckpt = target(run, rng)
    put(ckpt / rng.choice(["notes.txt", ".hidden", "weights.npz.bak", "lock"]), b"x")
    maybe_reseal(ckpt, rng)


def run_json(run, rng, change=None):
    """run.json with fields of the wrong types or values, or not JSON at all."""
    path = run / "run.json"
    info = json.loads(get(path))
    model, vocab = info["model"], info["vocab"]
    field = rng.choice(["vocab_size", "embedding_dim", "units", "num_layers"])
    changes = {
        "model_field": lambda: model.__setitem__(field, rng.choice(["16", 16.0, True, None, -1, 0, 10**30, [16]])),
        "model_size": lambda: model.__setitem__(field, model[field] + rng.choice([-1, 1, 7])),
        "no_model": lambda: info.pop("model"),
        "model_list": lambda: info.__setitem__("model", [model]),
        "vocab_dict": lambda: info.__setitem__("vocab", {c: i for i, c in enumerate(vocab)}),
        "vocab_string": lambda: info.__setitem__("vocab", "".join(vocab)),
        "vocab_ints": lambda: info.__setitem__("vocab", list(range(len(vocab)))),
        "vocab_multi": lambda: vocab.__setitem__(rng.randrange(len(vocab)), "ab"),
        "vocab_empty_string": lambda: vocab.__setitem__(rng.randrange(len(vocab)), ""),
        "vocab_duplicate": lambda: vocab.__setitem__(0, vocab[1]),
        "vocab_surrogate": lambda: vocab.__setitem__(0, "\ud800"),
        "vocab_longer": lambda: (vocab.append("\u2603"), model.__setitem__("vocab_size", len(vocab))),
        "vocab_shorter": lambda: (vocab.pop(), model.__setitem__("vocab_size", len(vocab))),
        "vocab_none": lambda: info.__setitem__("vocab", None),
        "training_list": lambda: info.__setitem__("training", []),
        "created_string": lambda: info.__setitem__("created", "yesterday"),
        "top_list": lambda: None,
    }
    change = change or rng.choice([*sorted(changes), "deep", "not_utf8"])
    if change == "deep":
        put(path, deep_json(100_000))
    elif change == "not_utf8":
        put(path, b"\xff\xfe" + json.dumps(info).encode("utf-8"))
    else:
        changes[change]()
        put(path, json.dumps([info] if change == "top_list" else info))


def state_json(run, rng):
    ckpt = target(run, rng)
    state = json.loads(get(ckpt / "state.json"))
    change = rng.choice(["step", "history", "record", "metric", "top", "deep"])
    if change == "step":
        state["step"] = rng.choice(["156", -1, 1.5, None, True, 10**40])
    elif change == "history":
        state["history"] = rng.choice(["x", 3, {"a": 1}])
    elif change == "record":
        state["history"] = [1, "x"]
    elif change == "metric":
        state["history"] = [{"step": "<img src=x onerror=alert(1)>", "val_loss": "low"}]
    text = json.dumps(["state"] if change == "top" else state)
    put(ckpt / "state.json", deep_json(100_000) if change == "deep" else text)
    maybe_reseal(ckpt, rng)


def nine_digits(run, rng):
    """The newest checkpoint renamed past step 99,999,999 (valid: it must be found and loaded)."""
    ckpt = checkpoints.list_checkpoints(run)[-1]
    ckpt.rename(run / f"ckpt-{rng.randint(100_000_000, 10**12)}")


def no_checkpoints(run, rng):
    for ckpt in checkpoint_dirs(run):
        shutil.rmtree(ckpt)


MUTATIONS = {f.__name__: f for f in (
    truncate, flip_bytes, weight_shape, weight_dtype, weight_missing, weight_values, npz_crafted, special_file,
    checkpoint_link, manifest_json, manifest_huge, extra_file, run_json, state_json, nine_digits, no_checkpoints)}


def craft(run: Path, rng: random.Random, names: list[str]) -> None:
    """Apply the mutations `names` to `run`, in order (a later one may find its target already gone)."""
    for name in names:
        try:
            MUTATIONS[name](run, rng)
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError, RecursionError,
                MemoryError, zipfile.BadZipFile):
            pass  # an earlier mutation removed what this one needed: the run is crafted all the same
