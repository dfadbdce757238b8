"""Training throughput (chars/s) of model sizes and batch shapes, side by side in one process.

Usage: python benchmarks/throughput.py [--steps 30] [--config LxU:E:B:T ...] [--precision float32 --precision mixed_bfloat16]
Feeds real Shakespeare batches through `train_on_batch` exactly as `textgen train` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import training_model

from textgen.catalog import resolve
from textgen.config import parameter_count
from textgen.corpus import prepare
from textgen.training.batches import StreamBatches


def measure(ids, vocab_size, layers, units, embedding, batch, seq_len, steps, jit=False, precision="float32"):
    shape = dict(num_layers=layers, units=units, embedding_dim=embedding)
    model = training_model(vocab_size, **shape, batch_size=batch, seq_len=seq_len, learning_rate=2e-3, jit=jit,
                           precision=precision)
    batches = StreamBatches(ids, 0, len(ids), batch, seq_len)
    for k in range(3):
        model.train_on_batch(*batches.batch(0, k))
    times = []
    for k in range(steps):
        x, y = batches.batch(0, 3 + k)
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {"model": f"{layers}x{units} emb{embedding}", "batch": batch, "seq_len": seq_len, "jit": jit, "precision": precision,
            "params": parameter_count(shape, vocab_size), "step_s": round(step, 4),
            "chars_per_s": round(batch * seq_len / step)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--config", action="append",
                    help="LAYERSxUNITS:EMBEDDING:BATCH:SEQ, e.g. 2x256:64:64:100")
    ap.add_argument("--jit", action="store_true")
    ap.add_argument("--precision", action="append", choices=["float32", "mixed_bfloat16"],
                    help="measure each config in this precision (repeatable; default float32)")
    a = ap.parse_args()
    corpus = prepare(resolve("shakespeare")[0])
    ids = corpus.ids()
    configs = a.config or ["1x256:64:64:100", "2x256:64:64:100", "1x512:64:64:100", "2x512:64:64:100",
                           "3x256:64:64:100", "2x256:64:32:100", "2x256:64:128:100", "2x256:64:64:200"]
    print(f"{'model':<16}{'batch':>6}{'seq':>5}{'precision':>16}{'params':>10}{'step s':>9}{'chars/s':>10}")
    for c in configs:
        lu, e, b, t = c.split(":")
        layers, units = map(int, lu.split("x"))
        for precision in a.precision or ["float32"]:
            r = measure(ids, len(corpus.vocab), layers, units, int(e), int(b), int(t), a.steps, a.jit, precision)
            print(f"{r['model']:<16}{r['batch']:>6}{r['seq_len']:>5}{precision:>16}{r['params']:>10,}{r['step_s']:>9}"
                  f"{r['chars_per_s']:>10,}", flush=True)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
