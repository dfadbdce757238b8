"""What one stream of a sampling session is: its spec, the pieces it reports, and its running
text (stop filter, held-back logprobs, its own random generator). The session that steps
streams is in textgen/generation/session.py, which re-exports these names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# numpy 2 imports numpy.random on first use of `np.random`; a Ctrl-C that lands inside that
# import (its Cython modules' set-up) is lost, and `textgen sample` would go on sampling. Imported
# here, it is done when a run is loaded, before any output file is opened.
import numpy.random  # noqa: F401, E402

from textgen.errors import ConfigError, positive_int
from textgen.generation.draw import StopFilter, check_stops, check_temperature, check_top_k, check_top_p

MAX_LOGPROBS = 20


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


@dataclass
class StreamSpec:
    """What one stream writes: its prime, length, sampling options, stops and randomness."""

    prime: str = ""
    length: int = 500
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    stops: Sequence[str] = ()
    seed: int = 0
    index: int = 0
    logprobs: int | None = None  # None: none; k: each character's logprob and its k likeliest alternatives
    prime_logprobs: bool = False  # also score the prime's characters
    keep_text: bool = True  # keep what the stream showed in `Stream.text` (off: constant memory)
    prime_ids: Sequence[int] | None = None  # the prime as ids (a session without characters takes only these)
    steering: object = None  # a constraints.Steering: a mask over the vocabulary before each draw
    attempt: int = 0  # --must-include's retries: attempt a > 0 of stream (seed, index) draws from (seed, index, a)
    lead: Sequence[int] = ()  # ids fed before this prime (a label's, `tables.label_lead`); (): the session's lead

    def validate(self) -> StreamSpec:
        self.temperature = check_temperature(self.temperature)
        check_top_k(self.top_k)
        check_top_p(self.top_p)
        positive_int("length", self.length)
        self.stops = check_stops(self.stops)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer. Received: seed={self.seed!r}")
        if self.logprobs is not None and not (isinstance(self.logprobs, int) and 0 <= self.logprobs <= MAX_LOGPROBS):
            raise ConfigError(f"logprobs must be an integer in [0, {MAX_LOGPROBS}]. Received: logprobs={self.logprobs!r}")
        return self


@dataclass
class CharLogprob:
    """A character, its log-probability under the model (temperature 1) and the likeliest alternatives."""

    char: str
    logprob: float
    top: list = field(default_factory=list)  # [(char, logprob)], most likely first


@dataclass
class Piece:
    """New text of one stream after a step (possibly empty on its finishing piece); in a session
    without characters, the ids drawn instead."""

    stream: Stream
    text: str
    logprobs: list | None
    finished: bool
    ids: list | None = None


class Stream:
    """A stream in a session: its spec, what it has shown, and how it ended."""

    def __init__(self, spec: StreamSpec, prime_ids: list):
        self.spec = spec
        self.prime_ids = prime_ids
        self.generated = 0
        self.parts: list = []
        self.finish_reason: str | None = None  # "length" | "stop" | "cancelled"
        self.prime_logprobs: list | None = None
        self.user = None
        self._filter = StopFilter(spec.stops)
        self._pending: list = []  # logprobs of characters held back by the stop filter
        self._rng = np.random.default_rng([spec.seed, spec.index, *([spec.attempt] if spec.attempt else [])])
        # a steered stream is drawn from its masked logits (constraints.py; in C by tg_run when it can)
        self._cursor = None if spec.steering is None else spec.steering.cursor(prime_ids, spec.length)
        temperature_only = spec.top_k is None and (spec.top_p is None or spec.top_p >= 1.0)
        self._plain = temperature_only and self._cursor is None
        self._steerable = temperature_only and self._cursor is not None  # the compiled run steers it (tg_run)
        self._fast = not spec.stops and spec.logprobs is None and self._cursor is None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def stop(self) -> str | None:
        return self._filter.stopped

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _push(self, char: str, entry, char_id: int = -1) -> tuple:
        """Feed one generated character (`char_id`: its id, for a steered stream); returns
        (shown text, its logprob entries or None)."""
        if self._fast:  # no stop strings, no logprobs: the character is shown at once
            self.generated += 1
            if self.spec.keep_text:
                self.parts.append(char)
            if self.generated >= self.spec.length:
                self.finish_reason = "length"
            return char, None
        self.generated += 1
        if entry is not None:
            self._pending.append(entry)
        complete = self._cursor is not None and self._cursor.advance(char_id, self.spec.length - self.generated)
        shown = self._filter.push(char)
        if self._filter.stopped is not None:
            self.finish_reason = "stop"
        elif self.generated >= self.spec.length or complete:
            self.finish_reason = "length" if self.generated >= self.spec.length else "stop"
            shown += self._filter.finish()
        return self._take(shown)

    def _take(self, shown: str) -> tuple:
        if self.spec.keep_text and shown:
            self.parts.append(shown)
        if self.spec.logprobs is None:
            return shown, None
        taken, self._pending = self._pending[: len(shown)], self._pending[len(shown):]
        return shown, taken
