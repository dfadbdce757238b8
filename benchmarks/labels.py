"""Label conditioning, measured: a label prefix the model is primed with (what textgen does) against
a learned label input, at the same budget (issue 32).

    python benchmarks/labels.py [--seconds 60] [--seeds 0 1] [--status /var/lib/dpkg/status] [--json FILE]

The data: the one-line summaries of the Debian packages installed here, labelled by their section
(`/var/lib/dpkg/status`, as in docs/training.md's example), 10% of the records held out whole
(seeded). Three arms train the same Keras model — a 32-wide character embedding, one LSTM of 256
units, a dense layer to the vocabulary — from the same seed on the same batches of 32 records, each
for --seconds of wall-clock time, one after another:

- **prefix**: each record is read as U+001E, the label, U+001F, the summary (what `textgen train
  --label-field` writes); the model learns the label's characters too, as textgen's does.
- **input**: each record is U+001E and the summary; the label is a learned 16-wide embedding
  joined to every character's embedding (a label input).
- **none**: U+001E and the summary, no label (the floor: what the label is worth).

Scored on the held-out records: nats per summary character (and the record's end), given the
record's own label, and given a wrong one (another record's different section): the gap says how
much the model listens to the label. Only the summary's characters are scored in every arm, so the
figures compare. This is a model built here for the comparison, not `textgen train`: the arms must
differ in the conditioning alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

RS, US = "\x1e", "\x1f"
ARMS = ("prefix", "input", "none")
BATCH, UNITS, EMBED, LABEL_EMBED = 32, 256, 32, 16


def packages(status: Path) -> list[tuple[str, str]]:
    """(section, summary) of every package in a dpkg status file."""
    records = []
    for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" "))
        section, summary = fields.get("Section", "").split("/")[-1], fields.get("Description", "").strip()
        if section and summary and not set(summary) & {RS, US, "\0"}:
            records.append((section, summary))
    return records


def encode(records, arm: str, index: dict, labels: dict, length: int):
    """Inputs, targets, the weights of the positions trained on and of those scored, and label ids."""
    n = len(records)
    x, y = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
    train_w, score_w = np.zeros((n, length), np.float32), np.zeros((n, length), np.float32)
    label_ids = np.zeros((n, length), np.int32)
    for i, (label, summary) in enumerate(records):
        lead = RS + label + US if arm == "prefix" else RS
        text = lead + summary + RS
        ids = [index[c] for c in text][: length + 1]
        x[i, : len(ids) - 1], y[i, : len(ids) - 1] = ids[:-1], ids[1:]
        train_w[i, : len(ids) - 1] = 1.0
        score_w[i, len(lead) - 1: len(ids) - 1] = 1.0  # the positions that predict the summary and its end
        label_ids[i, :] = labels[label]
    return x, y, train_w, score_w, label_ids


def build(arm: str, vocab: int, labels: int, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    chars = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, EMBED)(chars)
    inputs = [chars]
    if arm == "input":
        label = keras.Input((None,), dtype="int32")
        h = keras.layers.Concatenate()([h, keras.layers.Embedding(labels, LABEL_EMBED)(label)])
        inputs.append(label)
    h = keras.layers.LSTM(UNITS, return_sequences=True)(h)
    model = keras.Model(inputs, keras.layers.Dense(vocab)(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def score(model, arm, data) -> float:
    """Nats per scored character."""
    x, y, _, w, label_ids = data
    logits = model.predict([x, label_ids] if arm == "input" else x, batch_size=256, verbose=0)
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, y[..., None], -1)[..., 0]
    return float(-(picked * w).sum() / w.sum())


def run_arm(arm, train, val, wrong, index, labels, length, seconds, seed) -> dict:
    model = build(arm, len(index) + 1, len(labels), seed)  # id 0 pads
    data = encode(train, arm, index, labels, length)
    rng = np.random.default_rng(seed)
    order, at = rng.permutation(len(train)), 0  # the same batches in every arm of a seed
    steps, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        if at + BATCH > len(train):
            order, at = rng.permutation(len(train)), 0
        rows, at = order[at: at + BATCH], at + BATCH
        x, y, w, _, label_ids = (array[rows] for array in data)
        model.train_on_batch([x, label_ids] if arm == "input" else x, y, sample_weight=w)
        steps += 1
    trained = time.perf_counter() - began
    right = score(model, arm, encode(val, arm, index, labels, length))
    wrong_nats = score(model, arm, encode(wrong, arm, index, labels, length))
    return {"arm": arm, "seed": seed, "steps": steps, "records_seen": steps * BATCH, "train_s": trained,
            "val_nats": right, "wrong_label_nats": wrong_nats, "label_gap": wrong_nats - right}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="Training seconds per arm.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="One run of every arm per seed.")
    ap.add_argument("--status", type=Path, default=Path("/var/lib/dpkg/status"))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    records = packages(a.status)
    random.Random(0).shuffle(records)
    held = max(1, len(records) // 10)
    val, train = records[:held], records[held:]
    sections = sorted({s for s, _ in records})
    labels = {s: i for i, s in enumerate(sections)}
    # a wrong label for each held-out record: the next record's section that differs from its own
    wrong = []
    for i, (section, summary) in enumerate(val):
        other = next((s for s, _ in val[i + 1:] + val[:i] if s != section), section)
        wrong.append((other, summary))
    index = {c: i + 1 for i, c in enumerate(sorted({c for s, t in records for c in s + t} | {RS, US}))}
    length = max(len(RS + s + US + t + RS) for s, t in records) - 1
    print(f"{len(records)} records ({len(train)} training, {len(val)} held out), {len(sections)} labels, "
          f"{len(index)} characters, longest record {length + 1}; {a.seconds:g} s per arm; model "
          f"Embedding({EMBED}) + LSTM({UNITS}), batch {BATCH}, Adam 3e-3")
    rows = [run_arm(arm, train, val, wrong, index, labels, length, a.seconds, seed) for seed in a.seeds for arm in ARMS]
    print(f"\n{'arm':<8} {'seed':>4} {'steps':>6} {'records':>8} {'val nats':>9} {'wrong label':>12} {'gap':>7}")
    for r in rows:
        print(f"{r['arm']:<8} {r['seed']:>4} {r['steps']:>6} {r['records_seen']:>8} {r['val_nats']:>9.4f} "
              f"{r['wrong_label_nats']:>12.4f} {r['label_gap']:>7.4f}")
    if len(a.seeds) > 1:
        print()
        for arm in ARMS:
            mine = [r for r in rows if r["arm"] == arm]
            print(f"{arm:<8} mean val nats {np.mean([r['val_nats'] for r in mine]):.4f}, "
                  f"mean gap {np.mean([r['label_gap'] for r in mine]):.4f}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
