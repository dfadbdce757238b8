"""The sampling engine: one character per step for a batch of streams that can grow and
shrink between steps, reading a run's `weights.npz` without Keras or TensorFlow.

Two steps compute the same function. The numpy step here is the reference: plain, and only
has to be right. The compiled step (textgen/generation/_kernel.c, reached only through
textgen/generation/kernel.py) is what runs wherever the package was built with a C compiler;
it sums in another order and uses its own exp, so the two agree within float rounding. It
is used for float32 engines and switched off with TEXTGEN_KERNEL=0 (or `compiled=False`).

What keeps the numpy step reasonable (benchmarks/README_sampling.md):
- The first layer's input projection is folded into a (vocab, 4*units) table: the embedding
  followed by a matmul is the same as looking up a precomputed row.
- Layers after the first multiply one preallocated [x, h] buffer by the stacked
  [kernel; recurrent_kernel]: one matmul per layer, no allocation per step.
- sigmoid and tanh are computed from float32 `np.exp`, which numpy vectorises.
- numpy's BLAS is put on one thread (threadpoolctl, once per process): its own threads
  busy-wait, and with another process on the second core they made sampling 3x slower.

A state holds up to `capacity` streams; rows [0, rows) are live. Callers (the session) add
and remove rows between steps by copying the rows of every array in `state.arrays`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from textgen.errors import CheckpointError
from textgen.generation import kernel

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


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _gate_order(units: int) -> np.ndarray:
    """Column order that turns Keras' gates (i, f, c, o) into (i, f, o, c): one sigmoid block."""
    return np.concatenate([np.arange(0, 2 * units), np.arange(3 * units, 4 * units), np.arange(2 * units, 3 * units)])


