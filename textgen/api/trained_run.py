"""`textgen.Run`: a run directory as Python sees it (what `textgen runs show` prints), read on demand."""

from __future__ import annotations

from pathlib import Path


class Run:
    """A training run: its directory under the checkpoints folder, what it was made of and how it scores.

    Every attribute reads the directory when asked, so a `Run` of a run that is still training
    shows its progress so far. Made by `textgen.train`, `textgen.runs()` or `Run.open`.

    Example:
        >>> run = textgen.runs()[0]
        >>> run.name, run.config["model"]["units"], run.history[-1]["val_bpc"]
        >>> run.model().sample("ROMEO:", seed=1)
    """

    def __init__(self, directory, summary: dict | None = None):
        self.directory = Path(directory)
        self.summary = summary  # what `textgen.train` returned, when this object made the run

    @classmethod
    def open(cls, run: str | None = None, checkpoints=None) -> Run:
        """The run named `run` in `checkpoints` (default: the most recently updated run).

        Example:
            >>> textgen.Run.open("shakespeare", checkpoints="checkpoints")
        """
        from textgen import checkpoints as store
        from textgen.api import checkpoints_dir

        return cls(store.find_run(checkpoints_dir(checkpoints), run))

    @property
    def name(self) -> str:
        """The run's name (its directory's name)."""
        return self.directory.name

    @property
    def info(self) -> dict:
        """The whole of run.json (read again at every access)."""
        from textgen import checkpoints

        return checkpoints.read_run_file(self.directory)

    @property
    def config(self) -> dict:
        """{"model": ..., "training": ...}: the resolved configs the run trains with."""
        info = self.info
        return {"model": info["model"], "training": info["training"]}

    @property
    def corpus(self) -> dict:
        """What it was trained on: name, source file, sha256, encoding, characters."""
        return dict(self.info.get("corpus") or {})

    @property
    def chosen(self) -> dict:
        """The defaults textgen chose for this run and why: {option: {"value", "reason"}}.

        Example:
            >>> for option, choice in run.chosen.items(): print(option, choice["value"], choice["reason"])
        """
        return dict(self.info.get("chosen") or {})

    @property
    def stopped(self) -> str | None:
        """Why the run stopped, in words (None while it has not stopped)."""
        info = self.info
        return info.get("stop_reason") or info.get("stopped")

    @property
    def checkpoints(self) -> list[str]:
        """The checkpoint directory names, oldest first (e.g. ``["ckpt-00000100", ...]``)."""
        from textgen import checkpoints

        return [p.name for p in checkpoints.list_checkpoints(self.directory)]

    @property
    def latest(self) -> int | None:
        """The step of the newest checkpoint (None before the first)."""
        from textgen import checkpoints

        found = checkpoints.list_checkpoints(self.directory)
        return checkpoints.load_state(found[-1])["step"] if found else None

    @property
    def best(self) -> int | None:
        """The step of the checkpoint with the lowest validation loss (None before an evaluation)."""
        from textgen import checkpoints

        found = checkpoints.best(self.directory)
        return found.step if found is not None else None

    def _state(self) -> dict:
        from textgen import checkpoints

        found = checkpoints.list_checkpoints(self.directory)
        return checkpoints.load_state(found[-1]) if found else {}

    @property
    def history(self) -> list[dict]:
        """One dict per evaluation (step, epoch, train_loss, val_loss, val_bpc, learning_rate, ...)."""
        return [dict(r) for r in self._state().get("history", [])]

    def history_frame(self):
        """`history` as a pandas DataFrame (needs pandas).

        Example:
            >>> run.history_frame().plot(x="step", y="val_bpc")
        """
        from textgen.errors import MissingExtraError

        try:
            import pandas
        except ImportError:
            raise MissingExtraError("Run.history_frame needs pandas: pip install pandas "
                                    "(Run.history is the same records as a list of dicts).") from None
        return pandas.DataFrame(self.history)

    def model(self, checkpoint="latest", use_previous: bool = False):
        """Load a checkpoint of this run for sampling: "latest", "best" or a step (see `textgen.load`).

        Example:
            >>> run.model("best").sample(length=100, seed=0)
        """
        from textgen.api.loaded_model import Model

        return Model(self.directory, checkpoint, use_previous=use_previous)

    def resume(self, corpus=None, *, progress=None, use_previous: bool = False, **options) -> Run:
        """Continue training exactly where the run stopped (`textgen train --resume`), on its own
        corpus file unless `corpus` is given; `options` may change what a resume may change
        (epochs, time_limit, learning_rate, patience, ...). Returns this run.

        Example:
            >>> run.resume(time_limit=60)
        """
        from textgen.api.training import train

        recorded = self.corpus
        documents = recorded.get("documents")
        if corpus is None and documents and documents.get("format"):  # its --jsonl/--csv file and fields
            names = ("jsonl", "text_field", "label_field") if documents["format"] == "jsonl" else \
                ("csv", "text_column", "label_column")
            for name, value in zip(names, (documents["paths"][0], documents["text_field"], documents.get("label_field"))):
                options.setdefault(name, value)
        elif corpus is None and documents:  # the files and folders it was given, and its glob
            corpus = documents.get("given")
            options.setdefault("glob", documents.get("glob"))
        elif corpus is None:  # the file it was trained on, else its catalog name
            source = Path(recorded.get("source") or "")
            corpus = source if recorded.get("source") and source.is_file() else recorded.get("name")
        options.setdefault("lines", bool(recorded.get("lines")))
        return train(corpus, run=self.name, checkpoints=self.directory.parent, resume=True, progress=progress,
                     use_previous=use_previous, **options)

    def card(self) -> dict:
        """What the notebook card shows: size, parameters, corpus, step, val bpc, the curve."""
        from textgen.api.cards import run_figures

        return run_figures(self.info, self._state())

    def _repr_html_(self) -> str:
        from textgen.api.cards import run_card

        return run_card(self.name, self.stopped, self.card())

    def __repr__(self) -> str:
        return f"<textgen.Run {self.name!r} in {str(self.directory.parent)!r}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and self.directory.resolve() == other.directory.resolve()

    def __hash__(self) -> int:
        return hash(self.directory.resolve())
