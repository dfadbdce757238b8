"""How the engine should use the second core: one thread, its worker thread, or BLAS threads
(the numpy step), or the compiled step with one thread or with its worker.

    python benchmarks/sampling_threads.py            # quiet machine
    python benchmarks/sampling_threads.py --busy     # with a busy-loop process on another core

A 2x512 LSTM with random weights (vocabulary 80), 1 and 64 streams through the session API,
each setting three times (median printed). The engine holds BLAS to one thread for the
process; the `BLAS 2` rows lift that around the measurement.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from textgen.generation import kernel
from textgen.generation.engine import LSTMEngine, single_threaded_blas
from textgen.generation.writers import generate


def random_weights(layers=2, vocab=80, embedding=64, units=512, scale=0.05) -> dict:
    rng = np.random.default_rng(0)
    weights = {"embedding/embeddings": rng.normal(0, scale, (vocab, embedding)).astype(np.float32)}
    inputs = embedding
    for i in range(layers):
        prefix = f"lstm_{i}/lstm/lstm_cell/"
        weights[prefix + "kernel"] = rng.normal(0, scale, (inputs, 4 * units)).astype(np.float32)
        weights[prefix + "recurrent_kernel"] = rng.normal(0, scale, (units, 4 * units)).astype(np.float32)
        weights[prefix + "bias"] = np.zeros(4 * units, np.float32)
        inputs = units
    weights["logits/kernel"] = rng.normal(0, scale, (units, vocab)).astype(np.float32)
    weights["logits/bias"] = np.zeros(vocab, np.float32)
    return weights


def rate(engine, streams: int, steps: int, blas: int) -> float:
    with threadpool_limits(blas, "blas"):
        for _ in generate(engine, [0], 10, 0.8, streams, seed=1):
            pass
        start = time.perf_counter()
        for _ in generate(engine, [0], steps, 0.8, streams, seed=0):
            pass
        return streams * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", action="store_true", help="run a busy-loop process beside the measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        single_threaded_blas()
        weights = random_weights()
        one, two = (LSTMEngine(weights, 2, threads=t, compiled=False) for t in (1, 2))
        settings = [("numpy step: one thread, BLAS 1", one, 1),
                    ("numpy step: worker thread from 16 streams, BLAS 1", two, 1),
                    ("numpy step: one thread, BLAS 2", one, 2)]
        if kernel.load() is not None:
            settings += [("compiled step: one thread", LSTMEngine(weights, 2, threads=1), 1),
                         ("compiled step: with its worker thread (textgen's default)", LSTMEngine(weights, 2), 1)]
        rows: dict = {}
        for _ in range(args.repeats):
            for label, engine, blas in settings:
                rows.setdefault((label, 1), []).append(rate(engine, 1, 1500, blas))
                rows.setdefault((label, 64), []).append(rate(engine, 64, 150, blas))
    finally:
        if busy is not None:
            busy.kill()
    print(f"| threads ({'busy second core' if args.busy else 'quiet'}) | streams | chars/s (median) | runs |")
    print("|---|---:|---:|---|")
    for (label, streams), values in rows.items():
        print(f"| {label} | {streams} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
