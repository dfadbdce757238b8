"""The sampling engine: one character per step for a batch of streams that can grow and
shrink between steps, reading a run's `weights.npz` without Keras or TensorFlow. The step
is compiled C where the package was built with a compiler (below), numpy otherwise.

What makes the numpy step fast (each measured, see benchmarks/README_sampling.md):
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

A state holds up to `capacity` streams; rows [0, rows) are live. Callers (the session) add
and remove rows between steps by copying the rows of every array in `state.arrays`.

The compiled step. Where the package was built with a C compiler, `textgen/generation/_kernel.c` runs
the whole step (both layers' products, the cells, the output layer) in one call through
ctypes, with its own worker thread that shares the blocks of every layer through an atomic
counter instead of a barrier; see that file. It computes the same function as the numpy
step (within float rounding: it sums in another order and uses its own exp), is used for
float32 engines, and is switched off with TEXTGEN_KERNEL=0 (or `compiled=False`).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

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


def kernel_switched_off() -> bool:
    """TEXTGEN_KERNEL=0 (or false/no/off): use the numpy step even where the compiled one was built."""
    return os.environ.get("TEXTGEN_KERNEL", "1").strip().lower() in ("0", "false", "no", "off")


@functools.cache
def load_kernel():
    """The compiled step's library (ctypes), or None where it was not built or TEXTGEN_KERNEL=0."""
    if kernel_switched_off():
        return None
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_kernel{suffix}"
        if path.is_file():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                return None
            break
    else:
        return None
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.tg_version.restype = i
    if lib.tg_version() != 1:
        return None
    lib.tg_model_create.restype = p
    lib.tg_model_create.argtypes = [i, i, i, i, i, p, p, p, p, p]
    lib.tg_model_destroy.argtypes = [p]
    lib.tg_runner_create.restype = p
    lib.tg_runner_create.argtypes = [p, i, i]
    lib.tg_runner_set.argtypes = [p, i, p, p, p]
    lib.tg_runner_outputs.argtypes = [p, p, p]
    lib.tg_step.argtypes = [p, i]
    lib.tg_step.restype = i
    lib.tg_runner_destroy.argtypes = [p]
    lib.tg_sample.restype = i
    lib.tg_sample.argtypes = [p, i, i, p, p, i, p, p, p]
    lib.tg_run.restype = i
    lib.tg_run.argtypes = [p, i, i, p, p, i, p, p, p, p]
    return lib


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def address(array: np.ndarray) -> int:
    """Where an array's data starts (what the compiled step's pointer arguments take)."""
    return array.__array_interface__["data"][0]


