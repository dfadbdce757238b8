"""The numpy LSTM engine: one character per step for a batch of streams that can grow and
shrink between steps, reading a run's `weights.npz` without Keras or TensorFlow.

What makes it fast (each measured, see benchmarks/README_sampling.md):
- The first layer's input projection is folded into a (vocab, 4*units) table: the embedding
  followed by a matmul is the same as looking up a precomputed row.
- Layers after the first multiply one preallocated [x, h] buffer by the stacked
  [kernel; recurrent_kernel]: one matmul per layer, no allocation per step.
- sigmoid and tanh are computed from float32 `np.exp`, which numpy vectorises; its float32
  `tanh` is not vectorised on AVX2 CPUs and made the elementwise part as slow as the matmuls.
- numpy's BLAS is put on one thread (threadpoolctl, once per process): its own threads
  busy-wait, and with another process on the second core they made sampling 3x slower
  (benchmarks/README_sampling.md). Instead, from 16 live streams on, a second worker thread
  owns half of every layer's units (their columns of the weights); the two meet at a
  barrier after each layer (numpy releases the GIL inside BLAS and large ufuncs). Below 16
  streams one thread steps alone: a barrier round trip (about 60 us) costs more than half
  a small step gains.

A state holds up to `capacity` streams; rows [0, rows) are live. Callers add and remove
rows between steps with `StreamState.put_row` / `keep_rows`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from textgen.errors import CheckpointError

SPLIT_ROWS = 16  # from this many live streams on, the worker thread takes half of every layer
_BLAS_LOCK = threading.Lock()
_BLAS_SINGLE = False


def single_threaded_blas() -> None:
    """Put numpy's BLAS on one thread, for the rest of the process (done once).

    The count is not switched back after each sample: OpenBLAS (0.3.26+) ends and starts
    threads on every change, and a pytest process that sampled hundreds of times in a row
    once stalled inside that churn. Nothing else textgen runs uses numpy's BLAS (training
    runs on Keras' backend).
    """
    global _BLAS_SINGLE
    with _BLAS_LOCK:
        if _BLAS_SINGLE:
            return
        from threadpoolctl import threadpool_info, threadpool_limits

        if any(pool.get("user_api") == "blas" and pool.get("num_threads", 1) != 1 for pool in threadpool_info()):
            threadpool_limits(limits=1, user_api="blas")
        _BLAS_SINGLE = True


def _sigmoid_(x: np.ndarray) -> None:
    """In place: 1 / (1 + exp(-x)). exp(-x) overflowing to inf gives exactly 0, as it should."""
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.divide(1.0, x, out=x)


def _tanh(x: np.ndarray, out: np.ndarray) -> None:
    """out = tanh(x) = 2 / (1 + exp(-2x)) - 1 (absolute error ~1e-7; see _sigmoid_)."""
    np.multiply(x, -2.0, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.divide(2.0, out, out=out)
    out -= 1.0


def _cell(z: np.ndarray, c: np.ndarray, h: np.ndarray, width: int) -> None:
    """The LSTM cell on pre-activations z = [i, f, o, g] (each `width` wide): updates c, writes h."""
    _sigmoid_(z[:, : 3 * width])
    candidate = z[:, 3 * width:]
    _tanh(candidate, candidate)
    c *= z[:, width: 2 * width]
    candidate *= z[:, :width]
    c += candidate
    _tanh(c, h)
    h *= z[:, 2 * width: 3 * width]


def _gate_order(units: int) -> np.ndarray:
    """Column order that turns Keras' gates (i, f, c, o) into (i, f, o, c): one sigmoid block."""
    return np.concatenate([np.arange(0, 2 * units), np.arange(3 * units, 4 * units), np.arange(2 * units, 3 * units)])


