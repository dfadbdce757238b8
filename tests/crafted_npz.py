"""Bytes of npz files that lie about themselves, for tests/crafted.py's `npz_crafted`: .npy headers
saying anything, zips written member by member, a zip bomb built once, central directories
declaring sizes their members do not have."""

from __future__ import annotations

import io
import warnings
import zipfile
from functools import cache

import numpy as np


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header(shape, descr: str = "<f4", fortran: bool = False, version=(1, 0), raw: str | None = None) -> bytes:
    """A .npy header saying anything at all (the data after it is up to the caller)."""
    text = raw if raw is not None else repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    body = text.encode("latin-1")
    size_bytes = 2 if version == (1, 0) else 4
    pad = (-(6 + 2 + size_bytes + len(body) + 1)) % 64
    body += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(body).to_bytes(size_bytes, "little") + body


def zip_bytes(members, compression=zipfile.ZIP_STORED) -> bytes:
    """A zip of (name, bytes) members, written by Python's zipfile."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def replace_member(arrays: dict, key: str, data: bytes, compression=zipfile.ZIP_STORED) -> bytes:
    """The weights as a zip in which `key`'s member holds `data` instead of its array."""
    return zip_bytes([(f"{k}.npy", data if k == key else npy_bytes(v)) for k, v in arrays.items()], compression)


@cache
def bomb_member(megabytes: int) -> bytes:
    """A float32 array of `megabytes` MiB of zeros as a deflated .npy (about 1000:1), built once."""
    count = (megabytes << 20) // 4
    return zip_bytes([("bomb.npy", npy_header((count,)) + b"\0" * (count * 4))], zipfile.ZIP_DEFLATED)


def bomb_npz(arrays: dict, key: str, megabytes: int) -> bytes:
    """The weights with `key`'s member replaced by `bomb_member(megabytes)`, its name changed to `key`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, v in arrays.items():
            if k != key:
                archive.writestr(f"{k}.npy", npy_bytes(v))
        with zipfile.ZipFile(io.BytesIO(bomb_member(megabytes))) as bomb:
            info = bomb.infolist()[0]
            raw = bomb.fp.getvalue()
            start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            member = zipfile.ZipInfo(f"{key}.npy", date_time=info.date_time)
            member.compress_type, member.CRC = zipfile.ZIP_DEFLATED, info.CRC
            member.compress_size, member.file_size = info.compress_size, info.file_size
            member.header_offset = archive.fp.tell()
            archive.fp.write(member.FileHeader(False))
            archive.fp.write(raw[start: start + info.compress_size])
            archive.filelist.append(member)
            archive.NameToInfo[member.filename] = member
            archive.start_dir = archive.fp.tell()
    return buffer.getvalue()


def patch_declared_size(data: bytes, size: int) -> bytes:
    """Every central-directory entry of a zip claims `size` uncompressed bytes."""
    out = bytearray(data)
    start = 0
    while (at := out.find(b"PK\x01\x02", start)) >= 0:
        out[at + 24: at + 28] = size.to_bytes(4, "little")
        start = at + 4
    return bytes(out)
