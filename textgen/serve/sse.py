"""Server-sent events for a job: `data: {json}` per chunk, keep-alive comments, `data: [DONE]`.

Text is sent as soon as it exists and then at most once per `flush_seconds` (the first
character never waits). A client that leaves cancels the job: Starlette cancels this
generator, and its `finally` takes the job's streams out of the batch before the next step.
A client that stays connected but stops reading is cancelled too: every write must finish
within `send_timeout` seconds, else the job's streams are freed and the response ends there.
(While it merely reads slowly, its streams pause in the scheduler, see serve/scheduler.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi.responses import StreamingResponse

from textgen.serve import envelopes, failures

log = logging.getLogger("textgen.serve")
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def event(body: dict) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


async def _events(job, view, scheduler, settings, metrics):
    try:
        if view.kind == "chat" or view.echo:
            while not job.started.is_set():  # queued or being admitted: keep the connection alive meanwhile
                try:
                    await asyncio.wait_for(job.started.wait(), timeout=settings.keepalive_seconds)
                except asyncio.TimeoutError:
                    yield KEEPALIVE
            if job.error is None:
                for body in view.opening(job.prime_logprobs):
                    yield event(body)
        async for updates in job.updates(settings.flush_seconds, settings.keepalive_seconds):
            if not updates:
                yield KEEPALIVE
                continue
            for body in view.chunks(updates):
                yield event(body)
            if any(u.finish_reason == "shutdown" for u in updates):
                job.error = failures.ShuttingDown("The server is shutting down; this stream ended early.")
        if job.error is not None:
            yield event(envelopes.to_api(job.error).body())
        else:
            view.step = job.checkpoint_step if job.checkpoint_step is not None else view.step
            for body in view.closing():
                yield event(body)
        yield DONE
    finally:
        if not job.done and not job.cancelled:
            scheduler.cancel(job)
            metrics.disconnected()
        job.release()


async def _within(seconds: float, awaitable) -> None:
    if hasattr(asyncio, "timeout"):  # Python 3.11+: a timer, no extra task per write
        async with asyncio.timeout(seconds):
            await awaitable
    else:
        await asyncio.wait_for(awaitable, seconds)


class TimedStream(StreamingResponse):
    """An SSE response whose writes time out after `send_timeout` seconds: then `cancel()` frees
    what the response was waiting for, and the response ends there."""

    def __init__(self, content, cancel, send_timeout: float, metrics):
        super().__init__(content, media_type="text/event-stream", headers=HEADERS)
        self.cancel, self.metrics, self.send_timeout = cancel, metrics, send_timeout

    async def stream_response(self, send) -> None:
        async def timed(message) -> None:
            await _within(self.send_timeout, send(message))

        try:
            await super().stream_response(timed)
        except asyncio.TimeoutError:  # the client stopped reading: free its streams, end the response
            self.cancel()
            self.metrics.send_timed_out()
            log.warning("A client did not read its stream for %g s (the send timeout): its request was cancelled",
                        self.send_timeout)
            await self.body_iterator.aclose()


def stream(job, view, scheduler, settings, metrics) -> StreamingResponse:
    """The SSE response of one job: a client that stops reading cancels it."""
    return TimedStream(_events(job, view, scheduler, settings, metrics), lambda: scheduler.cancel(job),
                       settings.send_timeout, metrics)
