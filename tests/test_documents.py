"""Documents (`textgen train a.txt some/dir --glob '*.txt'`): files and folders read as one
document per file, on real small files written here in two languages (English, Russian), with a
binary file, a Latin-1 file and one holding the boundary symbol to be skipped."""

from __future__ import annotations

import json
import os
import re

import pytest
from helpers import TINY_SIZE, assert_one_line_error, invoke

from textgen import documents
from textgen.documents import BOUNDARY
from textgen.generation.loading import start_id

ENGLISH = "The quick brown fox jumps over the lazy dog, {i} times.\nA second line of English.\n"
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. {i}\nЕщё одна строка.\n"


def write_folder(root, english=12, russian=4):
    """A folder of English files, a sub-folder of Russian ones, a hidden folder, and three files
    that must be skipped: a binary one (NUL bytes), a Latin-1 one and one holding U+001E."""
    (root / "ru").mkdir(parents=True)
    (root / ".git").mkdir()
    for i in range(english):
        (root / f"en{i:02d}.txt").write_text(ENGLISH.format(i=i) * 3, encoding="utf-8")
    for i in range(russian):
        (root / "ru" / f"ru{i}.txt").write_text(RUSSIAN.format(i=i) * 3, encoding="utf-8")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "latin.txt").write_bytes("café crème brûlée\n".encode("latin-1"))
    (root / "ru" / "records.txt").write_text(f"a{BOUNDARY}b\n", encoding="utf-8")
    (root / "notes.md").write_text("# Notes\nnot a .txt file\n", encoding="utf-8")
    return root


def texts_of(prepared) -> list[str]:
    """The documents of a prepared corpus, read back from its ids."""
    text = "".join(prepared.vocab[i] for i in prepared.ids())
    assert text.startswith(BOUNDARY) and text.endswith(BOUNDARY)
    return text[1:-1].split(BOUNDARY)


def test_folders_are_walked_in_order_with_glob(tmp_path):
    root = write_folder(tmp_path / "docs")
    names = [p.relative_to(root).as_posix() for p in documents.collect([root])]
    assert names == [*(f"en{i:02d}.txt" for i in range(12)), "image.png", "latin.txt", "notes.md",
                     "ru/records.txt", *(f"ru/ru{i}.txt" for i in range(4))]  # .git is hidden: not read
    picked = documents.collect([root / "notes.md", root], glob="ru*.txt")
    assert [p.name for p in picked] == ["notes.md", "ru0.txt", "ru1.txt", "ru2.txt", "ru3.txt"]
    assert len(documents.collect([root / "en00.txt", root / "en00.txt", tmp_path / "docs" / "en00.txt"])) == 1


def test_each_file_is_a_document_and_bad_files_are_skipped(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "docs")
    prepared = documents.prepare_documents([root], glob="*.txt")
    assert texts_of(prepared) == [ENGLISH.format(i=i) * 3 for i in range(12)] + [
        RUSSIAN.format(i=i) * 3 for i in range(4)]
    record = prepared.documents
    assert record["count"] == 16 and record["glob"] == "*.txt" and record["more_paths"] == 0
    read = [p for p in root.rglob("*.txt") if p.name not in ("latin.txt", "records.txt")]
    assert record["bytes"] == sum(p.stat().st_size for p in read)
    assert record["paths"][0] == str((root / "en00.txt").resolve()) and record["given"] == [str(root.resolve())]
    assert record["skipped"] == {"undecodable": 1, "binary": 1}
    assert record["skipped_named"] == [str(root / "latin.txt"), str(root / "ru" / "records.txt")]
    assert "ф" in prepared.vocab and BOUNDARY in prepared.vocab
    assert start_id(prepared.vocab) == prepared.vocab.index(BOUNDARY)  # samples begin as a new document
    assert documents.skipped_report(record) == (
        f"skipped 2 files (1 binary, 1 undecodable): {root / 'latin.txt'}, {root / 'ru' / 'records.txt'}")
    monkeypatch.setattr(documents, "NAMED_SKIPS", 1)
    everything = documents.prepare_documents([root])
    assert everything.documents["skipped"] == {"binary": 2, "undecodable": 1}  # image.png too
    assert documents.skipped_report(everything.documents) == (
        f"skipped 3 files (2 binary, 1 undecodable): {root / 'image.png'} …")  # more skipped than named


