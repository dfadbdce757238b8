"""The novelty report: longest span copied from the training text, checked against brute force."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from textgen.errors import CorpusError
from textgen.novelty import Corpus, novelty, training_corpus


def brute_force_novelty(sample: str, corpus: str, min_span: int = 20):
    longest = 0
    covered = [False] * len(sample)
    for i in range(len(sample)):
        for j in range(i + 1, len(sample) + 1):
            if sample[i:j] not in corpus:
                break
            longest = max(longest, j - i)
            if j - i >= min_span:
                covered[i:j] = [True] * (j - i)
    return longest, sum(covered)


def test_novelty_matches_brute_force():
    rng = np.random.default_rng(3)
    alphabet = np.array(list("abcde"))
    corpus = "".join(rng.choice(alphabet, 3000))
    index = {c: i for i, c in enumerate("abcde")}
    for k in range(6):
        pieces = ["".join(rng.choice(alphabet, rng.integers(5, 40)))]
        for _ in range(3):
            start, span = int(rng.integers(0, 2900)), int(rng.integers(10, 60))
            pieces += [corpus[start: start + span], "".join(rng.choice(alphabet, rng.integers(3, 15)))]
        sample = "".join(pieces)
        report = novelty(np.array([index[c] for c in sample], dtype=np.uint8),
                         Corpus(np.array([index[c] for c in corpus], dtype=np.uint8)))
        longest, copied = brute_force_novelty(sample, corpus)
        assert (report["longest_copied"], report["copied_chars"]) == (longest, copied), k
        assert report["copied_share"] == pytest.approx(copied / len(sample))


def test_novelty_with_uint16_ids_needs_aligned_matches():
    corpus = Corpus(np.array([0x0102, 0x0304], dtype=np.uint16))
    assert corpus.contains(np.array([0x0102, 0x0304], dtype=np.uint16))
    assert not corpus.contains(np.array([0x0401], dtype=np.uint16))  # its bytes 01 04 occur, but unaligned
    assert novelty(np.array([0x0102, 0x0304, 0x0001], dtype=np.uint16), corpus, min_span=2)["longest_copied"] == 2


@pytest.mark.slow
def test_training_corpus_uses_the_training_split_and_detects_a_missing_or_changed_corpus(tiny_run, tmp_path):
    from textgen import checkpoints
    from textgen.corpus import split_point

    info = checkpoints.read_run_file(tiny_run.run)
    corpus = training_corpus(info)
    assert len(corpus.ids) == split_point(info["corpus"]["characters"], info["training"]["val_fraction"])
    assert np.array_equal(corpus.ids[:50], np.asarray(training_corpus(info).ids[:50]))
    source = tmp_path / "moved.txt"
    shutil.copy(info["corpus"]["source"], source)
    info["corpus"]["source"] = str(source)
    assert len(training_corpus(info).ids) == len(corpus.ids)
    source.write_text(source.read_text(encoding="utf-8") + "x", encoding="utf-8")
    with pytest.raises(CorpusError, match="changed"):
        training_corpus(info)
    source.unlink()
    with pytest.raises(CorpusError, match="gone"):
        training_corpus(info)
