"""A prime fed in slices: a stream's starting state built a few characters at a time, so that a
long prompt never holds up a running batch, and the prime's own scores from the same pass.

`Priming` owns a state of one row. `feed(budget)` steps it through up to `budget` more
characters; once `done`, `state` and `logits` are what a stream starting after that prime
begins from, exactly as if the prime had been fed in one go (the same steps on the same
one-row state, so the text does not depend on how the prime was sliced). When asked,
`scores` holds each prime character's log-probability given the characters before it, and its
likeliest alternatives: the logits after character j score character j + 1, so scoring costs
no extra step. Streams that start from one prime share one Priming: the prime runs once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from textgen.generation.draw import log_softmax
from textgen.generation.streams import CharLogprob


class Scores(Sequence):
    """A prime's scores kept as arrays (a few dozen bytes a character); item i is its
    `CharLogprob`, built when read, and item 0 is None (the first character has no context)."""

    def __init__(self, chars: Sequence[str], ids: Sequence[int], k: int):
        count = len(ids)
        self.chars, self.ids, self.k = chars, np.asarray(ids, dtype=np.intp), k
        self.logprob = np.zeros(count)
        self.top_ids = np.zeros((count, k), dtype=np.int32)
        self.top_logprob = np.zeros((count, k))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"Scores index out of range. Received: {i}")
        if i == 0:
            return None
        chars = self.chars
        top = [(chars[t], v) for t, v in zip(self.top_ids[i].tolist(), self.top_logprob[i].tolist())]
        return CharLogprob(chars[self.ids[i]], float(self.logprob[i]), top)

    def write(self, start: int, logits: np.ndarray) -> None:
        """Score characters start + 1 ... from `logits`, the rows after characters start ... ."""
        rows = log_softmax(logits)
        at = np.arange(start + 1, start + 1 + len(rows))
        self.logprob[at] = rows[np.arange(len(rows)), self.ids[at]]
        if self.k:
            best = np.argpartition(-rows, min(self.k, rows.shape[1] - 1), axis=-1)[:, : self.k]
            values = np.take_along_axis(rows, best, axis=-1)
            order = np.argsort(-values, axis=-1, kind="stable")
            self.top_ids[at] = np.take_along_axis(best, order, axis=-1)
            self.top_logprob[at] = np.take_along_axis(values, order, axis=-1)


class Priming:
    """The prime `ids` being fed to a one-row state (`fed`: what is fed, the prime or the start
    id); `score`: also score the prime with that many alternatives (None: no scores)."""

    def __init__(self, engine, ids: Sequence[int], fed: Sequence[int], chars: Sequence[str] | None,
                 score: int | None = None):
        self.engine = engine
        self.ids = list(ids)
        self.fed = np.asarray(fed, dtype=np.intp)
        self.position = 0
        self.state = engine.initial_state(1, threads=1)
        self.logits: np.ndarray | None = None  # (1, vocab) once done
        self.scores = None if score is None else Scores(chars, self.ids, min(score, engine.vocab_size))
        self._one = np.zeros(1, dtype=np.intp)

    @property
    def done(self) -> bool:
        return self.position == len(self.fed)

    @property
    def left(self) -> int:
        """Characters still to feed."""
        return len(self.fed) - self.position

    def feed(self, budget: int | None = None) -> int:
        """Feed up to `budget` more characters (all that are left by default); returns how many."""
        count = self.left if budget is None else min(self.left, max(0, budget))
        if count == 0:
            return 0
        start, scoring = self.position, self.scores is not None and len(self.ids) > 1
        rows = np.empty((count, self.engine.vocab_size), np.float32) if scoring else None
        logits = None
        for j in range(count):
            self._one[0] = self.fed[start + j]
            logits = self.engine.step(self._one, self.state)
            if rows is not None:
                rows[j] = logits[0]
        self.position += count
        if rows is not None:
            # fed[p] is prime character p - lead (a label's lead comes first); the logits after it score
            # the next prime character, and the last character's score nothing
            lead = len(self.fed) - len(self.ids)
            first, last = max(start, lead), min(start + count, lead + len(self.ids) - 1)
            if last > first:
                self.scores.write(first - lead, rows[first - start:last - start])
        if self.done:
            self.logits = np.array(logits, dtype=np.float32)
        return count

    def serves(self, score: int | None) -> bool:
        """Whether this (done) priming can start a stream that wants `score` alternatives scored."""
        return score is None or (self.scores is not None and self.scores.k >= min(score, self.engine.vocab_size))

    def close(self) -> None:
        close = getattr(self.state, "close", None)
        if close is not None:
            close()
