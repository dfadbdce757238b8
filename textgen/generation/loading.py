"""Opening a run for sampling: its run file, a checkpoint and an engine, without Keras."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textgen import checkpoints
from textgen.errors import CheckpointError
from textgen.generation.engine import LSTMEngine


def load_run(directory, which: str = "latest", use_previous: bool = False, threads: int = 2):
    """(run info, checkpoint, engine) for sampling from a run directory, without Keras.

    `which` is "latest", "best", or the name of a checkpoint directory inside the run.
    """
    directory = Path(directory)
    info = checkpoints.read_run_file(directory)
    if which == "latest":
        ckpt = checkpoints.latest(directory, use_previous=use_previous)
    elif which == "best":
        ckpt = checkpoints.best(directory)
        if ckpt is None:
            raise CheckpointError(f"Run {directory.name!r} has no best checkpoint yet (no evaluation ran).")
    else:
        path = directory / which
        if checkpoints.check_run_name(which) and not path.is_dir():
            raise CheckpointError(f"Run {directory.name!r} has no checkpoint {which!r}.")
        checkpoints.verify(path)
        ckpt = checkpoints.Checkpoint(path, checkpoints.load_state(path))
    engine = LSTMEngine(checkpoints.load_arrays(ckpt.path), int(info["model"]["num_layers"]), threads=threads)
    if engine.vocab_size != len(info["vocab"]):
        raise CheckpointError(
            f"Checkpoint {str(ckpt.path)!r} has {engine.vocab_size} outputs but the run's vocabulary "
            f"has {len(info['vocab'])} characters."
        )
    return info, ckpt, engine


def start_id(chars: Sequence[str]) -> int:
    """The id fed when there is no prime: the corpus' newline if it has one, else 0."""
    return list(chars).index("\n") if "\n" in chars else 0
