"""Cross-entropy of a text under a trained model, in nats and bits per character.

Scoring cuts the text into windows run as parallel streams from a zero state, each with
characters of burn-in that are read but not scored (see `score_ids`). Training's validation
and `textgen evaluate` score the same way. Keras is imported only when a model is built.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from textgen import checkpoints
from textgen.corpus import Vocabulary, iter_text
from textgen.errors import CheckpointError, CorpusError
from textgen.training.batches import scoring_windows

LN2 = math.log(2.0)


def score_windows(ids: np.ndarray, streams: int, run, window: int = 2048, burn_in: int = 256) -> tuple[float, int]:
    """Sum of -log p(next char) over `ids[1:]` given the preceding text, and the count.

    The text is cut into windows of `window` scored characters, each preceded by `burn_in`
    characters of context that are read but not scored (`batches.scoring_windows`); the
    windows run as parallel streams, `streams` at a time, from a zero state. Training resets
    each stream's state every `state_reset` segments, so a state age of `burn_in + window`
    characters is what the model is used to.

    `run(inputs)` takes the (streams, width) ids of one group and yields (t0, logits) for
    consecutive chunks of its columns from a zero state: the Keras scorer and the numpy
    engine score the same windows the same way.
    """
    from textgen.generation.draw import log_softmax

    n = len(ids) - 1
    if n < 1:
        return 0.0, 0
    windows = scoring_windows(n, window, burn_in)
    total, count = 0.0, 0
    for group_start in range(0, len(windows), streams):
        group = windows[group_start: group_start + streams]
        width = max(stop - start for start, stop, _ in group)
        inputs = np.zeros((streams, width), dtype=np.int32)
        targets = np.zeros((streams, width), dtype=np.int32)
        mask = np.zeros((streams, width), dtype=bool)
        for s, (start, stop, owned) in enumerate(group):
            length = stop - start
            inputs[s, :length] = ids[start:stop]
            targets[s, :length] = ids[start + 1: stop + 1]
            mask[s, owned - start: length] = True
        for t0, logits in run(inputs):
            t1 = t0 + logits.shape[1]
            picked = np.take_along_axis(log_softmax(logits), targets[:, t0:t1, None], axis=-1)[..., 0]
            total -= float(picked[mask[:, t0:t1]].sum())
        count += int(mask.sum())
    return total, count


def score_ids(model, ids: np.ndarray, window: int = 2048, burn_in: int = 256,
              chunk_len: int = 256) -> tuple[float, int]:
    """`score_windows` with a Keras scorer (`build_scorer`), `chunk_len` columns per call."""
    from textgen.training.model import reset_states

    def run(inputs):
        reset_states(model)
        for t0 in range(0, inputs.shape[1], chunk_len):
            yield t0, np.asarray(model.predict_on_batch(inputs[:, t0:t0 + chunk_len]))

    return score_windows(ids, model.inputs[0].shape[0], run, window, burn_in)


def score_with_engine(engine, ids: np.ndarray, streams: int = 64, window: int = 2048,
                      burn_in: int = 256) -> tuple[float, int]:
    """`score_windows` with textgen's sampling engine (no Keras), one column per step."""

    def run(inputs):
        state = engine.initial_state(len(inputs))
        for t in range(inputs.shape[1]):
            yield t, engine.step(inputs[:, t].astype(np.intp), state)[:, None, :]

    return score_windows(ids, streams, run, window, burn_in)


def build_scorer(model_config, streams: int = 32):
    """A model for evaluation: any sequence length, `streams` parallel streams."""
    from textgen.training.model import build_model

    return build_model(model_config, batch_size=streams, seq_len=None)


def encode_file(path: Path, vocab: Vocabulary, encoding: str = "utf-8") -> np.ndarray:
    """Encode a text file with a run's vocabulary; unknown characters are an error listing them."""
    from textgen.corpus import _check_source

    path = Path(path)
    _check_source(path)
    parts = []
    for text in iter_text(path, encoding):
        try:
            parts.append(vocab.encode(text))
        except CorpusError as e:
            raise CorpusError(f"{str(path)!r}: {e}") from None
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    if len(ids) < 2:
        raise CorpusError(f"Text to evaluate needs at least 2 characters. Received: {len(ids)} in {str(path)!r}")
    return ids


def checkpoint_for(run_dir: Path, which: str = "latest", use_previous: bool = False) -> checkpoints.Checkpoint:
    """The run's latest verified checkpoint, or its best one (an error before any evaluation)."""
    if which == "best":
        ckpt = checkpoints.best(run_dir)
        if ckpt is None:
            raise CheckpointError(f"Run {Path(run_dir).name!r} has no best checkpoint yet (no evaluation ran).")
        return ckpt
    return checkpoints.latest(run_dir, use_previous=use_previous)


def evaluate_file(run_dir: Path, text_path: Path, encoding: str = "utf-8", which: str = "latest",
                  streams: int = 32, use_previous: bool = False, adapt: float | None = None) -> dict:
    """Mean -log p(next char) over the text from `which` checkpoint, scored as `score_ids` does;
    `adapt`: also the dynamic evaluation's figure with this SGD rate (textgen/adapt.py), as "adapted"."""
    from textgen.config import ModelConfig
    from textgen.training.variables import assign_trainable_arrays

    run_dir = Path(run_dir)
    info = checkpoints.read_run_file(run_dir)
    ids = encode_file(text_path, Vocabulary(info["vocab"]), encoding)
    ckpt = checkpoint_for(run_dir, which, use_previous)
    arrays = checkpoints.load_arrays(ckpt.path)
    scorer = build_scorer(ModelConfig(**info["model"]), streams=max(1, min(streams, len(ids) // 2048 + 1)))
    try:
        assign_trainable_arrays(scorer, arrays)
    except CheckpointError as e:
        raise CheckpointError(f"{ckpt.path.name} of run {run_dir.name!r}: {e}") from None
    start = time.time()
    total, count = score_ids(scorer, ids)
    nats = total / count
    result = {"run": run_dir.name, "checkpoint": ckpt.path.name, "step": ckpt.step,
              "file": str(text_path), "characters": int(len(ids)), "scored": count,
              "nats_per_char": nats, "bits_per_char": nats / LN2,
              "seconds": round(time.time() - start, 2)}
    if adapt is not None:
        from textgen.adapt import adapted_score

        result["adapted"] = adapted_score(ModelConfig(**info["model"]), arrays, ids, adapt)
    return result
