"""Admission: a job's way from the queue into the batch, its prompts fed a slice at a time.

A job leaves the FIFO queue as soon as the prompts being fed on its model leave room for its
own (PRIMING_CHARS characters; a job alone always goes; a short prompt may pass a long one that
waits for room). Its primes become `Priming`s of the
session it will run on, one per distinct prompt, shared by its choices. Between two batch
calls the engine thread feeds them in round-robin chunks of PRIME_CHUNK characters for at
most PRIME_SECONDS, so a long prompt slows the batch but never stops it, and a short prompt
that arrives behind long ones is fed in the first round. A job whose primes are all fed
joins the batch (in arrival order) once its choices fit. Engine thread only.
"""

from __future__ import annotations

import time
from collections import deque

PRIME_SECONDS = 0.01     # feeding time between two batch calls
PRIME_CHUNK = 32         # characters fed to one prime before the next job's turn
PRIMING_CHARS = 200_000  # prompt characters being fed at once on one model (scored ones hold ~70 bytes each)
SHORT_PROMPT = 1_000     # a job with no more prompt than this may pass a long one waiting for room


class Admission:
    """A job whose primes are being fed: one `Priming` per spec (shared where primes are equal)."""

    def __init__(self, job, session, primings: list):
        self.job, self.session, self.primings = job, session, primings
        self.pending = deque(p for p in dict.fromkeys(primings) if not p.done)

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def left(self) -> int:
        return sum(p.left for p in self.pending)


class Admissions:
    """The jobs of one model between the queue and the batch, in arrival order."""

    def __init__(self):
        self.jobs: dict[int, Admission] = {}   # id(job) -> admission, in arrival order
        self._turns: deque = deque()           # admissions with primes to feed, round robin

    def __len__(self) -> int:
        return len(self.jobs)

    @property
    def feeding(self) -> bool:
        return bool(self._turns)

    @property
    def left(self) -> int:
        """Prompt characters still to feed."""
        return sum(a.left for a in self._turns)

    def add(self, admission: Admission) -> None:
        self.jobs[id(admission.job)] = admission
        if not admission.done:
            self._turns.append(admission)

    def remove(self, job) -> Admission | None:
        admission = self.jobs.pop(id(job), None)
        if admission is not None and admission in self._turns:
            self._turns.remove(admission)
        return admission

    def feed(self, seconds: float = PRIME_SECONDS) -> int:
        """Feed primes round robin for about `seconds`; returns the characters fed."""
        deadline = time.perf_counter() + seconds
        fed = 0
        while self._turns:
            admission = self._turns.popleft()
            primed = admission.pending[0]
            fed += primed.feed(PRIME_CHUNK)
            if primed.done:
                admission.pending.popleft()
            if admission.pending:
                self._turns.append(admission)
            if time.perf_counter() >= deadline:
                break
        return fed

    def ready(self) -> list:
        """Admissions whose primes are all fed, in arrival order."""
        return [a for a in self.jobs.values() if a.done]

    def clear(self) -> list:
        """Forget every admission; returns their jobs."""
        jobs = [a.job for a in self.jobs.values()]
        self.jobs.clear()
        self._turns.clear()
        return jobs
