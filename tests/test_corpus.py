"""Reading, decoding, normalising and encoding corpora."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.corpus import Vocabulary, iter_text, prepare, split_point, split_stats
from textgen.errors import CorpusError


def decoded(corpus) -> str:
    return "".join(corpus.vocab[i] for i in corpus.ids())


def test_prepare_round_trip_and_memmap(tmp_path):
    text = "hello world\nthe quick brown fox\n" * 10
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    corpus = prepare(path)
    assert isinstance(corpus.ids(), np.memmap)
    assert corpus.ids().dtype == np.uint8
    assert corpus.vocab == sorted(set(text))
    assert decoded(corpus) == text
    assert corpus.num_chars == len(text)
    assert sum(corpus.counts) == len(text)


def test_bom_dropped_and_crlf_normalised(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    assert decoded(prepare(path)) == "line one\nline two\n"


def test_crlf_split_across_chunks(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes(b"ab\r\ncd\r\n" * 5)
    # A 3-byte chunk ends right after a CR: it must still become one LF.
    assert "".join(iter_text(path, chunk_bytes=3)) == "ab\ncd\n" * 5


def test_cyrillic_works_like_english(tmp_path):
    text = "Мой дядя самых честных правил,\nКогда не в шутку занемог,\n" * 20
    path = tmp_path / "pushkin.txt"
    path.write_text(text, encoding="utf-8")
    corpus = prepare(path)
    assert decoded(corpus) == text
    assert corpus.vocab == sorted(set(text))
    assert "д" in corpus.vocab


def test_multibyte_characters_split_across_chunks(tmp_path):
    text = "ёжик в тумане 🦔 " * 50
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    assert "".join(iter_text(path, chunk_bytes=7)) == text


def test_other_encoding(tmp_path):
    text = "Привет, мир!\n" * 10
    path = tmp_path / "cp.txt"
    path.write_bytes(text.encode("cp1251"))
    with pytest.raises(CorpusError, match="--encoding"):
        prepare(path)
    assert decoded(prepare(path, encoding="cp1251")) == text


def test_undecodable_file_says_where(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text\n" * 3 + b"\xff\xfe broken")
    with pytest.raises(CorpusError, match=r"at byte 30 .*--encoding"):
        prepare(path)


def test_binary_file_with_nul_is_refused(tmp_path):
    path = tmp_path / "bin.dat"
    path.write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(CorpusError, match="binary"):
        prepare(path)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty"])
def test_unusable_paths(tmp_path, kind):
    path = tmp_path / "x.txt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(CorpusError, match={"missing": "not found", "directory": "directory", "empty": "empty"}[kind]):
        prepare(path)


def test_uint16_ids_for_large_vocabularies(tmp_path):
    chars = "".join(chr(0x4E00 + i) for i in range(300))
    path = tmp_path / "cjk.txt"
    path.write_text(chars * 3, encoding="utf-8")
    corpus = prepare(path)
    assert corpus.dtype == "uint16"
    assert decoded(corpus) == chars * 3


def test_cache_is_reused_and_invalidated(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc" * 100, encoding="utf-8")
    first = prepare(path)
    assert prepare(path).directory == first.directory
    path.write_text("abcd" * 100, encoding="utf-8")
    second = prepare(path)
    assert second.directory != first.directory
    assert second.vocab == ["a", "b", "c", "d"]


def test_split_is_contiguous_tail_and_stats(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a" * 900 + "b" * 90 + "Z" * 10, encoding="utf-8")
    corpus = prepare(path)
    assert split_point(1000, 0.1) == 900
    stats = split_stats(corpus, 0.1)
    assert stats["train_chars"] == 900 and stats["val_chars"] == 100
    assert stats["val_chars_unseen_in_train"] == 100
    assert stats["val_unseen_vocab"] == ["Z", "b"]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s and "\r" not in s
                                                  and not s.startswith("\ufeff")))
def test_vocabulary_round_trip(text):
    vocab = Vocabulary(sorted(set(text)))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert ids.max() < len(vocab)


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\ufeff"),
               min_size=1, max_size=300),
       st.integers(min_value=1, max_value=17))
def test_prepare_round_trip_any_text(tmp_path_factory, text, chunk):
    path = tmp_path_factory.mktemp("h") / "t.txt"
    path.write_text(text, encoding="utf-8")
    assert "".join(iter_text(path, chunk_bytes=chunk)) == text
    assert decoded(prepare(path)) == text
    # Prepared in small chunks (some with characters above U+FFFF, some without), the ids
    # are the same and the split statistics equal a scan of the whole corpus.
    chunked = prepare(path, cache_dir=path.parent / "chunked", chunk_bytes=chunk)
    assert decoded(chunked) == text
    assert len(chunked.chunk_starts) == len(list(iter_text(path, chunk_bytes=chunk)))
    for fraction in (0.0, 0.1, 0.37, 0.5, 0.9):
        assert split_stats(chunked, fraction) == scanned_split_stats(chunked, fraction)


def scanned_split_stats(corpus, fraction):
    """`split_stats` computed from the text itself, the slow obvious way."""
    text = decoded(corpus)
    split = split_point(len(text), fraction)
    train, val = set(text[:split]), text[split:]
    unseen = [c for c in val if c not in train]
    return {
        "source": corpus.source, "sha256": corpus.sha256, "encoding": corpus.encoding,
        "characters": len(text), "vocab_size": len(corpus.vocab), "train_chars": split,
        "val_chars": len(text) - split, "val_fraction": fraction,
        "val_chars_unseen_in_train": len(unseen), "val_unseen_vocab": sorted(set(unseen)),
        "ids_dtype": corpus.dtype, "cache": str(corpus.directory),
    }


def test_split_stats_of_cache_entries_without_chunk_record(tmp_path):
    """Entries prepared by older versions have no per-chunk record: they are scanned."""
    path = tmp_path / "c.txt"
    path.write_text("ab" * 500 + "abc" * 20 + "xyz" * 10, encoding="utf-8")
    corpus = prepare(path, chunk_bytes=64)
    assert len(corpus.chunk_starts) > 10
    old = prepare(path, chunk_bytes=64)
    old.chunk_starts = old.first_chunk = None
    for fraction in (0.0, 0.02, 0.05, 0.2):
        assert split_stats(old, fraction) == split_stats(corpus, fraction) \
            == scanned_split_stats(corpus, fraction)


def test_vocabulary_lists_unknown_characters():
    vocab = Vocabulary(list("abc"))
    with pytest.raises(CorpusError, match=r"'x', 'y'"):
        vocab.encode("abxcy")


@pytest.mark.slow
def test_prepare_removes_temporaries_of_dead_runs_only(tmp_path):
    """A prepare killed mid-way leaves `.codepoints.tmp-<pid>` (2 bytes per character): the
    next prepare of that corpus deletes it, but not the files of a prepare still running."""
    import subprocess
    import sys

    path = tmp_path / "c.txt"
    path.write_text("abc" * 100, encoding="utf-8")
    directory = prepare(path).directory
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = directory / f".codepoints.tmp-{int(dead.stdout)}"
    stale.write_bytes(b"x" * 1000)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = directory / f".ids.bin.tmp-{alive.pid}"
        running.write_bytes(b"y")
        again = prepare(path, force=True)
        assert not stale.exists() and running.exists()
        assert decoded(again) == "abc" * 100
    finally:
        alive.kill()
        alive.wait()
