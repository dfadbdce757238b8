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
- OpenBLAS runs single-threaded while sampling. On small matrices (64 x 1024 x 2048) its own
  threads cost more than they give (about 5x slower on a 2-core machine); instead, batches
  of more than 32 streams are cut into shards of at most 32 that worker threads step in
  parallel (numpy releases the GIL inside BLAS and ufuncs).
- Each stream draws its uniforms from its own generator, seeded by (seed, stream index), in
  blocks of 256: no Python call per stream per step, and stream i's draws do not depend on
  how many streams run beside it.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


@contextmanager
def single_threaded_blas():
    """Run OpenBLAS on one thread inside the block, then restore its thread count.

    Sampling multiplies small matrices; on them OpenBLAS' own threads mostly wait for each
    other (see the module docstring). Does nothing when numpy uses another BLAS.
    """
    with _BLAS_LOCK:
        functions = _openblas_functions()
        previous = functions[0]() if functions else None
        if functions and previous != 1:
            functions[1](1)
    try:
        yield
    finally:
        if functions and previous != 1:
            functions[1](previous)


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
    # In place: sigmoid(x) = 0.5 * tanh(x / 2) + 0.5, one transcendental, no overflow warnings.
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5


class LSTMEngine:
    """A numpy forward pass of the run's LSTM, one character per step, for B streams.

    `weights` maps Keras variable paths to arrays (a run's `weights.npz`). Gate order is
    Keras' (input, forget, cell, output); activations tanh / sigmoid, as `build_model` fixes.
    """

    def __init__(self, weights: dict, num_layers: int, dtype=np.float32):
        def get(name):
            if name not in weights:
                from textgen.errors import CheckpointError

                raise CheckpointError(f"Checkpoint weights lack {name!r}; was it written by textgen?")
            return np.asarray(weights[name])

        self.dtype = dtype
        embedding = get("embedding/embeddings").astype(np.float64)
        self.layers = []  # (input table or stacked [kernel; recurrent], recurrent or None, bias or None)
        for i in range(num_layers):
            prefix = f"lstm_{i}/lstm/lstm_cell/"
            kernel, recurrent, bias = get(prefix + "kernel"), get(prefix + "recurrent_kernel"), get(prefix + "bias")
            if i == 0:
                # Embedding, input projection and bias folded into one (vocab, 4*units) table.
                table = embedding @ kernel.astype(np.float64) + bias.astype(np.float64)
                self.layers.append((table.astype(dtype), recurrent.astype(dtype), None))
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
            _sigmoid_(z[:, : 2 * u])  # input and forget gates
            np.tanh(z[:, 2 * u: 3 * u], out=z[:, 2 * u: 3 * u])  # candidate
            _sigmoid_(z[:, 3 * u:])  # output gate
            c *= z[:, u: 2 * u]
            candidate = z[:, 2 * u: 3 * u]
            candidate *= z[:, :u]
            c += candidate
            np.tanh(c, out=h)
            h *= z[:, 3 * u:]
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
SHARD_STREAMS = 32  # streams per shard; fixed, so a shard's arithmetic never depends on core count
CHUNK_STEPS = 64  # steps a shard runs before the caller sees them


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


def stream_generators(seed: int | None, num_streams: int, first_index: int = 0) -> list:
    """One generator per stream, seeded by (seed, stream index): stream i's text does not
    depend on how many streams run beside it."""
    if seed is None:
        seed = _random_seed()
    return [np.random.default_rng([seed, first_index + i]) for i in range(num_streams)]


class _Shard:
    """Streams first..first+B-1: their state, their draws, their last logits."""

    def __init__(self, engine, first, count, prime_ids, seed, temperature, top_k, top_p):
        self.engine, self.temperature, self.top_k, self.top_p = engine, temperature, top_k, top_p
        self.state = engine.initial_state(count)
        self.uniforms = StreamUniforms(seed, first, count)
        self.logits = engine.feed(prime_ids, self.state)

    def run(self, steps: int) -> np.ndarray:
        out = np.empty((steps, self.state.batch_size), dtype=np.intp)
        for t in range(steps):
            out[t] = ids = sample(self.logits, self.temperature, self.uniforms.next(), self.top_k, self.top_p)
            self.logits = self.engine.step(ids, self.state)
        return out


def generate(engine: LSTMEngine, prime_ids: Sequence[int], length: int, temperature: float,
             num_samples: int = 1, seed: int | None = None, top_k: int | None = None,
             top_p: float | None = None, start_id: int = 0, threads: int | None = None) -> Iterator[np.ndarray]:
    """Yield, `length` times, an array of `num_samples` new character ids.

    Memory stays constant whatever `length` is: only the LSTM state is kept.
    `start_id` is fed first when there is no prime (the corpus' newline if it has one).
    Batches of more than 32 streams are cut into shards of at most 32 that up to `threads`
    worker threads (default: the number of CPUs) step in parallel.
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
    num_shards = -(-num_samples // SHARD_STREAMS)
    bounds = [num_samples * k // num_shards for k in range(num_shards + 1)]
    workers = max(1, min(num_shards, threads or os.cpu_count() or 1))
    with single_threaded_blas():
        shards = [_Shard(engine, bounds[k], bounds[k + 1] - bounds[k], prime, seed, temperature, top_k, top_p)
                  for k in range(num_shards)]
        pool = ThreadPoolExecutor(workers) if workers > 1 else None
        try:
            done = 0
            while done < length:
                steps = min(CHUNK_STEPS if num_samples > 1 else 1, length - done)
                if pool is None:
                    blocks = [shard.run(steps) for shard in shards]
                else:
                    blocks = list(pool.map(lambda shard: shard.run(steps), shards))
                block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
                for row in block:
                    yield row
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
