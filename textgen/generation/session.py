"""The sampling session: streams with their own options that join and leave a running batch.

One `SamplingSession` owns an engine state whose rows are the live streams. `add` feeds a
stream's prime and gives it a row; `step` draws one character for every live stream,
advances the engine once for all of them, and returns what each stream may show; a stream
that finished (its length, a stop string) or was cancelled leaves at once. `textgen sample`,
the server's scheduler and the exporters' checks all sample through it.

For a caller that must keep a batch moving (the server): `prepare` returns the primes of some
specs as `Priming`s (one per distinct prime, fed in slices by `Priming.feed` between steps,
scored in the same pass when the prime's logprobs are asked), and `add(spec, primed)` then
joins at no cost. `park` takes streams out of the batch while keeping their place (state row,
logits, draws) and `unpark` puts them back: a parked stream writes the same text as one that
never left.

Determinism: stream (seed, index) draws its uniforms from its own generator, and its prime
is fed through a state of one row, so its text does not depend on which other streams share
the batch. With the compiled step that holds bit for bit (each output is summed in one fixed
order whatever the batch). With the numpy step only float rounding can differ between batch
heights (BLAS may sum a row's dot products in another order for another matrix height): a
character changes only when a uniform lands within about 1e-7 of a boundary of the
cumulative distribution.

The draw: temperature-only streams are drawn by the compiled `tg_sample` when the engine is
compiled (the same arithmetic as `sampling.sample`, in C); streams with top-k or top-p, and
every stream of a numpy engine, by `sampling.sample`; steered streams (`spec.steering`) from their
masked logits (one `sample` call per set of sampling options: each row is drawn on its own, so
the batch changes no row's draw), with the uniforms the compiled draw took for them. A compiled
run of several steps (`step(max_steps)`) draws temperature-only steered streams in C as well
(tg_run masks each row by its automaton, with the same arithmetic), and each stream's cursor
then follows the ids it drew.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from textgen.corpus import Vocabulary
from textgen.errors import ConfigError
from textgen.generation import kernel
from textgen.generation.constraints import allowed_rows, masked_sample
from textgen.generation.draw import log_softmax, sample
from textgen.generation.engine import LSTMEngine
from textgen.generation.kernel_steer import steer_rows
from textgen.generation.priming import Priming, Scores
from textgen.generation.streams import (  # noqa: F401  (the session's public names live in streams.py)
    MAX_LOGPROBS,
    CharLogprob,
    Piece,
    Stream,
    StreamSpec,
    random_seed,
)

UNIFORM_BLOCK = 256
RUN_STEPS = 16  # steps per call of the compiled engine when nobody can join mid-way (`sample`, `generate`)
PRIMED_CACHE = 8  # finished primes kept for the next stream with the same prime


class SamplingSession:
    """Live streams over one engine; see the module docstring. Not thread-safe: one thread
    calls add, cancel and step."""

    def __init__(self, engine: LSTMEngine, chars: Sequence[str] | None, start_id: int = 0, capacity: int = 8):
        self.engine = engine
        # Without characters (`chars=None`) the session works in ids: primes are `spec.prime_ids`
        # and each piece carries the ids drawn (no stop strings, no logprobs, no text).
        self.ids_only = chars is None
        self.vocab = None if self.ids_only else Vocabulary(chars)
        self.chars = ("",) * engine.vocab_size if self.ids_only else self.vocab.chars
        self.start_id = start_id
        self.lead: tuple = ()  # ids fed before every prime without a `spec.lead` (`tables.label_lead`; not scored);
        # with no lead at all, an empty prime feeds start_id alone
        self.streams: list = []  # row r of the state belongs to streams[r]
        self.state = None
        self._filtered = 0  # live streams with top-k or top-p (sampled by numpy, not the compiled draw)
        self.steps_done = 0  # steps the last `step` call ran
        # Set to nonzero from any thread to end a `step(max_steps)` call after its current step.
        self.interrupt = np.zeros(1, dtype=np.int32)
        self._compiled = getattr(engine, "compiled", None) is not None
        self._draw = None  # the compiled draw bound to this batch's buffers (when compiled)
        self._grow(max(1, capacity))
        self._primed: dict = {}  # fed ids -> a finished Priming: shared by streams with one prime
        self._parked: dict = {}  # stream -> its rows of every batch array, while out of the batch

    @property
    def active(self) -> int:
        return len(self.streams)

    def _grow(self, capacity: int) -> None:
        """(Re)allocate the batch for `capacity` streams, keeping the live rows."""
        old = self.state
        n = old.rows if old is not None else 0
        state = self.engine.initial_state(capacity)
        # per row (moved with the rows): logits, uniforms, how many of them were used, temperature.
        # The logits are the state's own buffer where it has one: the engine writes them in place.
        logits = getattr(state, "logits", None)
        if not (isinstance(logits, np.ndarray) and logits.shape == (capacity, self.engine.vocab_size)
                and logits.dtype == np.float32):
            logits = np.zeros((capacity, self.engine.vocab_size), np.float32)
        buffers = (logits, np.zeros((capacity, UNIFORM_BLOCK)), np.zeros(capacity, dtype=np.int64), np.zeros(capacity))
        if old is not None:
            for new, former in zip((*state.arrays, *buffers), (*old.arrays, *self._rows)):
                new[:n] = former[:n]
            _close(old)
        state.rows = n
        self.state, self._rows = state, buffers
        self.logits, self.uniforms, self.used, self.temps = buffers
        self.drawn, self.ids = np.zeros(capacity), np.zeros(capacity, dtype=np.int64)  # this step's uniforms and ids
        self._chunk = np.zeros(0, dtype=np.int64)  # ids of `_run_steps`
        if self._compiled:
            self._draw = kernel.Draw(self.engine.compiled.lib, self.logits, self.temps, self.uniforms, self.used,
                                     self.drawn, self.ids)

    def prepare(self, specs: Sequence[StreamSpec]) -> list:
        """Validate `specs` and return each one's `Priming`, not yet fed: specs with one prime
        share one (scored with the most alternatives any of them asks for), and a prime this
        session finished recently comes back done."""
        wanted: dict = {}
        keys = []
        for spec in specs:
            spec.validate()
            ids = self._prime_ids(spec)
            lead = tuple(spec.lead) or self.lead  # a stream's own lead (the server's per-request label)
            key = (*lead, *ids) if lead else tuple(ids or [self.start_id])
            score = (spec.logprobs or 0) if spec.prime_logprobs else None
            before = wanted[key][1] if key in wanted else None
            if before is not None:
                score = before if score is None else max(score, before)
            wanted[key] = (ids, score)
            keys.append(key)
        primed = {}
        for key, (ids, score) in wanted.items():
            cached = self._primed.get(key)
            primed[key] = cached if cached is not None and cached.serves(score) else \
                Priming(self.engine, ids, key, None if self.ids_only else self.chars, score)
        return [primed[key] for key in keys]

    def add(self, spec: StreamSpec, primed: Priming | None = None) -> Stream:
        """Validate `spec`, feed its prime and give it a row: it joins at the next step.
        `primed`: its prime from `prepare`, already fed (then adding costs no step)."""
        if primed is None:
            [primed] = self.prepare([spec])
            primed.feed()
        elif not primed.done:
            raise ValueError("add(spec, primed) takes a Priming that has been fed to its end")
        spec.validate()
        stream = Stream(spec, primed.ids)
        if spec.prime_logprobs:
            stream.prime_logprobs = primed.scores if primed.scores is not None else Scores(self.chars, [], 0)
        self._remember(primed)
        self._append(stream, [source[0] for source in primed.state.arrays], primed.logits[0],
                     stream._rng.random(UNIFORM_BLOCK), 0, spec.temperature)
        self._filtered += not stream._plain
        return stream

    def _remember(self, primed: Priming) -> None:
        key = tuple(primed.fed.tolist())
        if self._primed.get(key) is primed:
            return
        if len(self._primed) >= PRIMED_CACHE:
            self._primed.pop(next(iter(self._primed)))
        self._primed[key] = primed

    def _append(self, stream: Stream, state_rows: list, *rows) -> None:
        """Give `stream` the next row: its state rows, then logits, uniforms, used and temperature."""
        n = self.state.rows
        if n == len(self.logits):
            self._grow(2 * n)
        for target, source in zip((*self.state.arrays, *self._rows), (*state_rows, *rows)):
            target[n] = source
        self.state.rows = n + 1
        self.streams.append(stream)

    def _prime_ids(self, spec: StreamSpec) -> list:
        if spec.prime_ids is None:
            if self.ids_only and spec.prime:
                raise ConfigError("A session without characters takes its primes as prime_ids.")
            return [] if self.ids_only else self.vocab.encode(spec.prime).tolist()
        if spec.prime or (self.ids_only and (spec.stops or spec.logprobs is not None)):
            raise ConfigError("prime_ids go without prime text, and a session without characters without "
                              "stop strings or logprobs.")
        ids = [int(i) for i in spec.prime_ids]
        if any(not 0 <= i < self.engine.vocab_size for i in ids):
            raise ConfigError(f"prime_ids must be in [0, {self.engine.vocab_size}). Received: {ids!r}")
        return ids

    def _entry(self, row: np.ndarray, chosen: int, k: int) -> CharLogprob:
        top = []
        if k:
            best = np.argpartition(-row, min(k, len(row) - 1))[:k]
            best = best[np.argsort(-row[best], kind="stable")]
            top = [(self.chars[i], float(row[i])) for i in best]
        return CharLogprob(self.chars[chosen], float(row[chosen]), top)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def park(self, *streams: Stream) -> None:
        """Take live `streams` out of the batch, keeping their rows aside until `unpark`."""
        leaving = {id(s) for s in streams}
        rows = [i for i, s in enumerate(self.streams) if id(s) in leaving]
        for r in rows:
            self._parked[self.streams[r]] = [array[r].copy() for array in (*self.state.arrays, *self._rows)]
        self._keep([i for i, s in enumerate(self.streams) if id(s) not in leaving])

    def unpark(self, *streams: Stream) -> None:
        """Put parked `streams` back in the batch: they go on from where they left."""
        for stream in streams:
            saved = self._parked.pop(stream, None)
            if saved is not None:
                count = len(self.state.arrays)
                self._append(stream, saved[:count], *saved[count:])
                self._filtered += not stream._plain

    def cancel(self, stream: Stream) -> None:
        """Take `stream` out of the batch now (if it is still in it, or parked)."""
        if stream.finish_reason is None:
            stream.finish_reason = "cancelled"
        self._parked.pop(stream, None)
        if stream in self.streams:
            self._keep([i for i, s in enumerate(self.streams) if s is not stream])

    def _keep(self, rows: list) -> None:
        """Keep only `rows` of the batch, in order."""
        if len(rows) == len(self.streams):
            return
        index = np.asarray(rows, dtype=np.intp)
        k = len(rows)
        for array in (*self.state.arrays, *self._rows):
            array[:k] = array[index]
        self.state.rows = k
        self.streams = [self.streams[i] for i in rows]
        self._filtered = sum(not s._plain for s in self.streams)

    def _refill(self, n: int) -> None:
        """New uniforms for the rows that used their last one (every 256 steps per stream)."""
        for r in np.flatnonzero(self.used[:n] >= UNIFORM_BLOCK):
            self.uniforms[r] = self.streams[r]._rng.random(UNIFORM_BLOCK)
            self.used[r] = 0

    def _sample(self, n: int) -> np.ndarray:
        """This step's id of every live stream (each from the stream's next uniform)."""
        logits, ids = self.logits[:n], self.ids[:n]
        if self._draw is not None:  # the compiled draw: temperature-only streams (all, unless some filter)
            empty = self._draw(n)
            u = self.drawn[:n]
        else:
            u = self.drawn[:n]
            u[:] = self.uniforms[np.arange(n), self.used[:n]]
            self.used[:n] += 1
            empty = True
        if self._draw is None or self._filtered:
            groups: dict = {}
            steered: dict = {}  # rows drawn from their masked logits (constraints.py), by sampling options
            for r, s in enumerate(self.streams):
                if s._cursor is not None:
                    steered.setdefault((s.spec.temperature, s.spec.top_k, s.spec.top_p), []).append(r)
                elif self._draw is None or not s._plain:
                    groups.setdefault((s.spec.temperature, s.spec.top_k, s.spec.top_p), []).append(r)
            for (temperature, top_k, top_p), rows in steered.items():
                streams = [self.streams[r] for r in rows]
                allowed = allowed_rows([s._cursor for s in streams], [s.spec.length - s.generated for s in streams])
                ids[rows] = masked_sample(logits[rows], allowed, temperature, u[rows], top_k, top_p)
            for (temperature, top_k, top_p), rows in groups.items():
                if len(rows) == n:
                    ids[:] = sample(logits, temperature, u, top_k, top_p)
                else:
                    ids[rows] = sample(logits[rows], temperature, u[rows], top_k, top_p)
        if empty:
            self._refill(n)
        return ids

    def step(self, max_steps: int = 1) -> list:
        """One character for every live stream; returns the pieces with something to report.

        `max_steps` > 1 lets a compiled engine run up to that many steps in one call when every
        stream is temperature-only without logprobs (a piece may then hold several characters;
        setting `interrupt[0]` from another thread ends the call after its current step, so a
        stream can join or leave at the next step). The text is the same. `steps_done` says how
        many steps the call ran.
        """
        n = len(self.streams)
        self.steps_done = 0
        if n == 0:
            return []
        if max_steps > 1 and self._draw is not None and self._runs_alone():
            return self._run_steps(n, max_steps)
        logits, ids = self.logits[:n], self._sample(n)
        self.steps_done = 1
        pieces, keep = [], []
        chars = self.chars
        for r, (s, i) in enumerate(zip(self.streams, ids.tolist())):
            entry = None
            if s.spec.logprobs is not None:
                entry = self._entry(log_softmax(logits[r]), i, s.spec.logprobs)
            text, entries = s._push(chars[i], entry, i)
            if self.ids_only:
                pieces.append(Piece(s, "", None, s.finish_reason is not None, [i]))
            elif text or s.finish_reason is not None:
                pieces.append(Piece(s, text, entries, s.finish_reason is not None))
            if s.finish_reason is None:
                keep.append(r)
        if len(keep) < n:
            ids = ids[keep]
            self._keep(keep)
        if keep:
            logits = self.engine.step(ids, self.state)
            if logits.base is not self.logits:
                self.logits[: len(keep)] = logits
        return pieces

    def _runs_alone(self) -> bool:
        """Whether the compiled engine can draw and step on its own: temperature-only streams
        whose logprobs nobody asked for, on a state stepped by the compiled step."""
        return ((not self._filtered or (not self.ids_only and all(s._plain or s._steerable for s in self.streams)))
                and getattr(self.state, "runner", None) is not None
                and self.logits is self.state.logits
                and all(s.spec.logprobs is None for s in self.streams))

    def _run_steps(self, n: int, max_steps: int) -> list:
        """Up to `max_steps` steps in one call of the compiled engine (see `step`)."""
        left = min(s.spec.length - s.generated for s in self.streams)
        steps = max(1, min(max_steps, left))
        if len(self._chunk) < steps * n:
            self._chunk = np.zeros(steps * n, dtype=np.int64)
        steer, records = None, []
        if self._filtered:  # steered rows: tg_run draws them from the ids their automaton admits
            records = [None if s._cursor is None else (  # held until the run returns: C reads their arrays
                s._cursor.steering.automaton.kernel_tables,
                -1 if s._cursor.steering.end_id is None else s._cursor.steering.end_id,
                s._cursor.state, s.spec.length - s.generated) for s in self.streams]
            steer = steer_rows(records)
        done = self.state.runner.run(n, steps, self._draw, self._chunk, self.interrupt, steer)
        self.steps_done = done
        columns = self._chunk[: done * n].reshape(done, n).T.tolist()
        self._refill(n)
        pieces, keep = [], []
        chars = self.chars
        for r, (s, ids) in enumerate(zip(self.streams, columns)):
            if self.ids_only:
                ids = ids[: s.spec.length - s.generated]
                s.generated += len(ids)
                if s.generated >= s.spec.length:
                    s.finish_reason = "length"
                pieces.append(Piece(s, "", None, s.finish_reason is not None, ids))
                if s.finish_reason is None:
                    keep.append(r)
                continue
            if s._fast:
                text = "".join([chars[i] for i in ids[: s.spec.length - s.generated]])
                s.generated += len(text)
                if s.spec.keep_text:
                    s.parts.append(text)
                if s.generated >= s.spec.length:
                    s.finish_reason = "length"
            else:
                shown = []
                for i in ids:  # a steered stream's cursor follows the same moves tg_run made
                    shown.append(s._push(chars[i], None, i)[0])
                    if s.finish_reason is not None:
                        break
                text = "".join(shown)
            if text or s.finish_reason is not None:
                pieces.append(Piece(s, text, None, s.finish_reason is not None))
            if s.finish_reason is None:
                keep.append(r)
        if len(keep) < n:
            self._keep(keep)
        return pieces

    def run(self, specs: Sequence[StreamSpec], max_steps: int = 1) -> Iterator[list]:
        """Add `specs` and step until all of them finish; yields each `step(max_steps)`'s pieces."""
        streams = [self.add(spec) for spec in specs]
        while any(s.finish_reason is None for s in streams):
            yield self.step(max_steps)

    def close(self) -> None:
        for stream in [*self.streams, *self._parked]:
            self.cancel(stream)
        for primed in self._primed.values():
            primed.close()
        self._primed.clear()
        _close(self.state)


def _close(state) -> None:
    """Stop a state's worker thread, if it has one (engines in tests may not)."""
    close = getattr(state, "close", None)
    if close is not None:
        close()
