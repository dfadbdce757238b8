"""Read, decode, normalise and encode a corpus into memory-mapped character ids.

A corpus is streamed in chunks: it is never held as one Python string, never as Python
objects per character and never one-hot. Preparation decodes the file once: each chunk is
hashed, decoded, counted and its code points appended to a temporary file (2 bytes per
character, 4 for chunks with characters above U+FFFF). Once the vocabulary is known, a
numpy-only second pass maps those code points to ids through a dense lookup table and
writes `ids.bin`. The vocabulary is the set of distinct characters sorted by code point.
`meta.json` also keeps, per character, the first chunk it occurs in, so the train/validation
statistics for any split need to look at one chunk only.

Prepared corpora are cached by (absolute path, size, mtime, encoding) under the cache
directory (`TEXTGEN_CACHE_DIR`, default `./corpora/cache`), so `train` re-uses `prepare`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textgen.errors import CorpusError

# atomic_write_bytes and file_sha256 stay importable from here for older callers (textgen.demos.mnist).
from textgen.files import atomic_write_bytes, atomic_write_json, file_sha256, remove_dead_temporaries  # noqa: F401

CHUNK_BYTES = 16 * 1024 * 1024
MAX_VOCAB = 65536
DEFAULT_VAL_FRACTION = 0.1


def cache_root() -> Path:
    """Directory where prepared corpora (and built named corpora) are cached."""
    return Path(os.environ.get("TEXTGEN_CACHE_DIR", Path("corpora") / "cache"))


def _check_source(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"Corpus file not found. Received: {str(path)!r}")
    if path.is_dir():
        raise CorpusError(f"Corpus must be a text file, not a directory. Received: {str(path)!r}")
    if path.stat().st_size == 0:
        raise CorpusError(f"Corpus file is empty. Received: {str(path)!r}")


def _check_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise CorpusError(f"Unknown text encoding. Received: encoding={encoding!r}") from None


def iter_text(path: Path, encoding: str = "utf-8", chunk_bytes: int = CHUNK_BYTES,
              hasher=None, check_nul: bool = True) -> Iterator[str]:
    """Yield the decoded, normalised text of `path` in chunks.

    Normalisation: a leading byte-order mark is dropped and CRLF becomes LF (a CR at the
    end of a chunk is held back until the next chunk shows whether an LF follows).
    Decoding errors raise `CorpusError` with the byte offset and a hint about `--encoding`.
    A NUL character means the file is binary (or UTF-16/32 read as UTF-8) and is refused
    (`check_nul=False` leaves that to the caller: `prepare` finds it in its counts for free).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    first = True
    carry = ""
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            if hasher is not None and raw:
                hasher.update(raw)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as e:
                where = offset - pending + e.start
                raise CorpusError(
                    f"Cannot decode {str(path)!r} as {encoding} at byte {where} "
                    f"(byte {raw[e.start:e.start + 1].hex() if 0 <= e.start < len(raw) else '??'}): "
                    "is it a binary file? If it is text in another encoding, pass "
                    "--encoding (for example --encoding latin-1 or --encoding cp1251)."
                ) from None
            except UnicodeError as e:  # e.g. UTF-16 without a byte-order mark
                raise CorpusError(
                    f"Cannot decode {str(path)!r} as {encoding}: {e}. Pass the file's real encoding "
                    "with --encoding (for example utf-16-le)."
                ) from None
            offset += len(raw)
            if first and text:
                if text[0] == "\ufeff":
                    text = text[1:]
                first = False
            text = carry + text
            carry = ""
            if not final and text.endswith("\r"):
                carry, text = "\r", text[:-1]
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            if check_nul and "\x00" in text:
                raise _binary(path, encoding)
            if text:
                yield text
            if final:
                return


def _binary(path: Path, encoding: str) -> CorpusError:
    return CorpusError(
        f"{str(path)!r} contains NUL characters, so it looks like a binary file "
        f"(decoded as {encoding}). If it is UTF-16 or UTF-32 text, pass "
        "--encoding utf-16 (or utf-32)."
    )


