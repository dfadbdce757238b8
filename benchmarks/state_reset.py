"""Carried LSTM state in training: never reset vs. staggered resets vs. stateless.

Usage: python benchmarks/state_reset.py [--steps 400] [--resets 1 10 1000000]

Trains the same 1x256 model for the same number of steps on Shakespeare with each
`state_reset` value, then scores 60,000 validation characters in windows of 100, 1,000 and
3,000 characters starting from a zero state (no burn-in). A model whose state was never
reset only ever saw states tens of thousands of characters deep, and does badly from a
cold start; staggered resets teach it every state age up to `state_reset` segments.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np

from textgen.catalog import resolve
from textgen.corpus import prepare, split_point
from textgen.scoring import build_scorer, score_ids
from textgen.training.opening import TrainingCallbacks, open_run
from textgen.training.variables import assign_trainable_arrays, trainable_arrays


class StopAfter(TrainingCallbacks):
    """Stops the trainer after `steps` steps."""

    def __init__(self, steps: int):
        self.steps, self.trainer = steps, None

    def on_step(self, step, logs):
        if step == self.steps:
            self.trainer.stop_reason = "steps"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--resets", type=int, nargs="+", default=[1, 10, 1_000_000])
    a = ap.parse_args()
    corpus = prepare(resolve("shakespeare")[0])
    ids = corpus.ids()
    split = split_point(corpus.num_chars, 0.1)
    val = np.asarray(ids[split: split + 60_001])
    root = tempfile.mkdtemp(prefix="state-reset-")
    print(f"{'state_reset':>12} {'steps':>6} {'train s':>8}  val nats/char from a zero state, window of")
    print(f"{'':>12} {'':>6} {'':>8}  {'100':>8} {'1,000':>8} {'3,000':>8}")
    for reset in a.resets:
        stop = StopAfter(a.steps)
        trainer = open_run(corpus, "shakespeare", root, f"r{reset}",
                           {"num_layers": 1, "units": 256, "embedding_dim": 64},
                           {"batch_size": 64, "seq_len": 100, "state_reset": reset, "eval_chars": 2000,
                            "eval_every": 10**9, "sample_chars": 0}, False, callbacks=stop)
        stop.trainer = trainer
        start = time.time()
        trainer.run()
        seconds = time.time() - start
        losses = []
        for window, streams in ((100, 600), (1000, 60), (3000, 20)):
            scorer = build_scorer(trainer.model_config, streams=streams)
            assign_trainable_arrays(scorer, trainable_arrays(trainer.model))
            total, count = score_ids(scorer, val, window=window, burn_in=0)
            losses.append(total / count)
        print(f"{reset:>12} {a.steps:>6} {seconds:>8.0f}  " + " ".join(f"{x:>8.4f}" for x in losses), flush=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