def test_a_large_file_is_checked_before_it_is_read(tmp_path):
    root = write_folder(tmp_path / "docs", english=2, russian=1)
    (root / "late.txt").write_bytes(("x" * 5000 + "\n").encode() * 4 + b"\xff")  # bad byte near the end
    prepared = documents.prepare_documents([root], glob="*.txt", chunk_bytes=1024)
    assert prepared.documents["skipped"] == {"binary": 1, "undecodable": 2}
    assert texts_of(prepared) == [ENGLISH.format(i=i) * 3 for i in range(2)] + [RUSSIAN.format(i=0) * 3]
    small = documents.prepare_documents([root], glob="*.txt", chunk_bytes=1 << 20, force=True)
    assert small.sha256 == prepared.sha256


def test_documents_are_streamed_in_bounded_chunks(tmp_path):
    import hashlib

    root = tmp_path / "many"
    root.mkdir()
    for i in range(60):
        (root / f"{i:03d}.txt").write_text(f"{i:03d} " + "lorem ipsum " * 25, encoding="utf-8")  # 304 characters
    record = {}
    chunks = list(documents.document_texts(documents.collect([root]), "utf-8", 1000, hashlib.sha256(), record))
    assert record["count"] == 60 and len(chunks) > 10
    assert max(map(len, chunks)) < 1000 + 305  # never more than a chunk and one file's text at a time
    assert "".join(chunks).count(BOUNDARY) == 61


def test_the_cache_follows_the_files(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "docs", english=3, russian=1)
    first = documents.prepare_documents([root], glob="*.txt")
    assert documents.prepare_documents([root], glob="*.txt").directory == first.directory
    assert documents.prepare_documents([root], glob="*.md").directory != first.directory
    changed = root / "en01.txt"
    changed.write_text("Changed.\n", encoding="utf-8")
    os.utime(changed, ns=(1, 1))
    second = documents.prepare_documents([root], glob="*.txt")
    assert second.directory != first.directory and second.sha256 != first.sha256
    (root / "en02.txt").unlink()
    assert documents.prepare_documents([root], glob="*.txt").directory not in (first.directory, second.directory)
    monkeypatch.setattr(documents, "LISTED_PATHS", 2)
    capped = documents.prepare_documents([root], glob="*.txt", force=True)
    assert len(capped.documents["paths"]) == 2 and capped.documents["more_paths"] == capped.documents["count"] - 2


def test_validation_holds_whole_documents(tmp_path):
    many = documents.prepare_documents([write_folder(tmp_path / "many")], glob="*.txt")
    train_end, val_start, kind = documents.corpus_split(many, 0.1)
    ids = many.ids()
    assert kind == "whole documents" and train_end == val_start + 1
    assert many.vocab[ids[val_start]] == BOUNDARY and abs(val_start - many.num_chars * 0.9) < 200
    held = "".join(many.vocab[i] for i in ids[val_start + 1:]).split(BOUNDARY)[:-1]
    assert held == [RUSSIAN.format(i=i) * 3 for i in range(2, 4)]
    assert documents.validation_report(many, val_start, kind) == (
        f"validation: 2 whole documents, {many.num_chars - val_start - 1:,} characters")
    few = documents.prepare_documents([write_folder(tmp_path / "few", english=5, russian=4)], glob="*.txt")
    split = few.num_chars - round(few.num_chars * 0.1)
    assert documents.corpus_split(few, 0.1) == (split, split, "tail")
    assert documents.validation_report(few, split, "tail") == (
        f"validation: the last {few.num_chars - split:,} characters (fewer than 10 documents)")


@pytest.mark.parametrize(("make", "args", "fragments"), [
    (lambda root: root.mkdir(), ["{root}"], ["No files to read in", "Received: 0 files"]),
    (lambda root: write_folder(root), ["{root}", "--glob", "*.rst"], ["keeping names matching --glob '*.rst'"]),
    (lambda root: write_folder(root), ["{root}/en00.txt", "{root}/missing.txt"],
     ["Corpus path not found", "missing.txt"]),
    (lambda root: (root.mkdir(), (root / "a.bin").write_bytes(b"\x00\x01"), (root / "b.txt").write_bytes(b"\xff\xfe")),
     ["{root}"], ["No readable text in 2 file(s)", "1 binary, 1 undecodable", "Received: 0 documents"]),
    (lambda root: (root.mkdir(), (root / "empty.txt").write_bytes(b"")), ["{root}"], ["1 empty"]),
    (lambda root: None, ["--glob", "*.txt"], ["No files or folders given to read with --glob '*.txt'"]),
])
@pytest.mark.parametrize("command", ["train", "prepare"])
def test_bad_inputs_are_one_line(tmp_path, make, args, fragments, command):
    root = tmp_path / "docs"
    make(root)
    args = [arg.format(root=root) for arg in args]
    train = [*TINY_SIZE, "--epochs", 1] if command == "train" else []
    assert_one_line_error(invoke(command, *args, *train), *fragments)


