"""Several files or folders as one corpus of documents, and the split that keeps documents whole.

`textgen train a.txt b.txt some/dir --glob '*.py'`: each file is a document. Folders are read
recursively in sorted order (names starting with "." are left out, so `.git` is not read), and
`--glob` picks the files found in folders by name (a file named on the command line is always
read). The encoded text is BOUNDARY, then each document followed by BOUNDARY, so the model
learns where a document ends and how one begins, and sampling starts after a boundary, as at
the start of a new document (`textgen.generation.loading.start_id`).

BOUNDARY is U+001E RECORD SEPARATOR: a control character that text files do not hold (unlike
"\\n" or "\\f"), so it cannot be mistaken for anything a document says; a file that holds it
(or NUL, or bytes that do not decode) is skipped like a binary file and counted.

Files are streamed: a file up to `chunk_bytes` is decoded once and kept only until it is
written; a larger one is decoded twice (checked, then encoded) so that a bad byte near its end
skips it without anything of it held in memory. Small documents are joined into chunks of
about `chunk_bytes` for `corpus.encode`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from textgen.corpus import (
    CHUNK_BYTES,
    PreparedCorpus,
    _check_encoding,
    cache_entry,
    cached,
    encode,
    iter_text,
    split_point,
)
from textgen.errors import CorpusError

BOUNDARY = "\x1e"  # U+001E RECORD SEPARATOR, between documents
LISTED_PATHS = 1000  # run.json lists at most this many paths, and counts the rest
NAMED_SKIPS = 3  # the skipped files named in the report
BINARY_SNIFF = 8000  # bytes read first to look for a NUL byte
MIN_VAL_DOCUMENTS = 10  # fewer documents than this: validation is the tail, as for one file


def collect(paths: Sequence[str | os.PathLike], glob: str | None = None) -> list[Path]:
    """The files `paths` name, in order: files as given, folders walked recursively in sorted
    order (hidden names left out) keeping the names `glob` matches; each file once."""
    if not paths:
        raise CorpusError(f"No files or folders given to read{' with --glob ' + repr(glob) if glob else ''}. "
                          "Received: 0 paths")
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise CorpusError(f"Corpus path not found. Received: {str(given)!r}")
        if path.is_dir():
            for folder, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(folder) / name for name in sorted(names)
                          if not name.startswith(".") and (glob is None or fnmatch.fnmatch(name, glob))]
        else:
            found.append(path)
    seen, files = set(), []
    for path in found:
        key = path.resolve()
        if key not in seen and path.is_file():
            seen.add(key)
            files.append(path)
    if not files:
        where = ", ".join(repr(str(p)) for p in paths)
        raise CorpusError(f"No files to read in {where} (each directory read recursively"
                          + (f", keeping names matching --glob {glob!r}" if glob else "") + "). Received: 0 files")
    return files


def _cache_key(files: list[Path], encoding: str, glob: str | None) -> str:
    key = hashlib.sha256(f"documents|{encoding}|{glob}|v1".encode())
    for path in files:
        st = path.stat()
        key.update(f"\n{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return key.hexdigest()[:16]


def _read(path: Path, encoding: str, chunk_bytes: int, hasher) -> Iterator[str] | str:
    """The decoded chunks of `path`, or why it is skipped ("binary", "undecodable")."""
    try:
        if not encoding.startswith(("utf-16", "utf-32")):
            with open(path, "rb") as f:
                if b"\0" in f.read(BINARY_SNIFF):  # as git does: a NUL byte near the start is a binary file
                    return "binary"
        small = path.stat().st_size <= chunk_bytes
        texts = iter_text(path, encoding, chunk_bytes, hasher=hasher if small else None)
        if small:
            chunks = list(texts)
        else:
            for text in texts:  # the check pass: nothing kept
                if BOUNDARY in text:
                    return "binary"
            chunks = iter_text(path, encoding, chunk_bytes, hasher=hasher)
    except CorpusError as error:
        return "binary" if "NUL" in str(error) else "undecodable"
    except OSError:
        return "unreadable"
    if small and any(BOUNDARY in text for text in chunks):
        return "binary"
    return chunks


def document_texts(files: list[Path], encoding: str, chunk_bytes: int, hasher, record: dict) -> Iterator[str]:
    """BOUNDARY, then each readable file's text and BOUNDARY, in chunks of about `chunk_bytes`
    characters; `hasher` takes each document's path and SHA-256, `record` gets what was read."""
    pending, size = [BOUNDARY], 1
    count, total, listed, skipped, named = 0, 0, [], {}, []
    for path in files:
        file_hasher = hashlib.sha256()
        chunks = _read(path, encoding, chunk_bytes, file_hasher)
        if isinstance(chunks, str):
            skipped[chunks] = skipped.get(chunks, 0) + 1
            if len(named) < NAMED_SKIPS:
                named.append(str(path))
            continue
        length = 0
        for text in chunks:
            length += len(text)
            pending.append(text)
            size += len(text)
            if size >= chunk_bytes:
                yield "".join(pending)
                pending, size = [], 0
        if length == 0:
            skipped["empty"] = skipped.get("empty", 0) + 1
            if len(named) < NAMED_SKIPS:
                named.append(str(path))
            continue
        pending.append(BOUNDARY)
        size += 1
        hasher.update(f"{path.resolve()}\0{file_hasher.hexdigest()}\n".encode("utf-8", "surrogateescape"))
        count += 1
        total += path.stat().st_size
        if len(listed) < LISTED_PATHS:
            listed.append(str(path.resolve()))
    if size:
        yield "".join(pending)
    record.update(count=count, bytes=total, paths=listed, more_paths=count - len(listed),
                  skipped=skipped, skipped_named=named)