def _code_points(text: str) -> np.ndarray:
    """The code points of `text` as an integer array.

    UTF-16 is about six times faster to produce than UTF-32; it equals the code points
    unless the text has characters above U+FFFF (surrogate pairs), where UTF-32 is used.
    """
    units = np.frombuffer(text.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)
    if units.size and units.max() >= 0xD800 and ((units >= 0xD800) & (units < 0xE000)).any():
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return units


def line_documents(texts: Iterator[str]) -> Iterator[str]:
    """The chunks of `texts` as --lines documents: "\n", then each line that is not empty or
    only whitespace, each followed by "\n" (a line is held until its end is seen)."""
    yield "\n"
    carry = ""
    for text in texts:
        parts = (carry + text).split("\n")
        carry = parts.pop()
        kept = [line for line in parts if line.strip()]
        if kept:
            yield "\n".join(kept) + "\n"
    if carry.strip():
        yield carry + "\n"


@dataclass
class PreparedCorpus:
    """An encoded corpus in the cache: `ids.bin` (uint8/uint16) and `meta.json`."""

    directory: Path
    source: str
    sha256: str
    encoding: str
    vocab: list[str]
    num_chars: int
    dtype: str
    counts: list[int] = field(default_factory=list)
    chunk_starts: list[int] | None = None  # first character index of each prepared chunk
    first_chunk: list[int] | None = None  # per vocabulary id: the chunk it first occurs in
    lines: bool = False  # prepared with --lines: each non-empty line a document, "\n" before and after each
    documents: dict | None = None  # prepared from files as documents (textgen.documents): what was read

    @property
    def ids_path(self) -> Path:
        return self.directory / "ids.bin"

    def ids(self) -> np.ndarray:
        """The whole corpus as a read-only memory map of ids."""
        return np.memmap(self.ids_path, dtype=self.dtype, mode="r", shape=(self.num_chars,))

    @classmethod
    def load(cls, directory: Path) -> PreparedCorpus:
        meta = json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
        return cls(directory=Path(directory), source=meta["source"], sha256=meta["sha256"],
                   encoding=meta["encoding"], vocab=meta["vocab"], num_chars=meta["num_chars"],
                   dtype=meta["dtype"], counts=meta["counts"],
                   chunk_starts=meta.get("chunk_starts"), first_chunk=meta.get("first_chunk"),
                   lines=bool(meta.get("lines", False)), documents=meta.get("documents"))


def _cache_key(path: Path, encoding: str, lines: bool = False) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{encoding}|v1" + ("|lines" if lines else "")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def cache_entry(cache_dir: Path | None, name: str) -> Path:
    """The directory of the cache entry `name`, under `cache_dir` or the cache root."""
    return (Path(cache_dir) if cache_dir is not None else cache_root()) / name


def cached(directory: Path, force: bool = False) -> PreparedCorpus | None:
    """The corpus prepared in `directory`, or None when it must be (re)built: `force`, no entry,
    or a damaged one."""
    if not force and (directory / "meta.json").exists():
        try:
            return PreparedCorpus.load(directory)
        except (OSError, ValueError, KeyError):
            pass
    return None


def prepare(path: str | os.PathLike, encoding: str = "utf-8", cache_dir: Path | None = None,
            force: bool = False, chunk_bytes: int = CHUNK_BYTES, lines: bool = False) -> PreparedCorpus:
    """Encode `path` into the cache (or re-use the cached encoding) and return it.

    `chunk_bytes` (how much of the file is decoded at a time) bounds the memory used; it
    changes nothing in the result but `meta.json`'s chunk record. `lines`: each non-empty line
    (not only whitespace) is a document, and the newline is the boundary the model learns: the
    text encoded is "\n" then every such line followed by "\n" (empty lines dropped).
    """
    path = Path(path)
    _check_source(path)
    encoding = _check_encoding(encoding)
    directory = cache_entry(cache_dir, f"{path.stem[:40]}-{_cache_key(path, encoding, lines)}")
    found = cached(directory, force)
    if found is not None:
        return found
    hasher = hashlib.sha256()
    texts = iter_text(path, encoding, chunk_bytes, hasher=hasher, check_nul=False)
    empty = f"Corpus has {'no non-empty lines (--lines)' if lines else 'no characters after decoding'}. " \
            f"Received: {str(path)!r}"
    return encode(directory, line_documents(texts) if lines else texts, hasher.hexdigest,
                  {"source": str(path.resolve()), "encoding": encoding, **({"lines": True} if lines else {})},
                  empty=empty, least=1 if lines else 0, binary=lambda: _binary(path, encoding))


