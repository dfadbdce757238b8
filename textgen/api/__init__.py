"""textgen's Python API: `train`, `load`, `runs`, `Run` and `Model` (re-exported by `import textgen`).

The third front-end beside the CLI and the server, over the same library calls: training opens a
run as ``textgen train`` does, a `Model` samples through the same session as ``textgen sample``.
Nothing here imports TensorFlow until a model is trained (or exported to a TensorFlow format).
"""

from __future__ import annotations

import os
from pathlib import Path

from textgen.api.loaded_model import Model
from textgen.api.trained_run import Run
from textgen.api.training import train

__all__ = ["Model", "Run", "checkpoints_dir", "load", "runs", "train"]


def checkpoints_dir(checkpoints=None) -> Path:
    """The folder of runs: `checkpoints`, else $TEXTGEN_CHECKPOINTS, else ./checkpoints (as the CLI's --checkpoints)."""
    if checkpoints is not None:
        return Path(checkpoints)
    return Path(os.environ.get("TEXTGEN_CHECKPOINTS") or "checkpoints")


def load(run: str | None = None, *, checkpoints=None, checkpoint="latest", use_previous: bool = False) -> Model:
    """Load run `run` (default: the most recently updated) for sampling, without TensorFlow.

    `checkpoint` is "latest", "best", or a step number; `use_previous` falls back to the previous
    good checkpoint when the newest is damaged (``--use-previous``).

    Example:
        >>> model = textgen.load("shakespeare", checkpoint="best")
        >>> model.sample("ROMEO:", length=100, temperature=0.7, seed=1)
    """
    return Run.open(run, checkpoints).model(checkpoint, use_previous=use_previous)


def runs(checkpoints=None) -> list[Run]:
    """The runs in `checkpoints` (default as `checkpoints_dir`), most recently updated first.

    Example:
        >>> [(r.name, r.best) for r in textgen.runs()]
    """
    from textgen import checkpoints as store
    from textgen.summary import list_summaries

    root = checkpoints_dir(checkpoints)
    known = {p.name: p for p in store.list_runs(root)}
    return [Run(known[row["name"]]) for row in list_summaries(root) if row["name"] in known]
