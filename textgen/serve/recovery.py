"""How a model's engine loop ends its work: on shutdown, and after a failed turn, when it
restarts on the last good checkpoint. A part of `Scheduler` (serve/scheduler.py), kept apart
because it is about endings, not stepping; it runs on the engine thread only.

Recovery: an exception in a turn (a bug) is logged with its traceback; the jobs in flight end
with `EngineFailed` (a 500, or a final SSE error event), the sessions are dropped, and the loop
restarts on the last good checkpoint (`restart`, given by the registry), retrying every
`retry_seconds` until one loads; meanwhile `health()` names the failure. Test hook: the
environment variable TEXTGEN_SERVE_FAULT_AT_STEP=N, read once when the server starts, makes
each model's loop raise once after its N-th step (tests/test_serve_recovery.py uses it).
"""

from __future__ import annotations

import logging
import time
from collections import deque

from textgen.errors import CheckpointError, TextgenError
from textgen.serve import failures
from textgen.serve.jobs import Update

log = logging.getLogger("textgen.serve")


class Recovery:
    """Shutdown, failure and restart for `Scheduler`, which holds the state they act on."""

    def _shut_down(self, out: list) -> None:
        """End every stream with a final 'shutdown' update and refuse what waits."""
        with self._lock:
            queued, self._queue = list(self._queue), deque()
            self.queued = 0
        for job in [*queued, *self._admissions.clear()]:
            out.append((job, failures.ShuttingDown()))
        self.queued = 0
        for job in list(self._running.values()):
            updates = []
            for index, stream in enumerate(job.streams):
                if stream.finish_reason is None:
                    job.session.cancel(stream)
                    updates.append(Update(index, "", None, True, "shutdown"))
            out.append((job, updates))
        self._running.clear()
        self._paused.clear()
        self.prompt_left = 0
        self.active = sum(s.active for s in self._sessions)

    def _fail(self, out: list) -> None:
        """The turn raised: end the jobs in flight, drop the sessions, and restart."""
        in_flight = [*self._running.values(), *self._admissions.clear()]
        self.queued = len(self._queue)
        log.exception("The engine loop of %s failed; ending its %d requests in flight and restarting on %s",
                      self.name, len(in_flight), self.version.checkpoint)
        failure = failures.EngineFailed(self.name)
        out.extend((job, failure) for job in in_flight)
        self._running.clear()
        self._paused.clear()
        for session in self._sessions:
            try:
                session.close()
            except Exception:  # a broken session may fail to close; it is dropped either way
                log.warning("%s: a session of the failed loop did not close cleanly", self.name)
        self._sessions = []
        self.active = self.paused_streams = self.prompt_left = 0
        self.failed = "its engine loop failed and is restarting"
        self.restarts += 1
        self._retry_at = 0.0
        if self.metrics is not None:
            self.metrics.engine_restart(self.name)
        self._restart(out)

    def _restart(self, out: list) -> None:
        """Load the last good checkpoint into a new session; on failure refuse the queue and retry later."""
        try:
            if self.restart is None:
                raise CheckpointError("no way to reload this model")
            version = self.restart(self.version.checkpoint)
        except Exception as e:  # TextgenError/OSError: no good checkpoint now; anything else: a bug
            reason = str(e) if isinstance(e, (TextgenError, OSError)) else f"{type(e).__name__}: {e}"
            if reason != self.restart_failure:  # one line per distinct reason, not one per retry
                self.restart_failure = reason
                log.warning("%s: could not restart the engine: %s (retrying every %g s)", self.name, reason,
                            self.retry_seconds)
            self.failed = "its engine loop failed and could not restart yet"
            self._retry_at = time.monotonic() + self.retry_seconds
            with self._lock:
                queued, self._queue = list(self._queue), deque()
                self.queued = 0
            out.extend((job, failures.EngineRestarting(self.name)) for job in queued)
            return
        self._recovered(version)

    def _recovered(self, version) -> None:
        self.restart_failure = None
        self._sessions = []
        self._use(version)
        self._step_seconds = None
        self.failed = None
        log.info("%s: engine restarted on %s (step %d)", self.name, version.checkpoint, version.step)
