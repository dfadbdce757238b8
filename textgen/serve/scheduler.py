"""Continuous batching: one engine thread per model steps every active stream together.

Routes only `submit` a Job (or are refused: queue full, shutting down, restarting) and read
its updates; this thread owns the sampling sessions. Each turn of its loop takes cancels (a
client left: its streams leave the batch before the next step), moves queued jobs into
admission, feeds their prompts for a slice (serve/admission.py), joins the jobs whose prompts
are fed while `max_streams` allows, swaps to a new checkpoint's session when the registry
hands one over, steps the batch, and ends everything with a final event on shutdown. It
raises nothing HTTP: its failures are serve/failures.py's, mapped to statuses in errors.py.

Back-pressure: a job whose client has not taken `max_unsent` bytes of its output (or any
stalled job while the server's total passes `max_buffered`) is paused: its streams leave the
batch keeping their rows (`SamplingSession.park`) and rejoin when the client has read, so its
text is the same as if it had never paused; for RESERVE_SECONDS its rows stay reserved, then
other jobs may take them. The send timeout (serve/sse.py) cancels a client that stops reading.
A non-streamed job never pauses (the server gathers its answer itself).

Jobs admitted before a hot reload keep stepping on the session (weights) they started
with; that session is dropped once its last stream leaves.

With the compiled engine one call may run several steps (`SamplingSession.step(max_steps)`),
as many as fit in CALL_SECONDS at the step time measured so far, so that the Python around a
step (pieces, updates, the event loop's deliveries) is paid once per call. Anything that must
happen "at the next step" (a request waiting, a client that left or read, a new checkpoint,
shutdown) sets the sessions' interrupt flag, and the call ends after its current step.

Recovery after a failed turn, and shutdown: serve/recovery.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from textgen.errors import ConfigError, TextgenError
from textgen.serve import failures
from textgen.serve.admission import PRIMING_CHARS, SHORT_PROMPT, Admission, Admissions
from textgen.serve.jobs import UPDATE_BYTES, Job, Outbox, Update, char_bytes
from textgen.serve.recovery import Recovery

log = logging.getLogger("textgen.serve")

CALL_SECONDS = 0.03  # the engine thread's time per call of several steps (text is flushed every ~50 ms)
MAX_STEPS_PER_CALL = 16
STALE_SECONDS = 10.0  # a loop that has not turned for this long does not step (health)
RESERVE_SECONDS = 0.25  # a paused job keeps its rows this long (a reader a flush behind gets them back)


@dataclass
class Version:
    """One loaded checkpoint of a run: its session and what /v1/models says about it."""

    session: object          # textgen.generation.session.SamplingSession
    step: int
    checkpoint: str          # the checkpoint directory's name
    state: dict              # the checkpoint's state.json (metrics history)


class Scheduler(Recovery):
    """Owns one model's sessions and the batch; its `run` loop is the only caller of them."""

    def __init__(self, name: str, version: Version, settings, outbox: Outbox, metrics=None, ledger=None,
                 restart=None, fault_at_step: int | None = None):
        self.name = name
        self.version = version
        self.max_streams, self.max_queue = settings.max_streams, settings.max_queue
        self.max_unsent, self.retry_seconds = settings.max_unsent, settings.reload_seconds
        self.outbox, self.metrics, self.ledger, self.restart = outbox, metrics, ledger, restart
        self._fault_at_step = fault_at_step
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Job] = deque()
        self._cancels: deque[Job] = deque()
        self._next_version: Version | None = None
        self._sessions: list = [version.session]   # the current one last; older ones drain
        self._admissions = Admissions()
        self._running: dict[int, Job] = {}         # id(job) -> job, in the batch or paused, not finished
        self._paused: dict[int, Job] = {}          # id(job) -> job whose streams are out of the batch
        self.closing = False                       # set from a signal handler: no lock taken there
        self._stopped = False
        self.failed: str | None = None             # why the loop is not stepping (None: it is)
        self._retry_at = 0.0
        self.restart_failure: str | None = None     # the last reason a restart failed (logged once)
        self.active = 0                            # streams in the batch (all sessions)
        self.paused_streams = 0
        self.queued = 0                            # requests not yet in the batch: queued or being admitted
        self.prompt_left = 0                       # prompt characters being fed
        self.steps = 0
        self.restarts = 0
        self.beat = time.monotonic()               # when the loop last turned
        self._step_seconds = None                  # measured time of one step (moving average)
        self._interrupt = np.zeros(1, dtype=np.int32)  # ends a multi-step call after its current step
        version.session.interrupt = self._interrupt
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    # ----------------------------------------------------------------------------- event-loop side

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`; raises QueueFull, ShuttingDown, EngineRestarting, or ConfigError (too many choices)."""
        if self.closing:
            raise failures.ShuttingDown()
        if self.failed is not None:
            raise failures.EngineRestarting(self.name)
        if len(job.specs) > self.max_streams:
            raise ConfigError(f"A request may run at most {self.max_streams} choices at once (--max-streams). "
                              f"Received: n={len(job.specs)}")
        # A streamed job pauses when its client falls behind; a whole answer is gathered by the server itself.
        job.limit = self.max_unsent if job.streamed else 0
        job.ledger, job.on_drained = self.ledger, self._on_drained
        with self._lock:
            if len(self._queue) + len(self._admissions) >= self.max_queue:  # both wait for room
                raise failures.QueueFull(retry_after=self._retry_after())
            self._queue.append(job)
            self._count_waiting()
            self._poke()

    def cancel(self, job: Job) -> None:
        """The client left (or stopped reading): free the job's streams before the next step."""
        if job.done or job.cancelled:
            return
        job.cancelled = True
        with self._lock:
            self._cancels.append(job)
            self._poke()

    def _on_drained(self, job: Job) -> None:
        """A paused job's client has read: the loop resumes it (`_resume`) at its next turn."""
        with self._lock:
            self._poke()

    def swap(self, version: Version) -> None:
        """New requests run on `version` from the next step; running ones keep their session."""
        with self._lock:
            self._next_version = version
            self._poke()

    def stop(self) -> None:
        self.closing = True
        with self._lock:
            self._stopped = True
            self._poke()
        self._thread.join(timeout=5)

    def health(self) -> str | None:
        """None while the loop steps; else why not, in a few words (no paths)."""
        if self.failed is not None:
            return self.failed
        if not self._thread.is_alive() and not self._stopped:
            return "its engine loop has stopped"
        idle = time.monotonic() - self.beat
        return f"its engine loop has not turned for {idle:.0f} s" if idle > STALE_SECONDS else None

    def _count_waiting(self) -> None:
        self.queued = len(self._queue) + len(self._admissions)

    def _poke(self) -> None:
        """With the lock held: end the current call after its step and wake the loop."""
        self._interrupt[0] = 1
        self._wake.notify()

    def _retry_after(self) -> int:
        return 1 if self.steps == 0 else 2

    # ----------------------------------------------------------------------------- engine thread

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._has_work():
                    self._wake.wait(timeout=0.1)
                    self.beat = time.monotonic()
                if self._stopped:
                    for session in self._sessions:
                        session.close()
                    return
                cancels, self._cancels = list(self._cancels), deque()
                version, self._next_version = self._next_version, None
                self._interrupt[0] = 0  # what it announced is being handled now
            self.beat = time.monotonic()
            out: list = []
            try:
                self._turn(version, cancels, out)
            except Exception:  # a bug: say so, end what was running, and start again on good weights
                self._fail(out)
            self.outbox.put(out)

    def _has_work(self) -> bool:
        return bool(self._stopped or self.active or self._cancels or self._next_version is not None
                    or (self.failed is not None and time.monotonic() >= self._retry_at)
                    or (self._queue and (self.closing or self._admissible() is not None))
                    or self._admissions.feeding or self._ready_fits() or self._paused_drained()
                    or (self.closing and (self._running or len(self._admissions))))

    def _admissible(self) -> Job | None:
        """The queued job to admit next: the head while the prompts being fed leave room for it; else
        the first short one (a short prompt passes a long one that waits for room). Lock held."""
        if self.failed is not None or not self._queue:
            return None
        head = self._queue[0]
        if not len(self._admissions) or self.prompt_left + head.prompt_chars <= PRIMING_CHARS:
            return head
        return next((job for job in self._queue if job.prompt_chars <= SHORT_PROMPT), None)

    def _ready_fits(self) -> bool:
        ready = self._admissions.ready()
        return bool(ready) and self._room() >= len(ready[0].job.specs)

    def _paused_drained(self) -> bool:
        return any(self._may_resume(job) for job in self._paused.values())

    def _turn(self, version: Version | None, cancels: list, out: list) -> None:
        if self.failed is not None:
            if version is not None:  # the registry loaded a new checkpoint meanwhile: start on it
                self._recovered(version)
            else:
                self._restart(out)
            if self.failed is not None:
                return
        elif version is not None:
            self._use(version)
        for job in cancels:
            self._cancel(job)
        if self.closing:
            self._shut_down(out)
            return
        self._admit(out)
        fed = self._admissions.feed()
        self.prompt_left = self._admissions.left
        if fed and self.metrics is not None:
            self.metrics.prompt_fed(self.name, fed)
        self._resume()
        self._join(out)
        self._step(out)
        self._pause_stalled()
        self.paused_streams = sum(s.parked for s in self._sessions)
        if self._fault_at_step is not None and self.steps >= self._fault_at_step:
            self._fault_at_step = None
            raise RuntimeError(f"injected fault after step {self.steps} (TEXTGEN_SERVE_FAULT_AT_STEP, a test hook)")

    def _use(self, version: Version) -> None:
        self.version = version
        version.session.interrupt = self._interrupt
        self._sessions = self._keep_sessions([*self._sessions, version.session])
        log.info("%s: now serving %s (step %d)", self.name, version.checkpoint, version.step)

    def _cancel(self, job: Job) -> None:
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                self._count_waiting()
                return
        if self._admissions.remove(job) is not None:
            self.prompt_left = self._admissions.left
            self._count_waiting()
            return
        self._paused.pop(id(job), None)
        if self._running.pop(id(job), None) is None:
            return
        for stream in job.streams:
            if stream.finish_reason is None:
                job.session.cancel(stream)
        self.active = sum(s.active for s in self._sessions)

    def _admit(self, out: list) -> None:
        """Queued jobs into admission while the prompts being fed leave room."""
        while True:
            with self._lock:
                job = self._admissible()
            if job is None:
                return
            session = self.version.session
            try:
                primings = session.prepare(job.specs)
            except TextgenError as e:  # the route validated already; this is the session's last word
                primings = None
                out.append((job, e))
            with self._lock:  # out of the queue and into admission at once: max_queue counts it throughout
                self._queue.remove(job)
                if primings is not None:
                    job.checkpoint_step, job.session = self.version.step, session
                    self._admissions.add(Admission(job, session, primings))
                self._count_waiting()
            self.prompt_left = self._admissions.left

    def _join(self, out: list) -> None:
        """Jobs whose prompts are fed join the batch, in arrival order, while their choices fit."""
        for admission in self._admissions.ready():
            job = admission.job
            if self._room() < len(job.specs):
                return
            self._admissions.remove(job)
            for index, (spec, primed) in enumerate(zip(job.specs, admission.primings)):
                stream = admission.session.add(spec, primed)
                stream.user = (job, index, char_bytes(spec))
                job.streams.append(stream)
            job.prime_logprobs = [s.prime_logprobs for s in job.streams]
            self._running[id(job)] = job
            self._count_waiting()
            self.active = sum(s.active for s in self._sessions)
            out.append((job, "started"))

    def _steps_per_call(self) -> int:
        """As many steps as fit in CALL_SECONDS; one while a request waits for room or a shutdown runs."""
        if (self._step_seconds is None or self.closing or self._queue or self._admissions.ready()
                or len(self._sessions) > 1):
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
                job, index, per_char = piece.stream.user
                if piece.text and job.first_text_at is None:
                    job.first_text_at = time.monotonic()
                    if self.metrics is not None:
                        self.metrics.observe_ttfc(job.first_text_at - job.submitted)
                update = Update(index, piece.text, piece.logprobs, piece.finished, piece.stream.finish_reason,
                                UPDATE_BYTES + per_char * len(piece.text))
                job.count(update.size)
                by_job.setdefault(id(job), (job, []))[1].append(update)
                if piece.finished and all(s.finish_reason is not None for s in job.streams):
                    self._running.pop(id(job), None)
        if len(self._sessions) > 1:
            self._sessions = self._keep_sessions(self._sessions)
        self.active = sum(s.active for s in self._sessions)
        if stepped:
            self.steps += steps
            if self.metrics is not None:
                self.metrics.engine_step(self.name, stepped // steps, steps)
        out.extend(by_job.values())

    # ----------------------------------------------------------------------------- back-pressure

    def _room(self) -> int:
        """Rows a joining job may take: those not stepping and not held for a job paused only just now
        (a client that reads keeps its rows through a short pause; one that stalls gives them up)."""
        now = time.monotonic()
        held = sum(sum(s.finish_reason is None for s in job.streams) for job in self._paused.values()
                   if now - job.paused_at < RESERVE_SECONDS)
        return self.max_streams - self.active - held

    def _stalled(self, job: Job) -> bool:
        if not job.limit:
            return False
        over_total = self.ledger is not None and self.ledger.over
        return job.unsent > job.limit or (over_total and job.unsent > job.limit // 16)

    def _may_resume(self, job: Job) -> bool:
        live = sum(s.finish_reason is None for s in job.streams)
        return job.unsent <= job.limit // 16 and self.active + live <= self.max_streams

    def _pause_stalled(self) -> None:
        """Jobs whose clients have not taken their output leave the batch, keeping their rows."""
        for job in list(self._running.values()):
            if job.paused or not self._stalled(job):
                continue
            job.paused, job.paused_at = True, time.monotonic()
            job.session.park(*[s for s in job.streams if s.finish_reason is None])
            self._paused[id(job)] = job
        self.active = sum(s.active for s in self._sessions)

    def _resume(self) -> None:
        for job in list(self._paused.values()):
            if self._may_resume(job):
                job.session.unpark(*[s for s in job.streams if s.finish_reason is None])
                job.paused = False
                del self._paused[id(job)]
                self.active = sum(s.active for s in self._sessions)

    def _keep_sessions(self, sessions: list) -> list:
        """Keep the newest session and the older ones still in use; close the rest."""
        used = {id(a.session) for a in self._admissions.jobs.values()}
        keep = [s for s in sessions[:-1] if s.active or s.parked or id(s) in used] + [sessions[-1]]
        for session in sessions[:-1]:
            if session not in keep:
                session.close()  # its worker thread, if it has one, ends here
        return keep
