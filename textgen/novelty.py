"""How much of a sample is copied verbatim from the training text.

Two figures per sample, so a user can tell a model that writes from one that recites:

- `longest_copied`: the longest span of the sample that occurs verbatim in the training
  split (the first 1 - val_fraction of the run's corpus, as `textgen.corpus.split_point`
  cuts it);
- `copied_share`: the share of the sample's characters that lie inside some copied span of
  at least `min_span` (20) characters.

A character lies inside a copied span of >= 20 characters exactly when some 20-character
window covering it occurs in the training text, so the share needs one set of 20-gram
hashes (64-bit polynomial hashes, computed with numpy over the memory-mapped ids in chunks:
the corpus is never loaded as Python objects). The longest span is found by binary search
on its length, each probe one more pass of hashes; a window whose hash matches is confirmed
by an exact search, so a hash collision cannot inflate a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textgen.errors import CorpusError
from textgen.files import file_sha256

MIN_SPAN = 20
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so powers never collapse to 0 mod 2**64
_INVERSE = pow(int(_BASE), -1, 1 << 64)
_CHUNK = 1 << 22
_OVERLAP = 1 << 16


def _powers(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) mod 2**64."""
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


def _prefix_hashes(ids: np.ndarray) -> np.ndarray:
    """prefix[j] = sum of (id+1) * BASE**(j-1-t) over t < j, mod 2**64, for j = 0..len(ids).

    Vectorised as BASE**(j-1) * cumsum(v[t] * BASE**-t): no Python loop over the text.
    """
    values = np.asarray(ids).astype(np.uint64) + np.uint64(1)
    prefix = np.empty(len(values) + 1, dtype=np.uint64)
    prefix[0] = 0
    with np.errstate(over="ignore"):
        sums = np.cumsum(values * _powers(_INVERSE, len(values)), dtype=np.uint64)
        np.multiply(_powers(int(_BASE), len(values)), sums, out=prefix[1:])
    return prefix


def _windows(prefix: np.ndarray, length: int) -> np.ndarray:
    """Hash of every window of `length`: prefix[j+length] - BASE**length * prefix[j]."""
    n = len(prefix) - length
    if n <= 0 or length <= 0:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return prefix[length:] - prefix[:n] * np.uint64(pow(int(_BASE), length, 1 << 64))


def _window_hashes(ids: np.ndarray, length: int) -> np.ndarray:
    """Hash of every window ids[j:j+length]: sum of (id+1) * BASE**(length-1-t), mod 2**64."""
    return _windows(_prefix_hashes(ids), length)


class Corpus:
    """The training ids, their prefix hashes (cached per chunk), and exact substring search.

    `haystack` is any object with `find(sub, start, end)` over the ids' bytes (an `mmap` of
    the prepared ids file, or `bytes`); by default the ids are copied into bytes.
    """

    CACHE_CHARS = 1 << 24  # keep the prefix hashes of corpora up to this size (8 bytes a char)

    def __init__(self, ids: np.ndarray, haystack=None):
        self.ids = ids
        self.itemsize = np.asarray(ids).dtype.itemsize
        self.haystack = haystack if haystack is not None else np.ascontiguousarray(ids).tobytes()
        self.end = len(ids) * self.itemsize
        self._cache: dict = {}

    def _prefix(self, start: int, stop: int) -> np.ndarray:
        key = (start, stop)
        if key not in self._cache:
            prefix = _prefix_hashes(self.ids[start:stop])
            if len(self.ids) > self.CACHE_CHARS:
                return prefix
            self._cache[key] = prefix
        return self._cache[key]

    def matching(self, hashes: np.ndarray, length: int) -> np.ndarray:
        """Boolean per element of `hashes`: is it the hash of some corpus window of `length`?"""
        wanted = np.unique(hashes)
        hit = np.zeros(len(wanted), dtype=bool)
        if len(wanted) == 0:
            return np.zeros(len(hashes), dtype=bool)
        overlap = max(_OVERLAP, length)
        for start in range(0, max(len(self.ids) - length + 1, 0), _CHUNK):
            prefix = self._prefix(start, min(len(self.ids), start + _CHUNK + overlap))
            windows = _windows(prefix, length)[:_CHUNK]  # the windows that start in this chunk
            at = np.minimum(np.searchsorted(wanted, windows), len(wanted) - 1)
            hit[at[wanted[at] == windows]] = True
        return hit[np.searchsorted(wanted, hashes)]

    def contains(self, window: np.ndarray) -> bool:
        needle = np.ascontiguousarray(window, dtype=self.ids.dtype).tobytes()
        start = 0
        while True:
            at = self.haystack.find(needle, start, self.end)
            if at < 0:
                return False
            if at % self.itemsize == 0:  # uint16 ids: a match must start on an id
                return True
            start = at + 1