class _CompiledModel:
    """The engine's weights packed for textgen/generation/_kernel.c (see its layout comment); owns the
    C-side model, which points into these arrays."""

    BLOCK, PANEL = 8, 32

    def __init__(self, lib, engine: LSTMEngine):
        u = engine.units
        padded = -(-u // self.BLOCK) * self.BLOCK
        blocks = padded // self.BLOCK

        def gates(m: np.ndarray) -> np.ndarray:  # (K, 4u) -> (K, blocks, 32), units padded with zeros
            out = np.zeros((m.shape[0], 4, padded), np.float32)
            out[:, :, :u] = m.reshape(m.shape[0], 4, u)
            return out.reshape(m.shape[0], 4, blocks, self.BLOCK).transpose(0, 2, 1, 3).reshape(m.shape[0], blocks, 32)

        def rows(m: np.ndarray) -> np.ndarray:  # pad the input dimension (rows) from u to `padded`
            out = np.zeros((padded, m.shape[1]), np.float32)
            out[:u] = m
            return out

        def panels(m: np.ndarray) -> np.ndarray:  # (K, 4u) -> (blocks, K, 32): one contiguous panel per block
            return np.ascontiguousarray(gates(m).transpose(1, 0, 2))

        self.padded, self.blocks = padded, blocks
        table, recurrent, _ = engine.layers[0]
        self.table = np.ascontiguousarray(gates(table))
        self.weights = [panels(rows(recurrent))]
        self.bias = [np.zeros((blocks, 32), np.float32)]
        for stacked, _, bias in engine.layers[1:]:
            self.weights.append(panels(np.concatenate([rows(stacked[:u]), rows(stacked[u:])])))
            self.bias.append(np.ascontiguousarray(gates(bias[None, :])[0]))
        vocab = engine.vocab_size
        self.out_panels = -(-vocab // self.PANEL)
        out = np.zeros((padded, self.out_panels * self.PANEL), np.float32)
        out[:u, :vocab] = engine.out_kernel
        self.out = np.ascontiguousarray(out.reshape(padded, self.out_panels, self.PANEL).transpose(1, 0, 2))
        self.out_bias = np.zeros(self.out_panels * self.PANEL, np.float32)
        self.out_bias[:vocab] = engine.out_bias
        layers = len(engine.layers)
        self._weight_ptrs = (ctypes.c_void_p * layers)(*[address(w) for w in self.weights])
        self._bias_ptrs = (ctypes.c_void_p * layers)(*[address(b) for b in self.bias])
        self.lib = lib
        self.handle = lib.tg_model_create(layers, u, padded, vocab, self.out_panels, address(self.table),
                                          ctypes.addressof(self._weight_ptrs), ctypes.addressof(self._bias_ptrs),
                                          address(self.out), address(self.out_bias))
        if not self.handle:
            raise MemoryError("textgen's compiled step could not be set up")
        weakref.finalize(self, lib.tg_model_destroy, self.handle)


def _destroy_runner(model: _CompiledModel, runner: int) -> None:
    model.lib.tg_runner_destroy(runner)


def _gate_order(units: int) -> np.ndarray:
    """Column order that turns Keras' gates (i, f, c, o) into (i, f, o, c): one sigmoid block."""
    return np.concatenate([np.arange(0, 2 * units), np.arange(3 * units, 4 * units), np.arange(2 * units, 3 * units)])


class LSTMEngine:
    """A numpy forward pass of the run's LSTM, one character per step, for B streams.

    `weights` maps Keras variable paths to arrays (a run's `weights.npz`) in Keras' gate
    order (input, forget, cell, output); the engine reorders the columns once to (input,
    forget, output, cell) so that one sigmoid covers three gates.
    `threads` (1 or 2) is how many threads step a state; the text does not depend on it.
    `compiled` (default: where built) runs the step in textgen/generation/_kernel.c; see the module docstring.
    """

    def __init__(self, weights: dict, num_layers: int, dtype=np.float32, threads: int = 2,
                 compiled: bool | None = None):
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
        lib = load_kernel() if compiled is not False and np.dtype(dtype) == np.float32 and num_layers <= 16 else None
        if compiled and lib is None:
            raise CheckpointError("textgen's compiled step is not available (not built, or TEXTGEN_KERNEL=0).")
        self.compiled = _CompiledModel(lib, self) if lib is not None else None

    @property
    def kind(self) -> str:
        """Which step runs: "compiled" (textgen/generation/_kernel.c) or "numpy"."""
        return "compiled" if self.compiled is not None else "numpy"

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
        if state.runner is not None:
            n = state.rows
            state.ids[:n] = ids
            if self.compiled.lib.tg_step(state.runner, n):
                raise ValueError(f"ids must be in [0, {self.vocab_size}) for {n} <= {state.capacity} rows")
            return state.logits[:n]
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
        self.runner = None
        self.workers = None
        if engine.compiled is not None:
            self._compiled(engine.compiled, threads > 1 and _cpus() > 1)
            return
        self.inputs = [None] + [np.zeros((capacity, 2 * u), dtype) for _ in engine.layers[1:]]
        self.h = [np.zeros((capacity, u), dtype)] + [buf[:, u:] for buf in self.inputs[1:]]
        self.c = [np.zeros((capacity, u), dtype) for _ in engine.layers]
        self.z = np.empty((capacity, 4 * u), dtype)
        self.logits = np.empty((capacity, engine.vocab_size), dtype)
        self.arrays = [self.h[0], *self.inputs[1:], *self.c]
        self.workers = _Workers(self) if threads > 1 and u >= 2 else None

    def _compiled(self, model: _CompiledModel, threaded: bool) -> None:
        """Buffers for the compiled step: h and c padded to `model.padded` units (the padding
        stays 0), the new h of each layer, the ids and the logits."""
        capacity, width = self.capacity, model.padded
        self.h = [np.zeros((capacity, width), np.float32) for _ in model.weights]
        self.c = [np.zeros((capacity, width), np.float32) for _ in model.weights]
        self.fresh = [np.zeros((capacity, width), np.float32) for _ in model.weights]
        self.logits = np.zeros((capacity, self.engine.vocab_size), np.float32)
        self.ids = np.zeros(capacity, np.int64)
        self.arrays = [*self.h, *self.c]
        self._start_runner(model, threaded)

    def _start_runner(self, model: _CompiledModel, threaded: bool) -> None:
        lib = model.lib
        runner = lib.tg_runner_create(model.handle, self.capacity, int(threaded))
        if not runner:
            raise MemoryError("textgen's compiled step could not be set up")
        for layer, (h, c, fresh) in enumerate(zip(self.h, self.c, self.fresh)):
            lib.tg_runner_set(runner, layer, address(h), address(c), address(fresh))
        lib.tg_runner_outputs(runner, address(self.logits), address(self.ids))
        self.runner, self.threaded = runner, threaded
        # The finalizer holds the model, so the C model outlives every runner that points at it.
        self._finalizer = weakref.finalize(self, _destroy_runner, model, runner)

    def __getitem__(self, layer: int):
        u = self.engine.units
        return self.h[layer][:, :u], self.c[layer][:, :u]

    def __len__(self) -> int:
        return len(self.c)

    def close(self) -> None:
        """Stop the state's worker thread (it can still be stepped, by one thread)."""
        if self.runner is not None and self.threaded:
            self._finalizer()  # joins the compiled step's worker
            self._start_runner(self.engine.compiled, threaded=False)
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