def prepare_documents(paths: Sequence[str | os.PathLike], glob: str | None = None, encoding: str = "utf-8",
                      cache_dir: Path | None = None, force: bool = False,
                      chunk_bytes: int = CHUNK_BYTES) -> PreparedCorpus:
    """Encode the files `paths` name (see `collect`) as documents into the cache, or re-use it.

    The cache is keyed on the files (paths, sizes, modification times), the encoding and the
    glob. meta.json's "documents" records the count, bytes and paths read (at most
    LISTED_PATHS, `more_paths` counts the rest) and the files skipped by reason.
    """
    files = collect(paths, glob)
    encoding = _check_encoding(encoding)
    first = Path(paths[0]).resolve().name or "documents"
    directory = cache_entry(cache_dir, f"{first[:40]}-docs-{_cache_key(files, encoding, glob)}")
    found = cached(directory, force)
    if found is not None:
        return found
    # what was given (to read the same files again on resume), then what was read
    record = {"given": [str(Path(p).resolve()) for p in paths], **({"glob": glob} if glob else {})}
    hasher = hashlib.sha256()
    source = ", ".join(str(Path(p)) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    meta = {"source": source, "encoding": encoding, "documents": record}
    texts = document_texts(files, encoding, chunk_bytes, hasher, record)
    return encode(directory, texts, hasher.hexdigest, meta, least=1,
                  empty=lambda: f"No readable text in {len(files)} file(s) of {source}: "
                                f"{_skipped_text(record)}. Received: 0 documents")


def _skipped_text(record: dict) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(record.get("skipped", {}).items()))


def skipped_report(documents: dict) -> str | None:
    """One line for stderr: how many files were skipped, why, and the first few of them."""
    skipped = documents.get("skipped") or {}
    if not skipped:
        return None
    total = sum(skipped.values())
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    noun = "record" if documents.get("format") else "file"
    named = ", ".join(documents.get("skipped_named", []))
    more = " …" if named and total > len(documents.get("skipped_named", [])) else ""
    return f"skipped {total} {noun}{'s' if total != 1 else ''} ({why})" + (f": {named}{more}" if named else "")


def read_report(corpus: PreparedCorpus) -> str:
    """One line: the documents read and their size."""
    documents = corpus.documents or {}
    count = documents.get("count", 0)
    noun = "record" if documents.get("format") else "document"
    labels = documents.get("labels")
    shown = "" if labels is None else "; labels " + ", ".join(f"{k} ({n:,})" for k, n in list(labels.items())[:10]) + (
        " …" if len(labels) > 10 or documents.get("more_labels") else "")
    return (f"{count:,} {noun}{'s' if count != 1 else ''}, {documents.get('bytes', 0):,} bytes, "
            f"{corpus.num_chars:,} characters with the boundaries{shown}")


def boundary_near(ids: np.ndarray, boundary_id: int, target: int, window: int = 1 << 20) -> int | None:
    """The position of the boundary id nearest to `target` strictly inside the text (None if none),
    reading `ids` a window at a time outwards from `target`."""
    n = len(ids)
    low, high = target, target
    while low > 1 or high < n - 1:
        before = ids[max(1, low - window):low]
        after = ids[high:min(n - 1, high + window)]
        hits_before = np.flatnonzero(before == boundary_id)
        hits_after = np.flatnonzero(after == boundary_id)
        candidates = []
        if hits_before.size:
            candidates.append(max(1, low - window) + int(hits_before[-1]))
        if hits_after.size:
            candidates.append(high + int(hits_after[0]))
        if candidates:
            return min(candidates, key=lambda position: abs(position - target))
        low, high = max(1, low - window), min(n - 1, high + window)
    return None


