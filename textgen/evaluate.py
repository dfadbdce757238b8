"""Cross-entropy of a text under a trained run, in nats and bits per character."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from textgen import checkpoints
from textgen.corpus import Vocabulary, iter_text
from textgen.errors import CorpusError


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


def evaluate_file(run_dir: Path, text_path: Path, encoding: str = "utf-8", which: str = "latest",
                  streams: int = 32, use_previous: bool = False) -> dict:
    """Mean -log p(next char | all preceding) over the text, from the run's checkpoint."""
    info = checkpoints.read_run_file(run_dir)
    ids = encode_file(text_path, Vocabulary(info["vocab"]), encoding)
    from textgen.model import ModelConfig  # imports Keras: only when evaluating
    from textgen.train import build_scorer, score_ids

    if which == "best":
        ckpt = checkpoints.best(run_dir) or checkpoints.latest(run_dir, use_previous)
    else:
        ckpt = checkpoints.latest(run_dir, use_previous=use_previous)
    arrays = checkpoints.load_arrays(ckpt.path)
    scorer = build_scorer(ModelConfig(**info["model"]), streams=max(1, min(streams, len(ids) // 2048 + 1)))
    for v in scorer.trainable_variables:
        v.assign(arrays[v.path])
    start = time.time()
    total, count = score_ids(scorer, ids)
    nats = total / count
    return {"run": run_dir.name, "checkpoint": ckpt.path.name, "step": ckpt.step,
            "file": str(text_path), "characters": int(len(ids)), "scored": count,
            "nats_per_char": nats, "bits_per_char": nats / math.log(2),
            "seconds": round(time.time() - start, 2)}
