"""A request as the asyncio side sees it: its stream specs going in, its pieces coming out.

The engine thread never touches a Job's asyncio objects: it hands batches of `Update`s to
`Outbox`, which moves them onto the event loop with one `call_soon_threadsafe` per batch
(however many requests got text in that step), so 64 streams do not mean 64 wake-ups.

Back-pressure: every Update carries `size`, an estimate of the bytes it holds until it is
sent (its text, and ~800 bytes a character with 5 logprob alternatives). The engine thread
adds what it makes to `produced`, the event loop what the client took to `taken` (taken from
the buffer, which happens once the previous chunk was written); `unsent` is the difference
and a `Ledger` keeps the server's total. The scheduler pauses a job whose unsent output
passes `limit` and resumes it once the client has read it down; a job over its limit flushes
at once instead of waiting for its next flush.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

UPDATE_BYTES = 128        # an Update object and its list slot
CHAR_BYTES = 8            # a character of text
ENTRY_BYTES = 200         # a CharLogprob without alternatives
ALTERNATIVE_BYTES = 120   # one (character, logprob) alternative of an entry


def _wake(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


@dataclass
class Update:
    """New text of one choice (from one engine step, or several merged)."""

    index: int
    text: str
    logprobs: list | None = None          # CharLogprob per character of `text`, when asked
    finished: bool = False
    finish_reason: str | None = None      # "length" | "stop" | "cancelled" | "shutdown"
    size: int = 0                         # estimated bytes held until sent (see the module docstring)


def char_bytes(spec) -> int:
    """Estimated bytes one generated character of stream `spec` holds until it is sent."""
    if spec.logprobs is None:
        return CHAR_BYTES
    return CHAR_BYTES + ENTRY_BYTES + ALTERNATIVE_BYTES * spec.logprobs


class Ledger:
    """The server's total of output made for clients and not yet taken by them (estimated bytes)."""

    def __init__(self, limit: int):
        self.limit, self.total = limit, 0
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.total += size

    @property
    def over(self) -> bool:
        return self.total > self.limit


@dataclass(eq=False)
class Job:
    """One request: `specs[i]` is choice i. Built by a route, admitted by the scheduler."""

    specs: list
    loop: asyncio.AbstractEventLoop
    submitted: float = field(default_factory=time.monotonic)
    streams: list = field(default_factory=list)      # engine thread only
    prime_logprobs: list = field(default_factory=list)  # per choice, set when admitted (echo + logprobs)
    checkpoint_step: int | None = None                # the weights it runs on, set when admitted
    session: object = None                            # the session its streams run in (engine thread)
    error: BaseException | None = None                # a failure after it was accepted
    first_text_at: float | None = None
    cancelled: bool = False
    limit: int = 0                                    # unsent bytes before its streams pause (0: none)
    ledger: Ledger | None = None                      # the server's total, when counted
    on_drained: Callable | None = None                # called (event loop) when a paused job was read down
    streamed: bool = True                             # False: the server gathers the whole answer (no pausing)

    def __post_init__(self):
        self._buffer: list[Update] = []
        self._event = asyncio.Event()
        self._remaining = len(self.specs)
        self._napping: asyncio.Future | None = None   # the pause between two flushes
        self.started = asyncio.Event()                # set when the scheduler admits it
        self.produced = 0                             # bytes made (engine thread)
        self.taken = 0                                # bytes the client took (event loop)
        self.paused = False                           # its streams are out of the batch (engine thread)
        self.paused_at = 0.0
        self._released = False
        # Characters admission will feed: each distinct (label lead, prompt) once, the lead counted too.
        self.prompt_chars = sum(len(lead) + len(prime) for lead, prime in
                                dict.fromkeys((tuple(s.lead), s.prime) for s in self.specs))

    @property
    def done(self) -> bool:
        return self._remaining == 0 or self.error is not None

    @property
    def unsent(self) -> int:
        return self.produced - self.taken

    def count(self, size: int) -> None:
        """Engine thread: `size` more bytes were made for this job."""
        self.produced += size
        if self.ledger is not None:
            self.ledger.add(size)

    def release(self) -> None:
        """Event loop: the response has ended; whatever is still unsent is dropped, now and later."""
        self._released = True
        self._took(self._buffer)
        self._buffer = []

    # ---- called on the event loop by Outbox
    def _deliver(self, updates: list[Update]) -> None:
        for update in updates:
            if update.finished:
                self._remaining -= 1
        if self._released:
            self._took(updates)
            return
        self._buffer.extend(updates)
        self._event.set()
        if self.done or (self.limit and self.unsent > self.limit):
            _wake(self._napping)

    def _took(self, items: list[Update]) -> None:
        size = sum(u.size for u in items)
        self.taken += size
        if self.ledger is not None and size:
            self.ledger.add(-size)
        if self.paused and self.on_drained is not None and self.unsent <= self.limit // 16:
            self.on_drained(self)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.started.set()
        self._event.set()
        _wake(self._napping)

    async def updates(self, interval: float, keepalive: float) -> AsyncIterator[list[Update]]:
        """Yield lists of updates, at most one list per `interval` seconds (the first at once).

        An empty list means nothing happened for `keepalive` seconds. Ends when every choice
        has finished or the job failed (then `self.error` is set).
        """
        while True:
            if not self._buffer and not self.done:
                try:
                    await asyncio.wait_for(self._event.wait(), timeout=keepalive)
                except asyncio.TimeoutError:
                    yield []
                    continue
            # Text exists: send it at once, then let `interval` pass before looking again (one
            # timer per flush: while text keeps coming, there is no event to wait for).
            self._event.clear()
            items, self._buffer = self._buffer, []
            self._took(items)
            if items:
                yield items
            if self.done and not self._buffer:
                return
            if interval > 0 and not self.done and not (self.limit and self.unsent > self.limit):
                await self._nap(interval)

    async def _nap(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the job ends meanwhile (its last text goes out at once)."""
        self._napping = self.loop.create_future()
        timer = self.loop.call_later(seconds, _wake, self._napping)
        try:
            await self._napping
        finally:
            timer.cancel()
            self._napping = None

    async def result(self) -> list[Update]:
        """Every update of the job once it is done (for non-streaming requests)."""
        collected: list[Update] = []
        async for items in self.updates(interval=0.0, keepalive=3600.0):
            collected.extend(items)
        return collected


class Outbox:
    """Moves updates from the engine thread to the event loop, one callback per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[Job, object]] = []
        self._scheduled = False

    def put(self, items: list[tuple[Job, object]]) -> None:
        """`items`: (job, list[Update]) or (job, exception) or (job, "started"). Engine thread."""
        if not items:
            return
        with self._lock:
            self._pending.extend(items)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._pending, self._scheduled = self._pending, [], False
        for job, what in items:
            if isinstance(what, BaseException):
                job._fail(what)
            elif what == "started":
                job.started.set()
            else:
                job._deliver(what)
