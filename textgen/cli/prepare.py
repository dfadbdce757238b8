"""`textgen prepare`: encode a corpus into the cache and show its statistics."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from textgen.cli import common
from textgen.cli.common import JsonOption, emit_json, err, out


def prepare(
    corpus: Annotated[Optional[list[str]], typer.Argument(help="A text file, or a named corpus (default: shakespeare); or several files and folders, each file a document.", show_default=False)] = None,
    glob: common.GlobOption = None,
    jsonl: common.JsonlOption = None,
    text_field: common.TextFieldOption = None,
    label_field: common.LabelFieldOption = None,
    csv: common.CsvOption = None,
    text_column: common.TextColumnOption = None,
    label_column: common.LabelColumnOption = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    val_fraction: Annotated[float, typer.Option(help="Share of the corpus (its tail) kept for validation.")] = 0.1,
    as_json: JsonOption = False,
):
    """Encode a corpus into the cache and show its statistics, without training.

    Example: [bold]textgen prepare my_corpus.txt --val-fraction 0.05[/]

    Several files or folders: [bold]textgen prepare notes.txt poems/ --glob '*.txt'[/] (each file a document).
    """
    from textgen import corpus as corpus_lib
    from textgen import documents

    start = time.time()
    from textgen.tables import table_option

    table = table_option(jsonl, csv, text_field, text_column, label_field, label_column)
    prepared, name = documents.prepare_corpus(corpus, glob=glob, encoding=encoding, table=table)
    for line in documents.reports(prepared, skipped_only=as_json):
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    train_end, val_start, validation = documents.corpus_split(prepared, val_fraction)
    stats = corpus_lib.split_stats(prepared, val_fraction, split=train_end)
    stats = {"corpus": name, **stats, "seconds": round(time.time() - start, 2)}
    if prepared.documents:  # validation from the boundary (an input, not a target) to the end
        stats.update(documents=prepared.documents, validation=validation,
                     val_chars=prepared.num_chars - val_start - (validation != "tail"))
    if as_json:
        emit_json(stats)
        return
    table = Table(title=f"Corpus {name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("characters", f"{stats['characters']:,}")
    table.add_row("vocabulary", f"{stats['vocab_size']:,} distinct characters")
    table.add_row("train", f"{stats['train_chars']:,}")
    table.add_row("validation", f"{stats['val_chars']:,} (" + (
        "whole documents" if stats.get("validation") == "whole documents" else f"last {val_fraction:.0%}") + ")")
    unseen = stats["val_chars_unseen_in_train"]
    shown = "".join(stats["val_unseen_vocab"][:20])
    table.add_row("validation chars never seen in training", f"{unseen:,}" + (f"  {shown!r}" if unseen else ""))
    table.add_row("ids", f"{stats['ids_dtype']} memmap, {stats['cache']}")
    table.add_row("sha256", stats["sha256"][:16] + "…")
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the `prepare` command to `app`."""
    app.command("prepare")(prepare)
