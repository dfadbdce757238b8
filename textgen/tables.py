"""A JSONL or CSV file as a corpus of documents, one per record, optionally labelled.

`textgen train --jsonl reviews.jsonl --text-field text --label-field stars` (or `--csv FILE
--text-column C --label-column L`): each record's text is a document between the boundaries of
`textgen.documents`. With a label, the document starts with the label and LABEL_END:

    BOUNDARY label LABEL_END text BOUNDARY label LABEL_END text BOUNDARY ...

so the model learns to write a text that fits the label it has just read, and `textgen sample
--label X` feeds BOUNDARY, X and LABEL_END before the prime (`label_lead`): the sample is a new
document of label X, and the label itself is not printed. LABEL_END is U+001F UNIT SEPARATOR,
like BOUNDARY a control character that text does not hold. A record whose text or label holds
either (or NUL) is skipped and counted; a missing field is one error naming the record.

The file is read a record at a time (csv and json from the standard library), so memory stays
flat; records are joined into chunks of about `chunk_bytes` characters for `corpus.encode`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from textgen.corpus import CHUNK_BYTES, PreparedCorpus, _check_encoding, cache_entry, cached, encode
from textgen.documents import BOUNDARY
from textgen.errors import ConfigError, CorpusError

LABEL_END = "\x1f"  # U+001F UNIT SEPARATOR, after a record's label
LISTED_LABELS = 1000  # run.json keeps the counts of at most this many labels
SHOWN_LABELS = 20  # an unknown label's error lists at most this many known ones
CONTROL = (BOUNDARY, LABEL_END, "\x00")
MAX_FIELD = 1 << 30  # characters in one CSV field (the csv module's default is 131,072)


@dataclass(frozen=True)
class Table:
    """Where the records are: `path` in `format` ("jsonl" or "csv"), the text in field `text`,
    the label (if any) in field `label`."""

    path: Path
    format: str
    text: str
    label: str | None = None

    @property
    def option(self) -> str:
        return "--jsonl" if self.format == "jsonl" else "--csv"


def table_option(jsonl=None, csv_file=None, text_field=None, text_column=None, label_field=None,
                 label_column=None) -> Table | None:
    """The `Table` that `textgen train`'s table options describe (None: none given); options that
    do not go together are one ConfigError."""
    if jsonl is not None and csv_file is not None:
        raise ConfigError("Give --jsonl or --csv, not both. Received: "
                          f"jsonl={str(jsonl)!r}, csv={str(csv_file)!r}")
    for name, value, needs in (("--text-field", text_field, jsonl), ("--label-field", label_field, jsonl),
                               ("--text-column", text_column, csv_file), ("--label-column", label_column, csv_file)):
        if value is not None and needs is None:
            raise ConfigError(f"{name} names a field of {'--jsonl' if 'field' in name else '--csv'} FILE; give "
                              f"that file too. Received: {name}={value!r}")
    if jsonl is None and csv_file is None:
        return None
    text = text_field if jsonl is not None else text_column
    if not text:
        name = "--text-field" if jsonl is not None else "--text-column"
        raise ConfigError(f"{'--jsonl' if jsonl is not None else '--csv'} needs {name}: the field that holds "
                          f"each record's text. Received: {name}={text!r}")
    path = Path(jsonl if jsonl is not None else csv_file)
    return Table(path, "jsonl" if jsonl is not None else "csv", text,
                 label_field if jsonl is not None else label_column)


def _records(table: Table, encoding: str) -> Iterator[tuple[int, dict]]:
    """(record number from 1, record) for each record of the file, read one at a time."""
    with open(table.path, encoding=encoding, newline="" if table.format == "csv" else None) as f:
        if table.format == "csv":
            csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))  # a long text is one field
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for name in (table.text, table.label):
                if name is not None and name not in header:
                    raise CorpusError(f"{str(table.path)!r} has no column {name!r}. Received: columns "
                                      f"{', '.join(map(repr, header[:20]))}")
            yield from enumerate(reader, 1)
            return
        number = 0
        for line in f:
            if not line.strip():
                continue
            number += 1
            try:
                record = json.loads(line)
            except ValueError as error:
                raise CorpusError(f"Record {number} of {str(table.path)!r} is not valid JSON: {error}. "
                                  f"Received: {line[:60]!r}") from None
            if not isinstance(record, dict):
                raise CorpusError(f"Record {number} of {str(table.path)!r} is not a JSON object. "
                                  f"Received: {line[:60]!r}")
            yield number, record


def _field(table: Table, number: int, record: dict, name: str) -> str:
    value = record.get(name)
    if value is None:
        kind = "column" if table.format == "csv" else "field"
        raise CorpusError(f"Record {number} of {str(table.path)!r} has no {kind} {name!r} (or it is empty). "
                          f"Received: {kind}s {', '.join(map(repr, list(record)[:10]))}")
    if isinstance(value, (dict, list)):
        raise CorpusError(f"Record {number} of {str(table.path)!r}: field {name!r} must be text. "
                          f"Received: {json.dumps(value)[:60]}")
    return str(value).replace("\r\n", "\n")


def table_texts(table: Table, encoding: str, chunk_bytes: int, record: dict) -> Iterator[str]:
    """BOUNDARY, then each record's [label LABEL_END] text and BOUNDARY, in chunks; `record` gets
    what was read (documents, labels and their counts, records skipped)."""
    pending, size = [BOUNDARY], 1
    count, skipped, labels = 0, {}, {}
    try:
        for number, row in _records(table, encoding):
            text = _field(table, number, row, table.text)
            label = _field(table, number, row, table.label) if table.label is not None else None
            why = ("control characters" if any(c in text or c in (label or "") for c in CONTROL)
                   else "empty" if not text else "empty label" if label == "" else None)
            if why:
                skipped[why] = skipped.get(why, 0) + 1
                continue
            if label is not None:
                labels[label] = labels.get(label, 0) + 1
                text = label + LABEL_END + text
            pending += [text, BOUNDARY]
            size += len(text) + 1
            count += 1
            if size >= chunk_bytes:
                yield "".join(pending)
                pending, size = [], 0
    except UnicodeDecodeError as error:
        raise CorpusError(f"Cannot decode {str(table.path)!r} as {encoding} ({error.reason}): pass its "
                          "encoding with --encoding.") from None
    except csv.Error as error:
        raise CorpusError(f"{str(table.path)!r} is not valid CSV: {error}") from None
    if size:
        yield "".join(pending)
    kept = dict(sorted(labels.items(), key=lambda item: (-item[1], item[0]))[:LISTED_LABELS])
    record.update(count=count, bytes=table.path.stat().st_size, paths=[str(table.path.resolve())], more_paths=0,
                  skipped=skipped, skipped_named=[],
                  **({"labels": kept, "more_labels": len(labels) - len(kept)} if table.label is not None else {}))


def prepare_table(table: Table, encoding: str = "utf-8", cache_dir: Path | None = None, force: bool = False,
                  chunk_bytes: int = CHUNK_BYTES) -> PreparedCorpus:
    """Encode the records of `table` as documents into the cache (keyed on the file's path, size
    and modification time, the format, the fields and the encoding), or re-use it."""
    path = table.path
    if not path.is_file():
        raise CorpusError(f"{table.option} file not found. Received: {str(path)!r}")
    encoding = _check_encoding(encoding)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{table.format}|{table.text}|{table.label}|{encoding}|v1"
    directory = cache_entry(cache_dir, f"{path.stem[:40]}-{table.format}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
    found = cached(directory, force)
    if found is not None:
        return found
    hasher = hashlib.sha256()
    record = {"format": table.format, "text_field": table.text,
              **({"label_field": table.label} if table.label is not None else {})}

    def texts():
        for text in table_texts(table, encoding, chunk_bytes, record):
            hasher.update(text.encode("utf-8", "surrogatepass"))
            yield text

    meta = {"source": str(path.resolve()), "encoding": encoding, "documents": record}
    return encode(directory, texts(), hasher.hexdigest, meta, least=1,
                  empty=lambda: f"No records with text in {str(path)!r}: "
                                f"{', '.join(f'{n} {why}' for why, n in sorted(record['skipped'].items())) or 'none'}"
                                ". Received: 0 documents")


def label_lead(info: dict, chars: Sequence[str], label: str | None, option: str = "--label",
               received: str = "label") -> list[int]:
    """The ids `textgen sample --label X` feeds before the prime: BOUNDARY, X, LABEL_END ([] for
    no label). A run without labels, or a label it does not know, is one ConfigError naming
    `option` (the server's field is `label`) and the value as `received` (`samples[0].label`)."""
    if label is None:
        return []
    documents = (info.get("corpus") or {}).get("documents")
    known = documents.get("labels") if isinstance(documents, dict) else None
    if known is not None and not (isinstance(known, dict) and all(isinstance(k, str) for k in known)):
        raise ConfigError(f"Run {info.get('name')!r} is damaged: its run.json's corpus.documents.labels must map "
                          f"each label to its count. Received: {received}={label!r}")
    if known is None:
        raise ConfigError(f"{option} needs a run trained with --label-field or --label-column; run "
                          f"{info.get('name')!r} has no labels. Received: {received}={label!r}")
    if label not in known:
        shown = ", ".join(map(repr, list(known)[:SHOWN_LABELS]))
        more = f" and {len(known) - SHOWN_LABELS} more" if len(known) > SHOWN_LABELS else ""
        raise ConfigError(f"Unknown label: run {info.get('name')!r} knows {shown}{more}. Received: {received}={label!r}")
    index = {c: i for i, c in enumerate(chars)}
    lead = BOUNDARY + label + LABEL_END
    unseen = [c for c in lead if c not in index]
    if unseen:  # a run.json listing a label its vocabulary cannot write
        raise ConfigError(f"Run {info.get('name')!r} is damaged: label {label!r} holds {unseen[0]!r}, which is not in "
                          f"its vocabulary. Received: {received}={label!r}")
    return [index[c] for c in lead]


def describe(table: Table) -> str:
    """The corpus name a table run records: its file."""
    return os.fspath(table.path)
