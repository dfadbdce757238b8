"""Sampling: small pure functions over logits, and a stateful numpy LSTM that steps once per
character for a whole batch of streams.

The engine reads the run's `weights.npz` directly and never imports Keras or TensorFlow,
so `textgen sample` starts in well under a second. Its next-character distribution equals
the Keras model's (tests compare log-probabilities over hundreds of steps).

The first layer's input projection is folded into a (vocab, 4*units) table: the embedding
followed by a matmul is the same as looking up a precomputed row.
"""

from __future__ import annotations

import math
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


# ----------------------------------------------------------------------------- the engine


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: one transcendental call, no overflow warnings.
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


class LSTMEngine:
    """A numpy forward pass of the run's LSTM, one character per step, for B streams."""

    def __init__(self, weights: dict, num_layers: int, dtype=np.float32):
        def get(name):
            if name not in weights:
                from textgen.errors import CheckpointError

                raise CheckpointError(f"Checkpoint weights lack {name!r}; was it written by textgen?")
            return np.asarray(weights[name], dtype=dtype)

        self.dtype = dtype
        embedding = get("embedding/embeddings")
        self.layers = []
        for i in range(num_layers):
            prefix = f"lstm_{i}/lstm/lstm_cell/"
            kernel, recurrent, bias = get(prefix + "kernel"), get(prefix + "recurrent_kernel"), get(prefix + "bias")
            if i == 0:
                # Fold embedding and input projection into one lookup table.
                table = (embedding.astype(np.float64) @ kernel.astype(np.float64) + bias).astype(dtype)
                self.layers.append((table, recurrent, None))
            else:
                self.layers.append((np.concatenate([kernel, recurrent], axis=0), None, bias))
        self.units = self.layers[0][1].shape[0]
        self.out_kernel = get("logits/kernel")
        self.out_bias = get("logits/bias")
        self.vocab_size = self.out_bias.shape[0]

    def initial_state(self, batch_size: int) -> list:
        zeros = lambda: np.zeros((batch_size, self.units), dtype=self.dtype)  # noqa: E731
        return [(zeros(), zeros()) for _ in self.layers]

    def step(self, ids: np.ndarray, state: list) -> np.ndarray:
        """Advance every stream by one character; returns logits (B, V); updates `state`."""
        u = self.units
        x = None
        for i, (first, second, bias) in enumerate(self.layers):
            h, c = state[i]
            if i == 0:
                z = first[ids] + h @ second
            else:
                z = np.concatenate([x, h], axis=1) @ first
                z += bias
            gates = np.empty_like(z)
            _sigmoid(z[:, : 2 * u], gates[:, : 2 * u])
            np.tanh(z[:, 2 * u: 3 * u], out=gates[:, 2 * u: 3 * u])
            _sigmoid(z[:, 3 * u:], gates[:, 3 * u:])
            c *= gates[:, u: 2 * u]
            c += gates[:, :u] * gates[:, 2 * u: 3 * u]
            np.tanh(c, out=h)
            h *= gates[:, 3 * u:]
            x = h
        return x @ self.out_kernel + self.out_bias

    def feed(self, ids: Sequence[int], state: list) -> np.ndarray:
        """Feed the same prefix to every stream; returns the logits after its last character."""
        batch = state[0][0].shape[0]
        logits = None
        for i in ids:
            logits = self.step(np.full(batch, i, dtype=np.int64), state)
        return logits


def stream_generators(seed: int | None, num_streams: int, first_index: int = 0) -> list:
    """One generator per stream, seeded by (seed, stream index): stream i's text does not
    depend on how many streams run beside it."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    return [np.random.default_rng([seed, first_index + i]) for i in range(num_streams)]


def generate(engine: LSTMEngine, prime_ids: Sequence[int], length: int, temperature: float,
             num_samples: int = 1, seed: int | None = None, top_k: int | None = None,
             top_p: float | None = None, start_id: int = 0) -> Iterator[np.ndarray]:
    """Yield, `length` times, an array of `num_samples` new character ids.

    Memory stays constant whatever `length` is: only the LSTM state is kept.
    `start_id` is fed first when there is no prime (the corpus' newline if it has one).
    """
    check_temperature(temperature)
    check_top_k(top_k)
    check_top_p(top_p)
    if length < 1:
        raise ConfigError(f"length must be a positive integer. Received: length={length}")
    state = engine.initial_state(num_samples)
    logits = engine.feed(list(prime_ids) or [start_id], state)
    rngs = stream_generators(seed, num_samples)
    for _ in range(length):
        uniforms = np.array([r.random() for r in rngs])
        ids = sample(logits, temperature, uniforms, top_k, top_p)
        yield ids
        logits = engine.step(ids, state)


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