class LSTMEngine:
    """A forward pass of the run's LSTM, one character per step, for B streams.

    `weights` maps Keras variable paths to arrays (a run's `weights.npz`) in Keras' gate
    order (input, forget, cell, output); the engine reorders the columns once to (input,
    forget, output, cell) so that one sigmoid covers three gates. Shapes are checked here:
    embedding rows = output size = vocabulary, kernels matching layers and units.
    `threads` (1 or 2) is how many threads step a compiled state; the text does not depend on it.
    `compiled` (default: where built) runs the step in textgen/generation/_kernel.c.
    """

    def __init__(self, weights: dict, num_layers: int, dtype=np.float32, threads: int = 2,
                 compiled: bool | None = None):
        def get(name, shape):
            if name not in weights:
                raise CheckpointError(f"Checkpoint weights lack {name!r}; was it written by textgen?")
            array = np.asarray(weights[name])
            if array.dtype.kind != "f" or array.shape != shape:
                raise CheckpointError(f"Checkpoint weight {name!r} must be a float array of shape {shape}. "
                                      f"Received: {array.dtype} {array.shape}")
            return array

        first = np.asarray(weights.get("lstm_0/lstm/lstm_cell/recurrent_kernel", np.zeros((0, 0))))
        units = first.shape[0] if first.ndim == 2 else 0
        out_bias = np.asarray(weights.get("logits/bias", np.zeros(0)))
        vocab = out_bias.shape[0] if out_bias.ndim == 1 else 0
        embedding_dim = np.asarray(weights.get("embedding/embeddings", np.zeros((0, 0)))).shape[-1]
        if not (isinstance(num_layers, int) and num_layers >= 1 and units >= 1 and vocab >= 1):
            raise CheckpointError(f"Checkpoint weights do not describe an LSTM (layers={num_layers!r}, "
                                  f"units={units}, vocabulary={vocab}).")
        self.dtype = dtype
        self.threads = threads
        embedding = get("embedding/embeddings", (vocab, embedding_dim)).astype(np.float64)
        order = _gate_order(units)
        self.layers = []  # (input table or stacked [kernel; recurrent], recurrent or None, bias or None)
        for i in range(num_layers):
            prefix = f"lstm_{i}/lstm/lstm_cell/"
            kernel_ = get(prefix + "kernel", (embedding_dim if i == 0 else units, 4 * units))
            recurrent, bias = get(prefix + "recurrent_kernel", (units, 4 * units)), get(prefix + "bias", (4 * units,))
            kernel_, recurrent, bias = kernel_[:, order], recurrent[:, order], bias[order]  # gates (i, f, o, c)
            if i == 0:
                # Embedding, input projection and bias folded into one (vocab, 4*units) table.
                table = embedding @ kernel_.astype(np.float64) + bias.astype(np.float64)
                self.layers.append((table.astype(dtype), np.ascontiguousarray(recurrent, dtype=dtype), None))
            else:
                stacked = np.ascontiguousarray(np.concatenate([kernel_, recurrent], axis=0), dtype=dtype)
                self.layers.append((stacked, None, bias.astype(dtype)))
        self.units = units
        self.out_kernel = np.ascontiguousarray(get("logits/kernel", (units, vocab)), dtype=dtype)
        self.out_bias = np.ascontiguousarray(out_bias, dtype=dtype)
        self.vocab_size = vocab
        fits = np.dtype(dtype) == np.float32 and num_layers <= kernel.MAX_LAYERS
        lib = kernel.load() if compiled is not False and fits else None
        if compiled and lib is None:
            raise CheckpointError(f"textgen's compiled step is not available: {kernel.status().reason}.")
        self.compiled = None
        if lib is not None:
            table, recurrent, _ = self.layers[0]
            self.compiled = kernel.CompiledModel(lib, table, recurrent, [layer[0] for layer in self.layers[1:]],
                                                 [layer[2] for layer in self.layers[1:]], self.out_kernel,
                                                 self.out_bias)

    @property
    def kind(self) -> str:
        """Which step runs: "compiled" (textgen/generation/_kernel.c) or "numpy"."""
        return "compiled" if self.compiled is not None else "numpy"

    def initial_state(self, capacity: int, threads: int | None = None) -> StreamState:
        """Zero state for up to `capacity` streams, all of them live, stepped by `threads`
        threads (default: the engine's; only the compiled step uses a second one)."""
        state = StreamState(self, capacity, self.threads if threads is None else threads)
        state.rows = capacity
        return state

    def step(self, ids: np.ndarray, state: StreamState) -> np.ndarray:
        """Advance the live streams by one character; returns their logits (rows, V).

        The logits array is the state's buffer: the next step overwrites it.
        """
        n = state.rows
        if state.runner is not None:
            state.runner.ids[:n] = ids
            state.runner.step(n)
            return state.logits[:n]
        ids = np.asarray(ids)
        if ids.shape != (n,) or (n and (ids.min() < 0 or ids.max() >= self.vocab_size)):
            raise ValueError(f"ids must be {n} integers in [0, {self.vocab_size}). Received: {ids!r}")
        single_threaded_blas()
        with np.errstate(over="ignore"):  # exp(-x) may overflow to inf, on purpose
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

    For the numpy step, h of layers after the first lives in the right half of that layer's
    [x, h] input buffer, so the layer is one matmul and nothing is concatenated per step. For
    the compiled step the buffers are a `kernel.Runner`'s. `arrays` lists every buffer whose
    rows belong to a stream (what moving or copying a stream must move).
    """

    def __init__(self, engine: LSTMEngine, capacity: int, threads: int = 1):
        u, dtype = engine.units, engine.dtype
        self.engine = engine
        self.capacity = capacity
        self.rows = 0
        self.runner = None
        if engine.compiled is not None:
            self.runner = kernel.Runner(engine.compiled, capacity, threads > 1 and _cpus() > 1)
            self.h, self.c, self.logits = self.runner.h, self.runner.c, self.runner.logits
            self.arrays = [*self.h, *self.c]
            return
        self.inputs = [None] + [np.zeros((capacity, 2 * u), dtype) for _ in engine.layers[1:]]
        self.h = [np.zeros((capacity, u), dtype)] + [buf[:, u:] for buf in self.inputs[1:]]
        self.c = [np.zeros((capacity, u), dtype) for _ in engine.layers]
        self.z = np.empty((capacity, 4 * u), dtype)
        self.logits = np.empty((capacity, engine.vocab_size), dtype)
        self.arrays = [self.h[0], *self.inputs[1:], *self.c]

    def __getitem__(self, layer: int):
        u = self.engine.units
        return self.h[layer][:, :u], self.c[layer][:, :u]

    def __len__(self) -> int:
        return len(self.c)

    def close(self) -> None:
        """Stop the compiled step's worker thread (the state can still be stepped, by one thread)."""
        if self.runner is not None:
            self.runner.close()