class LSTMEngine:
    """A numpy forward pass of the run's LSTM, one character per step, for B streams.

    `weights` maps Keras variable paths to arrays (a run's `weights.npz`) in Keras' gate
    order (input, forget, cell, output); the engine reorders the columns once to (input,
    forget, output, cell) so that one sigmoid covers three gates.
    `threads` (1 or 2) is how many threads step a state; the text does not depend on it.
    """

    def __init__(self, weights: dict, num_layers: int, dtype=np.float32, threads: int = 2):
        def get(name):
            if name not in weights:
                raise CheckpointError(f"Checkpoint weights lack {name!r}; was it written by textgen?")
            return np.asarray(weights[name])

        self.dtype = dtype
        self.threads = threads
        embedding = get("embedding/embeddings").astype(np.float64)
        order = _gate_order(np.asarray(get("lstm_0/lstm/lstm_cell/recurrent_kernel")).shape[0])
        self.layers = []  # (input table or stacked [kernel; recurrent], recurrent or None, bias or None)
        for i in range(num_layers):
            prefix = f"lstm_{i}/lstm/lstm_cell/"
            kernel, recurrent, bias = get(prefix + "kernel"), get(prefix + "recurrent_kernel"), get(prefix + "bias")
            kernel, recurrent, bias = kernel[:, order], recurrent[:, order], bias[order]  # gates (i, f, o, c)
            if i == 0:
                # Embedding, input projection and bias folded into one (vocab, 4*units) table.
                table = embedding @ kernel.astype(np.float64) + bias.astype(np.float64)
                self.layers.append((table.astype(dtype), np.ascontiguousarray(recurrent, dtype=dtype), None))
            else:
                stacked = np.ascontiguousarray(np.concatenate([kernel, recurrent], axis=0), dtype=dtype)
                self.layers.append((stacked, None, bias.astype(dtype)))
        self.units = self.layers[0][1].shape[0]
        self.out_kernel = get("logits/kernel").astype(dtype)
        self.out_bias = get("logits/bias").astype(dtype)
        self.vocab_size = self.out_bias.shape[0]
        self._halves = None

    def halves(self):
        """Per worker: its unit columns (low, high) and its columns of every layer's weights."""
        if self._halves is None:
            u, halves = self.units, []
            for low, high in ((0, u // 2), (u // 2, u)):
                columns = np.concatenate([np.arange(g * u + low, g * u + high) for g in range(4)])
                per_layer = []
                for i, (first, second, bias) in enumerate(self.layers):
                    if i == 0:
                        per_layer.append((np.ascontiguousarray(second[:, columns]), np.ascontiguousarray(first[:, columns])))
                    else:
                        per_layer.append((np.ascontiguousarray(first[:, columns]), bias[columns].copy()))
                halves.append((low, high, per_layer))
            self._halves = halves
        return self._halves

    def initial_state(self, capacity: int, threads: int | None = None) -> StreamState:
        """Zero state for up to `capacity` streams, all of them live, stepped by `threads`
        threads (default: the engine's)."""
        state = StreamState(self, capacity, self.threads if threads is None else threads)
        state.rows = capacity
        return state

    def step(self, ids: np.ndarray, state: StreamState) -> np.ndarray:
        """Advance the live streams by one character; returns their logits (rows, V).

        The logits array is the state's buffer: the next step overwrites it.
        """
        single_threaded_blas()
        with np.errstate(over="ignore"):  # exp(-x) may overflow to inf, on purpose
            if state.workers is not None and state.rows >= SPLIT_ROWS:
                return state.workers.step(ids)
            return self._step(ids, state)

    def _step(self, ids: np.ndarray, state: StreamState) -> np.ndarray:
        n = state.rows
        z = state.z[:n]
        for i, (first, second, bias) in enumerate(self.layers):
            if i == 0:
                np.matmul(state.h[0][:n], second, out=z)
                z += first[ids]
            else:
                np.copyto(state.inputs[i][:n, : self.units], state.h[i - 1][:n])
                np.matmul(state.inputs[i][:n], first, out=z)
                z += bias
            _cell(z, state.c[i][:n], state.h[i][:n], self.units)
        logits = state.logits[:n]
        np.matmul(state.h[-1][:n], self.out_kernel, out=logits)
        logits += self.out_bias
        return logits

    def feed(self, ids: Sequence[int], state: StreamState) -> np.ndarray:
        """Feed the same ids to every live stream; returns the logits after the last one."""
        logits = None
        for i in ids:
            logits = self.step(np.full(state.rows, i, dtype=np.intp), state)
        return logits


class StreamState:
    """The (h, c) of every layer for up to `capacity` streams, plus the buffers a step writes.

    For layers after the first, h lives in the right half of that layer's [x, h] input
    buffer, so the layer is one matmul and nothing is concatenated per step. `arrays` lists
    every buffer whose rows belong to a stream (what moving or copying a stream must move).
    With `threads > 1`, a worker thread (started on the first step) steps half of the units.
    """

    def __init__(self, engine: LSTMEngine, capacity: int, threads: int = 1):
        u, dtype = engine.units, engine.dtype
        self.engine = engine
        self.capacity = capacity
        self.rows = 0
        self.inputs = [None] + [np.zeros((capacity, 2 * u), dtype) for _ in engine.layers[1:]]
        self.h = [np.zeros((capacity, u), dtype)] + [buf[:, u:] for buf in self.inputs[1:]]
        self.c = [np.zeros((capacity, u), dtype) for _ in engine.layers]
        self.z = np.empty((capacity, 4 * u), dtype)
        self.logits = np.empty((capacity, engine.vocab_size), dtype)
        self.arrays = [self.h[0], *self.inputs[1:], *self.c]
        self.workers = _Workers(self) if threads > 1 and u >= 2 else None

    def __getitem__(self, layer: int):
        return self.h[layer], self.c[layer]

    def __len__(self) -> int:
        return len(self.c)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None


class _Workers:
    """Steps a state with two threads that each own half of every layer's units.

    Each thread multiplies all live rows by its half of the weights, writes its half of the
    new c and h, and the two meet at a barrier after every layer. A new h is written first
    into the next layer's x half (or `top` for the last layer), which nobody reads during
    this layer, and copied into the layer's own recurrent half after the barrier, when the
    other thread's matmul no longer reads it.
    """

    def __init__(self, state: StreamState):
        engine = state.engine
        self.state, self.engine = state, engine
        self.top = np.zeros((state.capacity, engine.units), engine.dtype)
        self.z = [np.empty((state.capacity, 4 * (high - low)), engine.dtype) for low, high, _ in engine.halves()]
        self.barrier = threading.Barrier(2)
        self.ids = None
        self.thread = None
        self.closed = False

    def _start(self) -> None:
        self.thread = threading.Thread(target=self._serve, name="textgen-engine-worker", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while True:
                self.barrier.wait()  # a step begins (or close() aborts the barrier)
                if self.closed:
                    return
                with np.errstate(over="ignore"):
                    self._half(1)
                self.barrier.wait()  # the step ends
        except threading.BrokenBarrierError:
            return

    def _half(self, j: int) -> None:
        state, engine = self.state, self.engine
        n, last = state.rows, len(engine.layers) - 1
        low, high, weights = engine.halves()[j]
        width = high - low
        z = self.z[j][:n]
        try:
            for i, (matrix, extra) in enumerate(weights):
                source = state.h[0][:n] if i == 0 else state.inputs[i][:n]
                np.matmul(source, matrix, out=z)
                z += extra[self.ids] if i == 0 else extra
                c = state.c[i][:n, low:high]
                staged = (self.top if i == last else state.inputs[i + 1])[:n, low:high]
                _cell(z, c, staged, width)
                self.barrier.wait()
                np.copyto(state.h[i][:n, low:high], staged)
        except threading.BrokenBarrierError:
            raise
        except BaseException:
            self.barrier.abort()  # never leave the other thread waiting
            raise

    def step(self, ids: np.ndarray) -> np.ndarray:
        if self.thread is None or not self.thread.is_alive() or self.barrier.broken:
            if self.thread is not None:  # a step interrupted by an exception (e.g. Ctrl-C) broke the barrier
                self.barrier.abort()
                self.thread.join(timeout=5)
            self.barrier.reset()
            self._start()
        self.ids = ids
        self.barrier.wait()  # start the worker
        self._half(0)
        self.barrier.wait()  # both halves of the last h are copied
        n, engine = self.state.rows, self.engine
        logits = self.state.logits[:n]
        np.matmul(self.state.h[-1][:n], engine.out_kernel, out=logits)
        logits += engine.out_bias
        return logits

    def close(self) -> None:
        self.closed = True
        if self.thread is not None:
            self.barrier.abort()
            self.thread.join(timeout=5)