def encode(directory: Path, texts: Iterator[str], digest, meta: dict, empty, least: int = 0,
           binary=None) -> PreparedCorpus:
    """Encode the chunks `texts` into `directory` (ids.bin and meta.json) in two passes and load it.

    `digest()` gives the sha256 recorded, once `texts` are consumed; `meta` is recorded beside
    the vocabulary (source, encoding, ...). A text of at most `least` characters is a CorpusError
    saying `empty` (a str, or a function giving it once `texts` are consumed); a NUL character is `binary()` (a CorpusError), or refused as the vocabulary's
    U+0000 when `binary` is None.
    """
    directory.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(directory)  # of earlier prepares that died (a live one keeps its own)

    # Pass 1 (the only decoding pass): count the code points, note the chunk each one first
    # occurs in, and keep the code points in a temporary file (the caller's iterator hashes).
    counts = np.zeros(0, dtype=np.int64)
    first_chunk = np.zeros(0, dtype=np.int64)
    chunks: list[tuple[int, np.dtype]] = []
    total = 0
    pid = os.getpid()
    tmp_cps = directory / f".codepoints.tmp-{pid}"
    tmp_ids = directory / f".ids.bin.tmp-{pid}"
    try:
        with open(tmp_cps, "wb") as cps_file:
            for text in texts:
                cps = _code_points(text)
                chunk_counts = np.bincount(cps)
                if len(chunk_counts) > len(counts):
                    grown = np.zeros(len(chunk_counts), dtype=np.int64)
                    grown[: len(counts)] = counts
                    counts = grown
                    grown = np.full(len(chunk_counts), -1, dtype=np.int64)
                    grown[: len(first_chunk)] = first_chunk
                    first_chunk = grown
                present = chunk_counts > 0
                new = present & (counts[: len(chunk_counts)] == 0)
                first_chunk[: len(chunk_counts)][new] = len(chunks)
                counts[: len(chunk_counts)] += chunk_counts
                cps.tofile(cps_file)
                chunks.append((len(cps), cps.dtype))
                total += len(cps)
        if total <= least:
            raise CorpusError(empty() if callable(empty) else empty)
        if counts[0] > 0:
            raise binary() if binary else CorpusError("The text has NUL characters (a binary file?).")
        code_points = np.flatnonzero(counts)
        if len(code_points) > MAX_VOCAB:
            raise CorpusError(
                f"Corpus has more than {MAX_VOCAB} distinct characters; textgen stores ids as "
                f"uint16. Received: {len(code_points)} distinct characters in {meta['source']!r}"
            )
        dtype = np.uint8 if len(code_points) <= 256 else np.uint16
        lookup = np.zeros(int(code_points[-1]) + 1, dtype=dtype)
        lookup[code_points] = np.arange(len(code_points), dtype=dtype)

        # Pass 2 (numpy only): map the code points to ids and write the ids file.
        buffer = np.empty(max(size for size, _ in chunks), dtype=dtype)
        with open(tmp_cps, "rb") as cps_file, open(tmp_ids, "wb") as out:
            for size, chunk_dtype in chunks:
                cps = np.fromfile(cps_file, dtype=chunk_dtype, count=size)
                if len(cps) != size:
                    raise CorpusError(f"Temporary file {str(tmp_cps)!r} was truncated while "
                                      f"{meta['source']!r} was being prepared; run prepare again.")
                ids = buffer[:size]
                np.take(lookup, cps, out=ids)
                ids.tofile(out)
        os.replace(tmp_ids, directory / "ids.bin")
    finally:
        for tmp in (tmp_cps, tmp_ids):
            if tmp.exists():
                tmp.unlink()
    vocab = [chr(int(c)) for c in code_points]
    chunk_starts = np.concatenate([[0], np.cumsum([size for size, _ in chunks])[:-1]])
    meta = {
        **meta,
        "sha256": digest(),
        "vocab": vocab,
        "num_chars": int(total),
        "dtype": np.dtype(dtype).name,
        "counts": [int(counts[c]) for c in code_points],
        "chunk_starts": [int(x) for x in chunk_starts],
        "first_chunk": [int(first_chunk[c]) for c in code_points],
    }
    atomic_write_json(directory / "meta.json", meta)
    return PreparedCorpus.load(directory)