def corpus_split(corpus: PreparedCorpus, val_fraction: float) -> tuple[int, int, str]:
    """(end of the training text, start of the validation text, how it was split).

    For documents (at least MIN_VAL_DOCUMENTS of them), validation is the whole documents after
    the boundary nearest to the last `val_fraction` of the characters: training ends with that
    boundary and validation starts from it (the boundary is its first input, not a target).
    Otherwise validation is the tail, as for one file ("tail").
    """
    split = split_point(corpus.num_chars, val_fraction)
    documents = corpus.documents or {}
    if documents.get("count", 0) < MIN_VAL_DOCUMENTS or split >= corpus.num_chars:
        return split, split, "tail"
    position = boundary_near(corpus.ids(), corpus.vocab.index(BOUNDARY), split)
    if position is None:
        return split, split, "tail"
    return position + 1, position, "whole documents"


def validation_report(corpus: PreparedCorpus, val_start: int, kind: str) -> str:
    """One line: what validation holds (the documents after `val_start`, or the tail)."""
    if kind != "whole documents":
        many = corpus.documents and corpus.documents.get("count", 0) < MIN_VAL_DOCUMENTS
        why = f" (fewer than {MIN_VAL_DOCUMENTS} documents)" if many else ""
        return f"validation: the last {corpus.num_chars - val_start:,} characters{why}"
    ids = corpus.ids()
    boundary_id = corpus.vocab.index(BOUNDARY)
    held = sum(int(np.count_nonzero(ids[start:start + (1 << 24)] == boundary_id))
               for start in range(val_start + 1, corpus.num_chars, 1 << 24))
    return f"validation: {held:,} whole documents, {corpus.num_chars - val_start - 1:,} characters"


def prepare_corpus(corpus: Sequence[str | os.PathLike] | None, glob: str | None = None, encoding: str = "utf-8",
                   lines: bool = False, table=None) -> tuple[PreparedCorpus, str]:
    """(prepared corpus, display name) for `textgen train`/`prepare`'s arguments: one file or named
    corpus is one stream (as always); several paths, a folder or a `glob` are documents; a
    `tables.Table` (--jsonl/--csv) is one document per record."""
    from textgen import catalog
    from textgen.corpus import prepare
    from textgen.errors import ConfigError

    corpus = [os.fspath(c) for c in corpus or []]
    if table is not None:
        from textgen.tables import prepare_table

        if corpus or glob is not None or lines:
            given = "a corpus path" if corpus else "--glob" if glob is not None else "--lines"
            raise ConfigError(f"{table.option} FILE is the corpus: it does not combine with {given}. "
                              f"Received: {', '.join(corpus) or glob or '--lines'}")
        return prepare_table(table, encoding=encoding), str(table.path)
    if len(corpus) > 1 or glob is not None or (corpus and Path(corpus[0]).is_dir()):
        if lines:
            raise ConfigError("--lines reads one file (each line a document); with several files or a folder "
                              f"each file is a document already. Received: {', '.join(corpus)} with --lines")
        prepared = prepare_documents(corpus, glob=glob, encoding=encoding)
        return prepared, prepared.source
    path, name = catalog.resolve(corpus[0] if corpus else None)
    return prepare(path, encoding=encoding, lines=lines), name


def reports(corpus: PreparedCorpus, skipped_only: bool = False) -> list[str]:
    """The lines `train` and `prepare` print on stderr about documents: what was read, what skipped."""
    if not corpus.documents:
        return []
    skipped = skipped_report(corpus.documents)
    return ([] if skipped_only else [f"read {read_report(corpus)}"]) + ([skipped] if skipped else [])


def recorded_corpus(root, run: str | None) -> tuple[list[str], str | None, object, bool]:
    """(paths, glob, table, lines) that run `run` under `root` was trained on, from its run.json,
    for `textgen train --resume` given no corpus: its files and glob, its table, or its file."""
    from textgen import checkpoints
    from textgen.tables import Table

    recorded = checkpoints.read_run_file(checkpoints.find_run(Path(root), run)).get("corpus") or {}
    documents = recorded.get("documents") or {}
    if documents.get("format"):
        return [], None, Table(Path(documents["paths"][0]), documents["format"], documents["text_field"],
                               documents.get("label_field")), False
    if documents:
        return list(documents.get("given", [])), documents.get("glob"), None, False
    source = recorded.get("source")
    name = source if source and Path(source).is_file() else recorded.get("name")
    return ([name] if name else []), None, None, bool(recorded.get("lines"))
