"""Opening a run for sampling: its run file, a checkpoint and an engine, without Keras.

`load_run` is the one door the CLI, the server and the exporters use, so everything a crafted run
directory could do wrong is refused here, before an engine (and the compiled step, which trusts
its arrays) sees it: run.json's fields and types, the manifest and its files
(`checkpoints.verify`), and every weight's dtype and shape against run.json, read from the array
headers before their data. Any failure is a `CheckpointError` of one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textgen import checkpoints
from textgen.errors import CheckpointError
from textgen.generation.engine import LSTMEngine

# Trained weights stay within tens; past this bound a step could overflow float32 (inf, then NaN
# logits): such a checkpoint diverged or was made by hand.
MAX_WEIGHT = 1e6


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
    weights = checked_weights(ckpt.path, info["model"])
    try:
        engine = LSTMEngine(weights, info["model"]["num_layers"], threads=threads)
    except MemoryError:
        raise CheckpointError(f"Checkpoint {str(ckpt.path)!r} is too large to load in this memory.") from None
    if engine.vocab_size != len(info["vocab"]):
        raise CheckpointError(
            f"Checkpoint {str(ckpt.path)!r} has {engine.vocab_size} outputs but the run's vocabulary "
            f"has {len(info['vocab'])} characters."
        )
    return info, ckpt, engine


def weight_shapes(model: dict) -> dict:
    """{Keras variable path: shape} of the weights a sampler reads, from run.json's "model"."""
    vocab, embedding, units = model["vocab_size"], model["embedding_dim"], model["units"]
    shapes = {"embedding/embeddings": (vocab, embedding), "logits/kernel": (units, vocab), "logits/bias": (vocab,)}
    for i in range(model["num_layers"]):
        prefix = f"lstm_{i}/lstm/lstm_cell/"
        shapes[prefix + "kernel"] = (embedding if i == 0 else units, 4 * units)
        shapes[prefix + "recurrent_kernel"] = (units, 4 * units)
        shapes[prefix + "bias"] = (4 * units,)
    return shapes


def checked_weights(path: Path, model: dict) -> dict:
    """The weights of checkpoint `path` that sampling reads, each a float array of the shape run.json's
    `model` (already checked by `read_run_file`) gives it, within ±MAX_WEIGHT; a CheckpointError otherwise."""
    weights = checkpoints.load_arrays(path, expect=weight_shapes(model))
    for name, array in weights.items():
        if array.size and not float(np.abs(array).max()) <= MAX_WEIGHT:  # NaN compares False
            raise CheckpointError(f"Checkpoint {str(path)!r} is damaged: weight {name!r} holds values beyond "
                                  f"±{MAX_WEIGHT:g} (NaN, infinite or diverged). Received: {float(np.abs(array).max()):.3g}")
    return weights


def start_id(chars: Sequence[str]) -> int:
    """The id fed when there is no prime: the document boundary of a run trained on documents
    (so a sample begins like a new document), else the corpus' newline if it has one, else 0."""
    from textgen.documents import BOUNDARY

    chars = list(chars)
    for start in (BOUNDARY, "\n"):
        if start in chars:
            return chars.index(start)
    return 0
