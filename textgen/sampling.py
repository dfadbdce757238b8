"""Sampling: small pure functions over logits, and a stateful numpy LSTM that steps once per
character for a whole batch of streams.

The engine reads the run's `weights.npz` directly and never imports Keras or TensorFlow,
so `textgen sample` starts in well under a second. Its next-character distribution equals
the Keras model's (tests compare log-probabilities over hundreds of steps).

What makes it fast (each measured, see benchmarks/README_sampling.md):
- The first layer's input projection is folded into a (vocab, 4*units) table: the embedding
  followed by a matmul is the same as looking up a precomputed row.
- Layers after the first multiply one preallocated [x, h] buffer by the stacked
  [kernel; recurrent_kernel]: one matmul per layer, no allocation per step.
- sigmoid and tanh are computed from float32 `np.exp`, which numpy vectorises; its float32
  `tanh` is not vectorised on AVX2 CPUs and made the elementwise part as slow as the matmuls.
- OpenBLAS is put on one thread (for the rest of the process) when sampling starts. On
  these small matrices (64 x 1024 x 2048) its own threads cost more than they give (about
  5x slower on a 2-core machine); instead, from 16 streams on, two worker threads each own
  half of every layer's units (their columns of the weights) and meet at a barrier after
  each layer (numpy releases the GIL inside BLAS and ufuncs).
- Each stream draws its uniforms from its own generator, seeded by (seed, stream index), in
  blocks of 256: no Python call per stream per step, and stream i's draws do not depend on
  how many streams run beside it.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np

from textgen.errors import ConfigError


# ----------------------------------------------------------------------------- pure functions


def check_temperature(temperature: float) -> float:
    t = float(temperature)
    if math.isnan(t) or math.isinf(t) or t < 0:
        raise ConfigError(
            f"temperature must be a finite number >= 0 (0 means greedy). Received: temperature={temperature}"
        )
    return t


def check_top_k(top_k: int | None) -> int | None:
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be an integer >= 1. Received: top_k={top_k}")
    return top_k


def check_top_p(top_p: float | None) -> float | None:
    if top_p is not None and (math.isnan(top_p) or not (0.0 < top_p <= 1.0)):
        raise ConfigError(f"top_p must be in (0, 1]. Received: top_p={top_p}")
    return top_p


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-probabilities along the last axis (float64 for accuracy)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """p ∝ exp(logits / temperature), computed from logits in float64, temperature > 0."""
    t = check_temperature(temperature)
    if t == 0:
        raise ConfigError("softmax needs temperature > 0; temperature 0 is greedy (argmax).")
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / t))


def top_k_filter(logits: np.ndarray, k: int | None) -> np.ndarray:
    """Keep the k largest logits per row (ties at the k-th value are kept); others → -inf."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[..., -k, None]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(probs: np.ndarray, p: float | None) -> np.ndarray:
    """Nucleus filter on probabilities: keep the smallest set whose mass reaches p, renormalise."""
    if p is None or p >= 1.0:
        return probs
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    cumulative = np.cumsum(sorted_probs, axis=-1)
    keep_sorted = (cumulative - sorted_probs) < p  # the top token is always kept
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    filtered = np.where(keep, probs, 0.0)
    return filtered / filtered.sum(axis=-1, keepdims=True)


def next_distribution(logits: np.ndarray, temperature: float, top_k: int | None = None,
                      top_p: float | None = None) -> np.ndarray:
    """The distribution a sampler draws from: temperature, then top-k, then top-p."""
    logits = top_k_filter(np.asarray(logits, dtype=np.float64), top_k)
    return top_p_filter(softmax(logits, temperature), top_p)