def test_lines_take_one_file(tmp_path):
    root = write_folder(tmp_path / "docs", english=2, russian=0)
    assert_one_line_error(invoke("train", root / "en00.txt", root / "en01.txt", "--lines", *TINY_SIZE),
                          "--lines reads one file", "en00.txt", "en01.txt with --lines")


@pytest.mark.slow
def test_train_and_resume_on_documents(tmp_path):
    root = write_folder(tmp_path / "docs")
    options = [*TINY_SIZE, "--dropout", "0", "--seq-len", "16", "--batch-size", "16", "--checkpoints",
               tmp_path / "ck", "--run", "docs", "--seed", 1]
    result = invoke("train", root, "--glob", "*.txt", *options, "--epochs", 1)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("read 16 documents, ")
    assert lines[1].startswith("skipped 2 files (1 binary, 1 undecodable): ")
    assert "validation: 2 whole documents, " in result.stderr
    info = json.loads((tmp_path / "ck" / "docs" / "run.json").read_text(encoding="utf-8"))
    corpus = info["corpus"]
    assert corpus["validation"] == "whole documents" and corpus["documents"]["count"] == 16
    assert corpus["documents"]["glob"] == "*.txt" and BOUNDARY in info["vocab"]
    sample = invoke("sample", "--checkpoints", tmp_path / "ck", "--length", 40, "--seed", 2)
    assert sample.exit_code == 0, sample.output
    # the same files continue the run; a changed file is one line, and nothing in the run changes
    again = invoke("train", *options, "--epochs", 2, "--resume", "--json")  # the run's own files and glob
    assert again.exit_code == 0, again.output
    steps = int(re.search(r"docs: step (\d+) \(epoch 1\.00\)", result.stdout).group(1))
    assert json.loads(again.stdout)["step"] == 2 * steps
    (root / "en03.txt").write_text(ENGLISH.format(i=99), encoding="utf-8")
    before = (tmp_path / "ck" / "docs" / "run.json").read_text(encoding="utf-8")
    assert_one_line_error(invoke("train", *options, "--epochs", 3, "--resume"),
                          "The documents differ from those run 'docs' was trained on", "SHA-256 differs")
    assert (tmp_path / "ck" / "docs" / "run.json").read_text(encoding="utf-8") == before


def test_the_api_trains_on_documents(tmp_path):
    import textgen

    root = write_folder(tmp_path / "docs", english=3, russian=2)
    run = textgen.train([root / "ru", root / "en00.txt"], glob="ru*", run="api", checkpoints=tmp_path / "ck",
                        layers=1, units=16, embedding_dim=8, dropout=0, seq_len=16, batch_size=4, epochs=1,
                        progress=False)
    documents_read = run.corpus["documents"]
    assert documents_read["count"] == 3 and documents_read["glob"] == "ru*"
    assert run.corpus["validation"] == "tail"  # 3 documents: too few to hold whole ones out
    resumed = run.resume(epochs=2, progress=False)
    assert resumed.corpus["documents"]["count"] == 3
    with pytest.raises(textgen.TextgenError, match="Corpus path not found"):
        textgen.train([root / "en00.txt", root / "nope"], progress=False)


def test_what_needs_one_training_file_says_so_for_documents(tmp_path):
    from textgen.errors import CorpusError
    from textgen.export.quality import validation_ids
    from textgen.generation.lines import training_lines
    from textgen.novelty import training_corpus

    info = {"name": "docs", "vocab": list("ab"), "corpus": {"source": str(tmp_path), "documents": {"count": 12}}}
    assert validation_ids(info) == (None, "the run was trained on documents, so the bpc change was not measured")
    with pytest.raises(CorpusError, match="--novelty compares with one training file; this run was trained on 12"):
        training_corpus(info)
    with pytest.raises(CorpusError, match="--novel compares with one training file; this run was trained on 12"):
        training_lines(info)
