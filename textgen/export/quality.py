"""Bits per character of a run's validation text under given arrays (the numpy engine),
scored like `textgen evaluate`.

Used to tell what a lower precision costs: the same text is scored with the float32 arrays
and with the dequantised ones, and the difference is reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textgen.export.model_arrays import ModelArrays, reference_engine

MAX_CHARS = 1_000_000  # score at most this many validation characters (the split's start)
STREAMS = 64           # the text is cut into this many segments, scored side by side


def validation_ids(info: dict) -> tuple[np.ndarray | None, str | None]:
    """(the run's validation split as ids, None), or (None, why it is unavailable) in one line."""
    from textgen import corpus as corpus_lib
    from textgen.errors import TextgenError

    recorded = info.get("corpus") or {}
    source = recorded.get("source")
    if not source:
        return None, "the run does not record its corpus, so the bpc change was not measured"
    if recorded.get("documents"):  # several files or a table: not one file to read again here
        return None, "the run was trained on documents, so the bpc change was not measured"
    if not Path(source).is_file():
        return None, f"the run's corpus {source!r} is gone, so the bpc change was not measured"
    try:
        prepared = corpus_lib.prepare(Path(source), encoding=recorded.get("encoding", "utf-8"))
    except TextgenError as e:
        return None, f"the run's corpus could not be read ({e}), so the bpc change was not measured"
    if prepared.vocab != info["vocab"]:
        return None, f"the corpus {source!r} no longer encodes to the run's vocabulary; bpc change not measured"
    val_fraction = float(info.get("training", {}).get("val_fraction", corpus_lib.DEFAULT_VAL_FRACTION))
    split = corpus_lib.split_point(prepared.num_chars, val_fraction)
    ids = np.asarray(prepared.ids()[split: split + MAX_CHARS], dtype=np.intp)
    if len(ids) < 2:
        return None, "the run's validation split is empty, so the bpc change was not measured"
    return ids, None


def bits_per_char(arrays: ModelArrays, ids: np.ndarray, streams: int = STREAMS) -> float:
    """Bits per character of `ids` under `arrays`, scored as `textgen evaluate` and training's
    validation score (windows with burn-in, `evaluate.score_windows`), so the figure compares
    with the run's `val_bpc`."""
    from textgen.scoring import LN2, score_with_engine

    total, count = score_with_engine(reference_engine(arrays), ids, streams)
    return total / max(count, 1) / LN2
