"""Sampling as small pure functions: temperature, top-k and top-p over logits, a seeded draw,
and the stop-string filter. The engine is in textgen/generation/engine.py, the session that runs
streams over it in textgen/generation/session.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    if top_p is None or top_p >= 1.0:  # no renormalisation needed: an unnormalised cdf will do
        z = top_k_filter(np.asarray(logits, dtype=np.float64), top_k) / temperature
        z -= z.max(axis=-1, keepdims=True)
        cdf = np.cumsum(np.exp(z, out=z), axis=-1)
    else:
        cdf = np.cumsum(next_distribution(logits, temperature, top_k, top_p), axis=-1)
    u = np.asarray(uniforms, dtype=np.float64).reshape(-1, 1) * cdf[:, -1:]
    ids = (cdf <= u).sum(axis=-1)
    return np.minimum(ids, logits.shape[-1] - 1)


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