def _matched_starts(sample: np.ndarray, corpus: Corpus, length: int) -> np.ndarray:
    """Boolean per sample position j: does sample[j:j+length] occur in the corpus?"""
    hashes = _window_hashes(sample, length)
    if len(hashes) == 0:
        return np.zeros(0, dtype=bool)
    matched = corpus.matching(hashes, length)
    for j in np.flatnonzero(matched):  # confirm, so a collision cannot count
        if not corpus.contains(sample[j: j + length]):
            matched[j] = False
    return matched


def _any_window_matches(sample: np.ndarray, corpus: Corpus, length: int) -> int:
    """A start j whose window of `length` occurs in the corpus, or -1."""
    if length > len(sample):
        return -1
    hashes = _window_hashes(sample, length)
    hits = np.flatnonzero(corpus.matching(hashes, length))
    for j in hits:
        if corpus.contains(sample[j: j + length]):
            return int(j)
    return -1


def novelty(sample: np.ndarray, corpus: Corpus, min_span: int = MIN_SPAN) -> dict:
    """`longest_copied`, where it starts, `copied_chars` and `copied_share` of one sample (ids)."""
    sample = np.asarray(sample)
    n = len(sample)
    covered = np.zeros(n, dtype=bool)
    matched = _matched_starts(sample, corpus, min_span)
    for j in np.flatnonzero(matched):
        covered[j: j + min_span] = True
    # Binary search for the longest copied span; a span of length L contains spans of L - 1.
    if matched.any():
        low, best_start = min_span, int(np.flatnonzero(matched)[0])
        # A copied span of length L >= min_span makes L - min_span + 1 consecutive matched starts.
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], matched.astype(np.int8), [0]]))))[::2]
        high = int(runs.max()) + min_span - 1
    else:
        low, best_start, high = 0, 0, min_span - 1
    while low < high:
        middle = (low + high + 1) // 2
        at = _any_window_matches(sample, corpus, middle)
        if at >= 0:
            low, best_start = middle, at
        else:
            high = middle - 1
    copied = int(covered.sum())
    return {"longest_copied": int(low), "longest_copied_start": int(best_start) if low else None,
            "copied_chars": copied, "copied_share": copied / n if n else 0.0, "min_span": min_span}


def training_corpus(info: dict) -> Corpus:
    """The training split of a run's recorded corpus (run.json["corpus"]), checked by SHA-256."""
    from textgen import corpus as corpus_lib

    recorded = info.get("corpus") or {}
    source = recorded.get("source")
    if recorded.get("documents"):
        raise CorpusError("--novelty compares with one training file; this run was trained on "
                          f"{recorded['documents'].get('count', 0)} documents. Sample without --novelty.")
    if not source:
        raise CorpusError("This run does not record its training corpus, so --novelty cannot compare with it.")
    path = Path(source)
    if not path.is_file():
        raise CorpusError(
            f"The run's training corpus is gone: {source!r} does not exist. --novelty needs the "
            "text the run was trained on; restore the file (or sample without --novelty)."
        )
    if recorded.get("sha256") and file_sha256(path) != recorded["sha256"]:
        raise CorpusError(
            f"The run's training corpus {source!r} has changed since training (its SHA-256 differs "
            "from the one in run.json), so --novelty cannot tell what the model saw."
        )
    prepared = corpus_lib.prepare(path, encoding=recorded.get("encoding", "utf-8"))
    if prepared.vocab != info["vocab"]:
        raise CorpusError(f"The corpus {source!r} no longer encodes to the run's vocabulary.")
    val_fraction = float(info.get("training", {}).get("val_fraction", corpus_lib.DEFAULT_VAL_FRACTION))
    split = corpus_lib.split_point(prepared.num_chars, val_fraction)
    import mmap

    with open(prepared.ids_path, "rb") as f:
        haystack = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return Corpus(prepared.ids()[:split], haystack)