def split_point(num_chars: int, val_fraction: float) -> int:
    """Index where the validation tail starts (the last `val_fraction` of the corpus)."""
    if not (0.0 <= val_fraction < 1.0) or val_fraction != val_fraction:
        raise CorpusError(f"--val-fraction must be in [0, 1). Received: val_fraction={val_fraction}")
    return num_chars - int(round(num_chars * val_fraction))


def split_stats(corpus: PreparedCorpus, val_fraction: float, split: int | None = None) -> dict:
    """Statistics shown by `prepare`: sizes and validation characters never seen in training.

    A character whose first occurrence is at or after the split point occurs only in the
    validation tail, so its unseen count is its total count. `meta.json`'s first chunk per
    character settles that for all but the characters first seen in the chunk holding the
    split point, and that one chunk is the only part of `ids.bin` read. Cache entries
    without that record are scanned in full.
    """
    ids = corpus.ids()
    split = split_point(corpus.num_chars, val_fraction) if split is None else split  # documents: their own
    vocab_size = len(corpus.vocab)
    if corpus.first_chunk is not None and corpus.chunk_starts is not None:
        starts = np.asarray(corpus.chunk_starts, dtype=np.int64)
        first = np.asarray(corpus.first_chunk, dtype=np.int64)
        k = int(np.searchsorted(starts, split, side="right")) - 1  # chunk holding the split
        seen = first < k
        if split > starts[k]:
            seen |= (first == k) & (np.bincount(ids[starts[k]:split], minlength=vocab_size) > 0)
        unseen_in_val = np.where(seen, 0, np.asarray(corpus.counts, dtype=np.int64))
    else:
        seen = np.zeros(vocab_size, dtype=bool)
        unseen_in_val = np.zeros(vocab_size, dtype=np.int64)
        step = 64 * 1024 * 1024
        for start in range(0, split, step):
            seen |= np.bincount(ids[start:min(split, start + step)], minlength=vocab_size) > 0
        for start in range(split, corpus.num_chars, step):
            unseen_in_val += np.bincount(ids[start:min(corpus.num_chars, start + step)],
                                         minlength=vocab_size)
        unseen_in_val[seen] = 0
    unseen_chars = [corpus.vocab[i] for i in np.flatnonzero(unseen_in_val)]
    return {
        "source": corpus.source,
        "sha256": corpus.sha256,
        "encoding": corpus.encoding,
        "characters": corpus.num_chars,
        "vocab_size": vocab_size,
        "train_chars": split,
        "val_chars": corpus.num_chars - split,
        "val_fraction": val_fraction,
        "val_chars_unseen_in_train": int(unseen_in_val.sum()),
        "val_unseen_vocab": unseen_chars,
        "ids_dtype": corpus.dtype,
        "cache": str(corpus.directory),
    }


class Vocabulary:
    """Maps characters to ids and back; the order is the run's vocabulary order."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        missing = sorted({c for c in text if c not in self.index})
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise CorpusError(
                f"Text has characters that are not in the model's vocabulary: {shown}{more}"
            )
        return np.fromiter((self.index[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)
