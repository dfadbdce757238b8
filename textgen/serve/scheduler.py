"""Continuous batching: one engine thread per model steps every active stream together.

Routes only `submit` a Job (or are refused with 429 when the FIFO queue is full) and read
its updates; this thread owns the sampling sessions. Between two steps it takes cancels
(a client left: its streams leave the batch before the next step), admits queued jobs while
`max_streams` allows (a job's choices join together), swaps to a new checkpoint's session
when the registry hands one over, and ends everything with a final event on shutdown.

Jobs admitted before a hot reload keep stepping on the session (weights) they started
with; that session is dropped once its last stream leaves.

With the compiled engine one call may run several steps (`SamplingSession.step(max_steps)`),
as many as fit in CALL_SECONDS at the step time measured so far, so that the Python around a
step (pieces, updates, the event loop's deliveries) is paid once per call. Anything that must
happen "at the next step" (a request waiting, a client that left, a new checkpoint, shutdown)
sets the sessions' interrupt flag, and the call ends after its current step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from textgen.errors import TextgenError
from textgen.serve import errors
from textgen.serve.jobs import Job, Outbox, Update

log = logging.getLogger("textgen.serve")

CALL_SECONDS = 0.03  # the engine thread's time per call of several steps (text is flushed every ~50 ms)
MAX_STEPS_PER_CALL = 16


@dataclass
class Version:
    """One loaded checkpoint of a run: its session and what /v1/models says about it."""

    session: object          # textgen.generation.session.SamplingSession
    step: int
    checkpoint: str          # the checkpoint directory's name
    state: dict              # the checkpoint's state.json (metrics history)


class Scheduler:
    """Owns one model's sessions and the batch; its `run` loop is the only caller of them."""

    def __init__(self, name: str, version: Version, max_streams: int, max_queue: int, outbox: Outbox,
                 metrics=None):
        self.name = name
        self.version = version
        self.max_streams, self.max_queue = max_streams, max_queue
        self.outbox, self.metrics = outbox, metrics
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Job] = deque()
        self._cancels: deque[Job] = deque()
        self._next_version: Version | None = None
        self._sessions: list = [version.session]   # the current one last; older ones drain
        self._running: dict[int, Job] = {}         # id(job) -> job, admitted and not finished
        self.closing = False                       # set from a signal handler: no lock taken there
        self._stopped = False
        self.active = 0                            # streams in the batch (all sessions)
        self.queued = 0
        self.steps = 0
        self._step_seconds = None                  # measured time of one step (moving average)
        self._interrupt = np.zeros(1, dtype=np.int32)  # ends a multi-step call after its current step
        version.session.interrupt = self._interrupt
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    # ----------------------------------------------------------------------------- event-loop side

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`; raises APIError 429 (queue full) or 503 (shutting down)."""
        if self.closing:
            raise errors.shutting_down()
        if len(job.specs) > self.max_streams:
            raise errors.APIError(400, f"A request may run at most {self.max_streams} choices at once "
                                  f"(--max-streams). Received: n={len(job.specs)}", param="n", code="invalid_value")
        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise errors.queue_full(retry_after=self._retry_after())
            self._queue.append(job)
            self.queued = len(self._queue)
            self._interrupt[0] = 1
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """The client left: free the job's streams before the next step."""
        if job.done or job.cancelled:
            return
        job.cancelled = True
        with self._lock:
            self._cancels.append(job)
            self._interrupt[0] = 1
            self._wake.notify()

    def swap(self, version: Version) -> None:
        """New requests run on `version` from the next step; running ones keep their session."""
        with self._lock:
            self._next_version = version
            self._interrupt[0] = 1
            self._wake.notify()

    def stop(self) -> None:
        self.closing = True
        with self._lock:
            self._stopped = True
            self._interrupt[0] = 1
            self._wake.notify()
        self._thread.join(timeout=5)

    def _retry_after(self) -> int:
        return 1 if self.steps == 0 else 2

    # ----------------------------------------------------------------------------- engine thread

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._has_work():
                        self._wake.wait(timeout=0.1)
                    if self._stopped:
                        for session in self._sessions:
                            session.close()
                        return
                    cancels, self._cancels = list(self._cancels), deque()
                    version, self._next_version = self._next_version, None
                    self._interrupt[0] = 0  # what it announced is being handled now
                out: list = []
                if version is not None:
                    self._use(version)
                for job in cancels:
                    self._cancel(job, out)
                if self.closing:
                    self._shut_down(out)
                else:
                    self._admit(out)
                    self._step(out)
                self.outbox.put(out)
        except Exception:  # a bug: say so and fail every job rather than hang its clients
            log.exception("Engine loop of %s stopped", self.name)
            self.closing = True
            failure = errors.APIError(500, "The engine loop failed (a bug; see the server log).",
                                      type="server_error", code="internal_error")
            self.outbox.put([(job, failure) for job in [*self._running.values(), *self._queue]])

    def _has_work(self) -> bool:
        return bool(self._stopped or self.active or self._cancels or self._next_version is not None
                    or (self._queue and (self.closing or self._fits_head())) or (self.closing and self._running))

    def _fits_head(self) -> bool:
        return bool(self._queue) and self.active + len(self._queue[0].specs) <= self.max_streams

    def _use(self, version: Version) -> None:
        self.version = version
        version.session.interrupt = self._interrupt
        self._sessions = self._drained([*self._sessions, version.session])
        log.info("%s: now serving %s (step %d)", self.name, version.checkpoint, version.step)

    def _cancel(self, job: Job, out: list) -> None:
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                self.queued = len(self._queue)
                return
        if self._running.pop(id(job), None) is None:
            return
        for stream in job.streams:
            if stream.finish_reason is None:
                job.session.cancel(stream)
        self.active = sum(s.active for s in self._sessions)

    def _admit(self, out: list) -> None:
        session = self.version.session
        while True:
            with self._lock:
                if not self._fits_head():
                    return
                job = self._queue.popleft()
                self.queued = len(self._queue)
            job.checkpoint_step, job.session = self.version.step, session
            try:
                for spec in job.specs:
                    stream = session.add(spec)
                    stream.user = (job, len(job.streams))
                    job.streams.append(stream)
            except TextgenError as e:  # the route validated already; this is the session's last word
                for stream in job.streams:
                    session.cancel(stream)
                out.append((job, errors.from_textgen_error(e)))
                continue
            job.prime_logprobs = [getattr(s, "prime_logprobs", None) for s in job.streams]
            self._running[id(job)] = job
            self.active = sum(s.active for s in self._sessions)
            out.append((job, "started"))

    def _steps_per_call(self) -> int:
        """As many steps as fit in CALL_SECONDS; one while a request waits or a shutdown runs."""
        if self._step_seconds is None or self.closing or self._queue or len(self._sessions) > 1:
            return 1
        return max(1, min(MAX_STEPS_PER_CALL, int(CALL_SECONDS / self._step_seconds)))

    def _step(self, out: list) -> None:
        stepped, steps = 0, 0  # characters drawn, steps run (several sessions: one step each)
        by_job: dict[int, tuple[Job, list]] = {}
        max_steps = self._steps_per_call()
        for session in self._sessions:
            if not session.active:
                continue
            streams = session.active
            start = time.perf_counter()
            pieces = session.step(max_steps)
            done = session.steps_done
            if done:
                seconds = (time.perf_counter() - start) / done
                self._step_seconds = seconds if self._step_seconds is None else 0.8 * self._step_seconds + 0.2 * seconds
            stepped, steps = stepped + streams * done, max(steps, done)
            for piece in pieces:
                job, index = piece.stream.user
                if piece.text and job.first_text_at is None:
                    job.first_text_at = time.monotonic()
                    if self.metrics is not None:
                        self.metrics.observe_ttfc(job.first_text_at - job.submitted)
                update = Update(index, piece.text, piece.logprobs, piece.finished, piece.stream.finish_reason)
                by_job.setdefault(id(job), (job, []))[1].append(update)
                if piece.finished and all(s.finish_reason is not None for s in job.streams):
                    self._running.pop(id(job), None)
        if len(self._sessions) > 1:
            self._sessions = self._drained(self._sessions)
        self.active = sum(s.active for s in self._sessions)
        if stepped:
            self.steps += steps
            if self.metrics is not None:
                self.metrics.engine_step(self.name, stepped // steps, steps)
        out.extend(by_job.values())

    @staticmethod
    def _drained(sessions: list) -> list:
        """Keep the newest session and the older ones that still have streams; close the rest."""
        keep = [s for s in sessions[:-1] if s.active] + [sessions[-1]]
        for session in sessions[:-1]:
            if not session.active:
                session.close()  # its worker thread, if it has one, ends here
        return keep

    def _shut_down(self, out: list) -> None:
        """End every stream with a final 'shutdown' update and refuse what waits in the queue."""
        with self._lock:
            queued, self._queue = list(self._queue), deque()
            self.queued = 0
        for job in queued:
            out.append((job, errors.shutting_down()))
        for job in list(self._running.values()):
            updates = []
            for index, stream in enumerate(job.streams):
                if stream.finish_reason is None:
                    job.session.cancel(stream)
                    updates.append(Update(index, "", None, True, "shutdown"))
            out.append((job, updates))
        self._running.clear()
        self.active = sum(s.active for s in self._sessions)