def sample(logits: np.ndarray, temperature: float, uniforms: np.ndarray,
           top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Draw one id per row of `logits` (shape (B, V)) from p ∝ exp(logits / T).

    `uniforms` holds one U[0, 1) draw per row, so each stream's randomness comes from its
    own generator. Temperature 0 is greedy (argmax) and ignores `uniforms`.
    """
    logits = np.atleast_2d(logits)
    if check_temperature(temperature) == 0:
        return np.argmax(top_k_filter(logits, top_k), axis=-1)
    probs = next_distribution(logits, temperature, top_k, top_p)
    cdf = np.cumsum(probs, axis=-1)
    u = np.asarray(uniforms, dtype=np.float64).reshape(-1, 1) * cdf[:, -1:]
    ids = (cdf <= u).sum(axis=-1)
    return np.minimum(ids, logits.shape[-1] - 1)


# ----------------------------------------------------------------------------- BLAS threads


def _openblas_functions():
    """(get, set) for the OpenBLAS that numpy loaded, or None (another BLAS, or not Linux)."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                                   ("openblas_get_num_threads", "openblas_set_num_threads")):
            getter, setter = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if getter is not None and setter is not None:
                getter.restype = ctypes.c_int
                return getter, setter
    return None


_BLAS_LOCK = threading.Lock()
_BLAS_SINGLE = False


def single_threaded_blas() -> None:
    """Put numpy's OpenBLAS on one thread, for the rest of the process (done once).

    Sampling multiplies small matrices; on them OpenBLAS' own threads mostly wait for each
    other (see the module docstring). The count is not switched back after each sample:
    OpenBLAS (0.3.26+) ends and starts threads on every change, a restore from a generator's
    `finally` can run at garbage collection while a worker thread is inside BLAS, and a
    pytest process that sampled hundreds of times in a row once stalled inside that churn.
    Nothing else textgen runs uses numpy's BLAS (training runs on Keras' backend).
    Does nothing when numpy uses another BLAS.
    """
    global _BLAS_SINGLE
    with _BLAS_LOCK:
        if _BLAS_SINGLE:
            return
        functions = _openblas_functions()
        if functions and functions[0]() != 1:
            functions[1](1)
        _BLAS_SINGLE = True


# ----------------------------------------------------------------------------- the engine


class StreamState:
    """The (h, c) of every layer for B streams, plus the buffers one step writes into.

    For layers after the first, h lives in the right half of that layer's [x, h] input
    buffer, so the layer is one matmul and nothing is concatenated per step.
    `state[i]` is layer i's (h, c), each (B, units).
    """

    def __init__(self, engine: "LSTMEngine", batch_size: int):
        u, dtype = engine.units, engine.dtype
        self.batch_size = batch_size
        self.inputs = [None] + [np.zeros((batch_size, 2 * u), dtype) for _ in engine.layers[1:]]
        self.h = [np.zeros((batch_size, u), dtype)] + [buf[:, u:] for buf in self.inputs[1:]]
        self.c = [np.zeros((batch_size, u), dtype) for _ in engine.layers]
        self.z = np.empty((batch_size, 4 * u), dtype)
        self.logits = np.empty((batch_size, engine.vocab_size), dtype)

    def __getitem__(self, layer: int):
        return self.h[layer], self.c[layer]

    def __len__(self) -> int:
        return len(self.c)


def _sigmoid_(x: np.ndarray) -> None:
    """In place: 1 / (1 + exp(-x)). numpy's float32 exp is vectorised, its tanh is not (about
    4x slower on an AVX2 CPU); exp(-x) overflowing to inf gives exactly 0, as it should."""
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


def _gate_order(units: int) -> np.ndarray:
    """Column order that turns Keras' gates (i, f, c, o) into (i, f, o, c): one sigmoid block."""
    return np.concatenate([np.arange(0, 2 * units), np.arange(3 * units, 4 * units), np.arange(2 * units, 3 * units)])


class LSTMEngine:
    """A numpy forward pass of the run's LSTM, one character per step, for B streams.

    `weights` maps Keras variable paths to arrays (a run's `weights.npz`), whose gate order
    is Keras' (input, forget, cell, output); the engine reorders the columns once to (input,
    forget, output, cell) so that one sigmoid covers three gates. Activations are tanh /
    sigmoid, as `build_model` fixes them.
    """

    def __init__(self, weights: dict, num_layers: int, dtype=np.float32):
        def get(name):
            if name not in weights:
                from textgen.errors import CheckpointError

                raise CheckpointError(f"Checkpoint weights lack {name!r}; was it written by textgen?")
            return np.asarray(weights[name])

        self.dtype = dtype
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

    def initial_state(self, batch_size: int) -> StreamState:
        return StreamState(self, batch_size)

    def step(self, ids: np.ndarray, state: StreamState) -> np.ndarray:
        """Advance every stream by one character; returns logits (B, V) and updates `state`.

        The logits array is the state's buffer: the next step overwrites it.
        """
        with np.errstate(over="ignore"):  # exp(-x) may overflow to inf, on purpose
            return self._step(ids, state)

    def _step(self, ids: np.ndarray, state: StreamState) -> np.ndarray:
        u, z = self.units, state.z
        for i, (first, second, bias) in enumerate(self.layers):
            h, c = state.h[i], state.c[i]
            if i == 0:
                np.matmul(h, second, out=z)
                z += first[ids]
            else:
                np.copyto(state.inputs[i][:, :u], state.h[i - 1])
                np.matmul(state.inputs[i], first, out=z)
                z += bias
            _sigmoid_(z[:, : 3 * u])  # input, forget and output gates
            candidate = z[:, 3 * u:]
            _tanh(candidate, candidate)
            c *= z[:, u: 2 * u]
            candidate *= z[:, :u]
            c += candidate
            _tanh(c, h)
            h *= z[:, 2 * u: 3 * u]
        np.matmul(state.h[-1], self.out_kernel, out=state.logits)
        state.logits += self.out_bias
        return state.logits

    def feed(self, ids: Sequence[int], state: StreamState) -> np.ndarray:
        """Feed the same prefix to every stream; returns the logits after its last character."""
        logits = None
        for i in ids:
            logits = self.step(np.full(state.batch_size, i, dtype=np.intp), state)
        return logits


# ----------------------------------------------------------------------------- generation

UNIFORM_BLOCK = 256
CHUNK_STEPS = 64  # steps run before the caller sees them
SPLIT_STREAMS = 16  # from this many streams on, two worker threads split every layer's units
SPLIT_WORKERS = 2  # fixed, so the arithmetic (and the text) does not depend on the core count


def _random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


class StreamUniforms:
    """U[0, 1) draws for streams first..first+B-1, one per stream per step.

    Stream i's draws come from `np.random.default_rng([seed, i])` in blocks of 256, so they
    are the same whatever other streams exist.
    """

    def __init__(self, seed: int, first: int, count: int):
        self.rngs = [np.random.default_rng([seed, first + i]) for i in range(count)]
        self.block = np.empty((UNIFORM_BLOCK, count))
        self.position = UNIFORM_BLOCK

    def next(self) -> np.ndarray:
        if self.position == UNIFORM_BLOCK:
            for i, rng in enumerate(self.rngs):
                self.block[:, i] = rng.random(UNIFORM_BLOCK)
            self.position = 0
        self.position += 1
        return self.block[self.position - 1]


def _primed_state(engine: LSTMEngine, prime_ids: Sequence[int], count: int):
    """State and logits of `count` streams after the prime, computed once and copied, so
    every stream (and every batch size) starts from the very same numbers."""
    state = engine.initial_state(count)
    if not isinstance(state, StreamState):  # another engine (tests use stubs): feed every stream
        return state, engine.feed(prime_ids, state)
    one = engine.initial_state(1)
    logits = engine.feed(prime_ids, one)
    for i in range(len(state)):
        state.h[i][...] = one.h[i]
        state.c[i][...] = one.c[i]
    return state, np.repeat(logits, count, axis=0)


class _Batch:
    """All streams, stepped by the calling thread."""

    def __init__(self, engine, count, prime_ids, uniforms, options):
        self.engine, self.count, self.uniforms, self.options = engine, count, uniforms, options
        self.state, self.logits = _primed_state(engine, prime_ids, count)

    def run(self, steps: int, pool=None) -> np.ndarray:
        out = np.empty((steps, self.count), dtype=np.intp)
        for t in range(steps):
            out[t] = ids = sample(self.logits, *self.options[:1], self.uniforms.next(), *self.options[1:])
            self.logits = self.engine.step(ids, self.state)
        return out


class _SplitBatch:
    """All streams, stepped by SPLIT_WORKERS threads that each own a slice of every layer's
    units (their columns of every weight matrix, all four gates).

    Each worker multiplies all B streams by its half of the weights: the matmuls keep their
    full height (BLAS is most efficient there) and each thread packs only half the weights.
    Threads meet at a barrier after every layer; the [x, h] inputs are double-buffered, so a
    worker writes step t's h while the other may still read step t-1's.
    """

    def __init__(self, engine, count, prime_ids, uniforms, options, workers=SPLIT_WORKERS):
        self.engine, self.count, self.uniforms, self.options = engine, count, uniforms, options
        u, dtype = engine.units, engine.dtype
        state, self.logits = _primed_state(engine, prime_ids, count)
        self.slices = [(u * j // workers, u * (j + 1) // workers) for j in range(workers)]
        self.weights = []  # per worker, per layer: (matrix, table or bias)
        for low, high in self.slices:
            columns = np.concatenate([np.arange(g * u + low, g * u + high) for g in range(4)])
            per_layer = []
            for i, (first, second, bias) in enumerate(engine.layers):
                if i == 0:
                    per_layer.append((np.ascontiguousarray(second[:, columns]), np.ascontiguousarray(first[:, columns])))
                else:
                    per_layer.append((np.ascontiguousarray(first[:, columns]), bias[columns].copy()))
            self.weights.append(per_layer)
        # inputs[i][parity]: layer 0 reads h0 (B, u); layer i > 0 reads [h_{i-1}, h_i] (B, 2u).
        self.inputs = [[np.zeros((count, u if i == 0 else 2 * u), dtype) for _ in range(2)]
                       for i in range(len(engine.layers))]
        for i in range(len(engine.layers)):
            self.inputs[i][0][:, u if i else 0:] = state.h[i]
            if i + 1 < len(engine.layers):
                self.inputs[i + 1][0][:, :u] = state.h[i]
        self.c = [[state.c[i][:, low:high].copy() for i in range(len(engine.layers))] for low, high in self.slices]
        self.z = [np.empty((count, 4 * (high - low)), dtype) for low, high in self.slices]
        self.barrier = threading.Barrier(workers)
        self.parity = 0
        self.ids = None
        self.out = None

    def _work(self, j: int, start: int, stop: int) -> None:
        engine, u = self.engine, self.engine.units
        low, high = self.slices[j]
        width = high - low
        z, cells, weights, last = self.z[j], self.c[j], self.weights[j], len(engine.layers) - 1
        parity = self.parity
        try:
            with np.errstate(over="ignore"):
                for t in range(start, stop):
                    now, after = parity, 1 - parity
                    for i, (matrix, extra) in enumerate(weights):
                        np.matmul(self.inputs[i][now], matrix, out=z)
                        z += extra[self.ids] if i == 0 else extra
                        _sigmoid_(z[:, : 3 * width])
                        candidate = z[:, 3 * width:]
                        _tanh(candidate, candidate)
                        c = cells[i]
                        c *= z[:, width: 2 * width]
                        candidate *= z[:, :width]
                        c += candidate
                        h = self.inputs[i][after][:, low + (u if i else 0): high + (u if i else 0)]
                        _tanh(c, h)
                        h *= z[:, 2 * width: 3 * width]
                        if i < last:
                            self.inputs[i + 1][now][:, low:high] = h
                        self.barrier.wait()
                    if j == 0:
                        top = self.inputs[last][after][:, u if last else 0:]
                        logits = top @ engine.out_kernel + engine.out_bias
                        self.out[t] = self.ids = sample(logits, self.options[0], self.uniforms.next(),
                                                        *self.options[1:])
                    self.barrier.wait()
                    parity = after
        except BaseException:
            self.barrier.abort()  # never leave the other worker waiting
            raise

    def run(self, steps: int, pool) -> np.ndarray:
        """The next `steps` characters of every stream, (steps, B)."""
        self.out = np.empty((steps, self.count), dtype=np.intp)
        start = 0
        if self.ids is None:  # the first character is drawn from the prime's logits
            self.out[0] = self.ids = sample(self.logits, self.options[0], self.uniforms.next(), *self.options[1:])
            start = 1
        if start < steps:
            others = [pool.submit(self._work, j, start, steps) for j in range(1, len(self.slices))]
            try:
                self._work(0, start, steps)
            except BaseException:  # e.g. Ctrl-C: wait for the other workers, keep this exception
                for future in others:
                    future.exception()
                raise
            for future in others:
                future.result()
            self.parity = (self.parity + steps - start) % 2
        return self.out


def generate(engine: LSTMEngine, prime_ids: Sequence[int], length: int, temperature: float,
             num_samples: int = 1, seed: int | None = None, top_k: int | None = None,
             top_p: float | None = None, start_id: int = 0, threads: int | None = None) -> Iterator[np.ndarray]:
    """Yield, `length` times, an array of `num_samples` new character ids.

    Memory stays constant whatever `length` is: only the LSTM state is kept.
    `start_id` is fed first when there is no prime (the corpus' newline if it has one).
    From 16 streams on, `threads` worker threads (default 2, a fixed number so that the text
    does not depend on the machine) split every layer's units between them.
    """
    check_temperature(temperature)
    check_top_k(top_k)
    check_top_p(top_p)
    if length < 1:
        raise ConfigError(f"length must be a positive integer. Received: length={length}")
    if num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer. Received: num_samples={num_samples}")
    if seed is None:
        seed = _random_seed()
    prime = list(prime_ids) or [start_id]
    workers = SPLIT_WORKERS if threads is None else threads
    split = num_samples >= SPLIT_STREAMS and workers > 1 and engine.units >= 2 * workers
    single_threaded_blas()
    uniforms = StreamUniforms(seed, 0, num_samples)
    options = (temperature, top_k, top_p)
    if split:
        batch = _SplitBatch(engine, num_samples, prime, uniforms, options, workers)
    else:
        batch = _Batch(engine, num_samples, prime, uniforms, options)
    pool = ThreadPoolExecutor(workers - 1) if split else None
    try:
        done = 0
        while done < length:
            steps = min(CHUNK_STEPS, length - done)
            yield from batch.run(steps, pool)
            done += steps
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


# ----------------------------------------------------------------------------- text and stop strings


class StopFilter:
    """Cuts one stream's text at the first stop string, holding back as little as possible.

    `push(text)` returns the text that is safe to show: everything except the last
    len(longest stop) - 1 characters, which might still begin a stop string. The stop string
    itself is never shown. `finish()` returns what was held back once generation ends.
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped: str | None = None

    def push(self, text: str) -> str:
        if self.stopped is not None or not text:
            return ""
        if not self.stops:
            return text
        self.pending += text
        found = [(self.pending.find(s), s) for s in self.stops]
        found = [(at, s) for at, s in found if at >= 0]
        if found:
            at, self.stopped = min(found)
            shown, self.pending = self.pending[:at], ""
            return shown
        cut = len(self.pending) - self.hold
        if cut <= 0:
            return ""
        shown, self.pending = self.pending[:cut], self.pending[cut:]
        return shown

    def finish(self) -> str:
        shown, self.pending = self.pending, ""
        return shown


def check_stops(stops: Sequence[str]) -> list:
    stops = list(stops or [])
    for s in stops:
        if not s:
            raise ConfigError("A stop string must not be empty. Received: stop=''")
    return stops


class TextStreams:
    """Iterate over lists of `num_samples` strings: each stream's newly showable text (often '').

    Ends after `length` characters per stream, or as soon as every stream has produced one
    of `stops` (the stop string is left out). Afterwards `stopped[i]` is the stop string
    stream i hit, or None where it ran to `length`.
    """

    def __init__(self, engine: LSTMEngine, chars: Sequence[str], prime_ids: Sequence[int], length: int,
                 temperature: float, num_samples: int = 1, seed: int | None = None,
                 top_k: int | None = None, top_p: float | None = None, start_id: int = 0,
                 stops: Sequence[str] = (), threads: int | None = None):
        self.stops = check_stops(stops)
        self.chars = list(chars)
        self.filters = [StopFilter(self.stops) for _ in range(num_samples)]
        self.ids = generate(engine, prime_ids, length, temperature, num_samples, seed, top_k, top_p,
                            start_id, threads)

    @property
    def stopped(self) -> list:
        return [f.stopped for f in self.filters]

    def __iter__(self) -> Iterator[list]:
        chars, filters = self.chars, self.filters
        try:
            for ids in self.ids:
                yield [f.push(chars[i]) for f, i in zip(filters, ids)]
                if self.stops and all(f.stopped is not None for f in filters):
                    break
        finally:
            self.ids.close()
        yield [f.finish() for f in filters]


# ----------------------------------------------------------------------------- loading a run


def load_run(directory, which: str = "latest", use_previous: bool = False):
    """(run info, checkpoint, engine) for sampling from a run directory, without Keras.

    `which` is "latest", "best", or the name of a checkpoint directory inside the run.
    """
    from pathlib import Path

    from textgen import checkpoints
    from textgen.errors import CheckpointError

    directory = Path(directory)
    info = checkpoints.read_run_file(directory)
    if which == "latest":
        ckpt = checkpoints.latest(directory, use_previous=use_previous)
    elif which == "best":
        ckpt = checkpoints.best(directory)
        if ckpt is None:
            raise CheckpointError(f"Run {directory.name!r} has no best checkpoint yet (no evaluation ran).")
    else:
        path = directory / which
        if checkpoints.check_run_name(which) and not path.is_dir():
            raise CheckpointError(f"Run {directory.name!r} has no checkpoint {which!r}.")
        checkpoints.verify(path)
        ckpt = checkpoints.Checkpoint(path, checkpoints.load_state(path))
    engine = LSTMEngine(checkpoints.load_arrays(ckpt.path), int(info["model"]["num_layers"]))
    if engine.vocab_size != len(info["vocab"]):
        raise CheckpointError(
            f"Checkpoint {str(ckpt.path)!r} has {engine.vocab_size} outputs but the run's vocabulary "
            f"has {len(info['vocab'])} characters."
        )
    return info, ckpt, engine
