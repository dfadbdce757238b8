"""`textgen.train`: `textgen train` as a function, with the same options, defaults and stopping.

The options are read by `textgen.options.run_options` and the run is opened by
`textgen.training.opening.open_run`, as the CLI does; only where the text comes from and how
progress is shown are this module's own.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path

from textgen.errors import ConfigError, CorpusError

TEXT_DIR = "texts"  # under the corpus cache: the str corpora `train` was given, by content


def resolve_corpus(corpus) -> tuple[Path, str]:
    """(text file, display name) for what `train` was given as its corpus.

    A `Path` (or os.PathLike) is a file. A `str` is, in this order: a file or folder that
    exists, a named corpus of the catalog, and otherwise the text itself when it holds a line
    break (written once, by its SHA-256, under ``<cache>/texts/``, so the run names a file that
    reproduces it); a one-line str that names nothing is an error. None is the default corpus.
    """
    from textgen import catalog
    from textgen.corpus import cache_root

    if corpus is None or isinstance(corpus, os.PathLike):
        return catalog.resolve(None if corpus is None else os.fspath(corpus))
    if not isinstance(corpus, str):
        raise ConfigError(f"corpus must be a path, a named corpus or a str of text. "
                          f"Received: corpus={type(corpus).__name__}")
    if not corpus.strip():
        raise CorpusError("Corpus text is empty. Received: corpus=" + repr(corpus[:20]))
    if "\n" not in corpus:
        return catalog.resolve(corpus)  # a file, a name, or the CLI's one-line error naming the choices
    data = corpus.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    path = cache_root() / TEXT_DIR / f"text-{digest[:16]}.txt"
    if not path.exists():
        from textgen.files import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return path, f"text-{digest[:16]}"


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython's ZMQ shell)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except AttributeError:
        return False


class NotebookProgress:
    """Training progress as one line of HTML a notebook updates in place (the trainer calls these hooks)."""

    def __init__(self):
        self.handle = None
        self.val = ""
        self.total = 0

    def _show(self, text: str) -> None:
        import html

        from IPython.display import HTML, display

        body = HTML(f'<pre style="margin:0">{html.escape(text)}</pre>')
        if self.handle is None:
            self.handle = display(body, display_id=True)
        else:
            self.handle.update(body)

    def on_probe(self, model_options, config):
        self._show(f"measuring how fast a {model_options['num_layers']}x{model_options['units']} model trains here…")

    def on_train_begin(self, info):
        self.total = info["total_steps"]
        self._show(f"{info['parameters']:,} parameters · starting at step {info['step']:,}")

    def on_step(self, step, logs):
        if step % 10 == 0 or step == self.total:
            self._show(f"step {step:,} · epoch {logs['epoch']:.2f} · loss {logs['loss']:.3f}{self.val} · "
                       f"{logs['elapsed']:.0f}s")

    def on_eval(self, record):
        self.val = f" · val {record['val_loss']:.3f} ({record['val_bpc']:.2f} bpc)"

    def on_sample(self, text):
        pass

    def on_checkpoint(self, path):
        pass

    def on_train_end(self, summary):
        reason = summary.get("stop_reason") or summary.get("stopped")
        self._show(f"{summary['run']}: step {summary['step']:,}{self.val} · stopped: {reason}")


def _progress(progress):
    """The trainer's hooks: nothing (False), a notebook line in Jupyter, else the CLI's Rich display."""
    from textgen.training.loop import TrainingCallbacks

    if progress is False:
        return TrainingCallbacks()
    if progress is None and in_notebook():
        return NotebookProgress()
    if progress is None and not sys.stderr.isatty():
        return TrainingCallbacks()
    from textgen.cli.train import RichProgress

    return RichProgress(enabled=True)


def train(corpus=None, *, run: str | None = None, checkpoints=None, time_limit: float | None = None,
          progress: bool | None = None, resume: bool = False, use_previous: bool = False,
          encoding: str = "utf-8", lines: bool = False, glob: str | None = None, jsonl=None,
          text_field: str | None = None, label_field: str | None = None, csv=None, text_column: str | None = None,
          label_column: str | None = None, **options):
    """Train a character-level LSTM on `corpus` and return its `Run`, as ``textgen train`` does.

    `corpus`: a path, a named corpus ("shakespeare", the default) or a str of text (see
    `resolve_corpus`). `options` are ``textgen train``'s options by their Python names (size,
    layers, units, embedding_dim, dropout, weight_drop, locked_dropout, average, epochs, seed, ...); what is
    not given textgen chooses and records in the run (`Run.chosen`). `progress`: True shows it
    (Rich on stderr; a line in a notebook), False shows nothing, None (default) shows it in a
    terminal or a notebook only. `lines=True` is ``--lines`` (each non-empty line a document).
    A list of paths, a folder, or `glob` (e.g. ``"*.py"``, for the files found in folders) trains
    on documents, one per file, as ``textgen train a.txt some/dir --glob '*.py'``.
    `jsonl` + `text_field` (or `csv` + `text_column`), with an optional `label_field` /
    `label_column`: one document per record, as ``textgen train --jsonl FILE --text-field F``.
    Ctrl-C (interrupting the kernel) stops at the next step with a checkpoint, like Ctrl-C in
    the CLI; `Run.resume` continues.

    Example:
        >>> run = textgen.train("shakespeare", time_limit=60, run="bard")
        >>> run.model().sample("ROMEO:", length=100, seed=1)
    """
    from textgen import corpus as corpus_lib
    from textgen.api import checkpoints_dir
    from textgen.api.trained_run import Run
    from textgen.documents import prepare_corpus
    from textgen.options import run_options
    from textgen.tables import table_option

    for flag, value in (("lines", lines), ("resume", resume), ("use_previous", use_previous)):
        if not isinstance(value, bool):
            raise ConfigError(f"{flag} must be True or False. Received: {flag}={value!r}")
    model_options, train_options = run_options(time_limit=time_limit, **options)
    table = table_option(jsonl, csv, text_field, text_column, label_field, label_column)
    folder = isinstance(corpus, os.PathLike) or (isinstance(corpus, str) and "\n" not in corpus)
    if table is not None or isinstance(corpus, (list, tuple)) or glob is not None or (
            folder and Path(corpus).is_dir()):
        paths = list(corpus) if isinstance(corpus, (list, tuple)) else [] if corpus is None else [corpus]
        if not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise ConfigError(f"corpus must be a list of paths to train on documents. Received: {corpus!r}")
        prepared, name = prepare_corpus(paths, glob=glob, encoding=encoding, lines=lines, table=table)
    else:
        path, name = resolve_corpus(corpus)
        prepared = corpus_lib.prepare(path, encoding=encoding, lines=lines)
    from textgen.training.opening import open_run

    trainer = open_run(prepared, name, checkpoints_dir(checkpoints), run, model_options=model_options,
                       train_options=train_options, resume=resume, callbacks=_progress(progress),
                       use_previous=use_previous)
    for warning in trainer.warnings:
        warnings.warn(warning, stacklevel=2)
    summary = trainer.run()
    return Run(summary["run_dir"], summary)

