"""Batches of (inputs, targets) read from the memory-mapped ids, backend-neutral numpy.

Training uses contiguous streams (truncated back-propagation through time): the training
split is cut into `batch_size` streams and step k of an epoch gives every stream its k-th
segment of `seq_len` characters, so the LSTM state carried from one batch to the next is
the state of the preceding text. Every position is a target. Each epoch starts the streams
at a different offset in [0, seq_len) drawn from (seed, epoch), so an epoch's batches are a
pure function of (seed, epoch, step): resuming needs only those three numbers.

Documents (`textgen.documents`) are streamed the same way: a stream runs on across the
boundary symbol between two documents, and its state is not zeroed there. Zeroing the state
at a position inside a segment would need a per-step mask, which the fused (cuDNN) LSTM does
not take; instead the model sees the boundary before every document and learns to start
afresh after it, as it learns any other context switch.
"""

from __future__ import annotations

import numpy as np

from textgen.errors import CorpusError, positive_int


class StreamBatches:
    """The batch for (epoch, step) over ids[start:end], as int32 arrays (B, T)."""

    def __init__(self, ids: np.ndarray, start: int, end: int, batch_size: int, seq_len: int,
                 seed: int = 0):
        positive_int("batch_size", batch_size)
        positive_int("seq_len", seq_len)
        self.ids = ids
        self.start, self.end = int(start), int(end)
        self.batch_size, self.seq_len, self.seed = int(batch_size), int(seq_len), int(seed)
        length = self.end - self.start
        if length < seq_len + 1:
            raise CorpusError(
                f"The training text is shorter than --seq-len + 1 = {seq_len + 1} characters. "
                f"Received: {length} training characters (use a longer corpus or a smaller --seq-len)"
            )
        # Room for the per-epoch offset: streams never read past `end`.
        usable = length - 1 - (seq_len - 1 if length - 1 >= 2 * seq_len else 0)
        self.stream_len = usable // batch_size
        self.steps_per_epoch = self.stream_len // seq_len
        if self.steps_per_epoch < 1:
            raise CorpusError(
                f"The training text ({length} characters) is too short for --batch-size "
                f"{batch_size} x --seq-len {seq_len}; it needs at least "
                f"{batch_size * seq_len + 1} characters. Reduce --batch-size or --seq-len."
            )
        self._max_offset = (length - 1) - batch_size * self.stream_len

    @property
    def chars_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def offset(self, epoch: int) -> int:
        if self._max_offset <= 0:
            return 0
        rng = np.random.default_rng([self.seed, epoch])
        return int(rng.integers(0, min(self.seq_len, self._max_offset + 1)))

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(step)
        base = (self.start + self.offset(epoch) + step * self.seq_len
                + np.arange(self.batch_size) * self.stream_len)
        index = base[:, None] + np.arange(self.seq_len + 1)
        chunk = np.asarray(self.ids[index], dtype=np.int32)
        return chunk[:, :-1], chunk[:, 1:]


def scoring_windows(num_predictions: int, window: int, burn_in: int) -> list:
    """Cut `num_predictions` target positions into windows with a warm-up prefix.

    Returns (window_start, window_stop, owned_start) per window, in prediction positions:
    the model runs over [window_start, window_stop) from a zero state and scores only
    positions >= owned_start. The first window starts at the text's beginning; the others
    first read the `burn_in` characters before their own `window` positions, so every
    scored character is predicted from at least `burn_in` characters of true context (all
    of them in the first window), and no state runs longer than `burn_in + window`.
    """
    window = max(1, window)
    windows = []
    for owned in range(0, num_predictions, window):
        start = max(0, owned - burn_in)
        windows.append((start, min(num_predictions, owned + window), owned))
    return windows
