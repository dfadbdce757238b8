"""Ceiling for 64-stream sampling of a 2x512 LSTM on this CPU: time only the matrix products of one step.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/sampling_ceiling.py   (as textgen samples: one BLAS thread per worker)
       python benchmarks/sampling_ceiling.py                          (first line: BLAS multi-threaded in one call)
Everything else a step does (gates, softmax, drawing) is left out, so no sampler can beat these figures.
"""
import os, time, threading
import numpy as np
rng = np.random.default_rng(0)
S, U = 64, 512
W1 = rng.standard_normal((U, 4 * U), dtype=np.float32)          # layer 1: embedding folded, h @ W_hh
W2 = rng.standard_normal((2 * U, 4 * U), dtype=np.float32)      # layer 2: [x, h] @ W
Wo = rng.standard_normal((U, 80), dtype=np.float32)
def step(n):
    h1 = rng.standard_normal((n, U), dtype=np.float32); x2 = rng.standard_normal((n, 2 * U), dtype=np.float32)
    o1, o2, o3 = np.empty((n, 4*U), np.float32), np.empty((n, 4*U), np.float32), np.empty((n, 80), np.float32)
    def run(k):
        for _ in range(k):
            np.matmul(h1, W1, out=o1); np.matmul(x2, W2, out=o2); np.matmul(h1, Wo, out=o3)
    return run
flop = 2 * S * (U * 4 * U + 2 * U * 4 * U + U * 80)
for label, threads in (("1 thread, 64 rows", 1), ("2 threads x 32 rows", 2)):
    runs = [step(S // threads) for _ in range(threads)]
    k = 300
    for r in runs: r(10)
    t = time.perf_counter()
    ts = [threading.Thread(target=r, args=(k,)) for r in runs]
    [x.start() for x in ts]; [x.join() for x in ts]
    dt = (time.perf_counter() - t) / k
    print(f"{label}: {dt*1e3:.2f} ms/step = {flop/dt/1e9:.1f} GFLOP/s -> matmul-only ceiling {S/dt:,.0f} chars/s")
