"""Server-sent events for a job: `data: {json}` per chunk, keep-alive comments, `data: [DONE]`.

Text is sent as soon as it exists and then at most once per `flush_seconds` (the first
character never waits). A client that leaves cancels the job: Starlette cancels this
generator, and its `finally` takes the job's streams out of the batch before the next step.
"""

from __future__ import annotations

import asyncio
import json

from fastapi.responses import StreamingResponse

from textgen.serve import errors

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def event(body: dict) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


async def _events(job, view, scheduler, settings, metrics):
    try:
        if view.kind == "chat" or view.echo:
            while not job.started.is_set():  # queued: keep the connection alive meanwhile
                try:
                    await asyncio.wait_for(job.started.wait(), timeout=settings.keepalive_seconds)
                except asyncio.TimeoutError:
                    yield KEEPALIVE
            for body in view.opening(job.prime_logprobs):
                yield event(body)
        async for updates in job.updates(settings.flush_seconds, settings.keepalive_seconds):
            if not updates:
                yield KEEPALIVE
                continue
            for body in view.chunks(updates):
                yield event(body)
            if any(u.finish_reason == "shutdown" for u in updates):
                job.error = errors.APIError(503, "The server is shutting down; this stream ended early.",
                                            type="service_unavailable", code="shutting_down")
        if job.error is not None:
            failure = job.error if isinstance(job.error, errors.APIError) else errors.APIError(
                500, "Internal error.", type="server_error", code="internal_error")
            yield event(failure.body())
        else:
            view.step = job.checkpoint_step if job.checkpoint_step is not None else view.step
            for body in view.closing():
                yield event(body)
        yield DONE
    finally:
        if not job.done:
            scheduler.cancel(job)
            metrics.disconnected()


def stream(job, view, scheduler, settings, metrics) -> StreamingResponse:
    return StreamingResponse(_events(job, view, scheduler, settings, metrics), media_type="text/event-stream",
                             headers=HEADERS)
