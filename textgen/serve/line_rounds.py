"""Lines mode of the native endpoint: rounds of jobs, each line judged as `textgen sample --lines`
judges it (generation/lines.py), answered whole or streamed.

A round is one Job of the picker's next specs; when it is done its lines are judged in index
order, and a streamed answer sends the lines it kept at once, as `{"id", "samples": [{"index",
"text", "finish_reason": "stop", "seed"}]}` events (index: the kept line's place, 0, 1, ...), then
one event with `checkpoint_step`, `usage` and `lines` (what was kept and dropped, and why), then
`data: [DONE]`. No line kept at all is a 422 (`no_line_kept`): the status of a whole answer, or an
error event in a stream. A client that leaves, or stops reading for the send timeout, cancels the
round in flight.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from textgen.serve import envelopes, failures, sse
from textgen.serve.envelopes import APIError
from textgen.serve.jobs import Job

log = logging.getLogger("textgen.serve")


class LineRounds:
    """The rounds of one lines request over a served model (`plan`: requests.LinesPlan)."""

    def __init__(self, served, plan, most: int):
        self.served, self.plan, self.most = served, plan, most
        self.generated = 0  # characters generated, kept or not (usage)
        self.step = served.scheduler.version.step
        self.job: Job | None = None
        self.id = f"gen-{uuid.uuid4().hex[:24]}"

    def next_job(self) -> Job | None:
        """The next round, submitted; None once enough lines are kept or the rounds ran out."""
        sample, picker = self.plan.sample, self.plan.picker
        specs = picker.round_specs(sample.max_tokens, sample.temperature, self.plan.seed, sample.top_k, sample.top_p,
                                   most=self.most)
        if not specs:
            return None
        self.job = Job([spec.validate() for spec in specs], asyncio.get_running_loop(), streamed=False)
        self.served.scheduler.submit(self.job)
        return self.job

    def judge(self, job: Job, updates: list) -> list[str]:
        """Judge a finished round's lines; the lines it kept."""
        if job.error is not None:
            raise job.error
        if any(u.finish_reason == "shutdown" for u in updates):
            raise failures.ShuttingDown()
        texts, finish = [""] * len(job.specs), [None] * len(job.specs)
        for update in updates:
            texts[update.index] += update.text
            finish[update.index] = update.finish_reason if update.finished else finish[update.index]
        self.generated += sum(map(len, texts))
        before = len(self.plan.picker.result.lines)
        for text, reason in zip(texts, finish):
            self.plan.picker.judge(text, reason)
        self.step = job.checkpoint_step if job.checkpoint_step is not None else self.step
        return self.plan.picker.result.lines[before:]

    def cancel(self) -> bool:
        """Free the round in flight (the client left or stopped reading); whether there was one."""
        if self.job is None or self.job.done or self.job.cancelled:
            return False
        self.served.scheduler.cancel(self.job)
        return True

    def sample(self, index: int, line: str) -> dict:
        return {"index": index, "text": line, "finish_reason": "stop", "seed": self.plan.seed, "logprobs": None}

    def closing(self, prompt: str) -> dict:
        """`checkpoint_step`, `usage` and the `lines` report; no line kept is a 422."""
        result = self.plan.picker.result
        if result.kept == 0:  # valid, but nothing could be kept: as textgen sample --lines, an error
            said = result.report(length="max_tokens", must_include="must_include").removeprefix("lines: ")
            raise APIError(422, f"No line was kept: {said}", param="lines", code="no_line_kept")
        return {"checkpoint_step": self.step,
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": self.generated,
                          "total_tokens": len(prompt) + self.generated},
                "lines": {"kept": len(result.lines), "sampled": result.sampled, "dropped": dict(result.dropped),
                          "report": result.report()}}


async def _events(rounds: LineRounds, prompt: str, keepalive: float, metrics):
    kept = 0
    try:
        while (job := rounds.next_job()) is not None:
            result = asyncio.ensure_future(job.result())
            try:
                while not (await asyncio.wait({result}, timeout=keepalive))[0]:
                    yield sse.KEEPALIVE
            finally:
                if not result.done():
                    result.cancel()
                job.release()
            lines = rounds.judge(job, result.result())
            if lines:
                yield sse.event({"id": rounds.id, "samples": [rounds.sample(kept + i, line)
                                                              for i, line in enumerate(lines)]})
                kept += len(lines)
        yield sse.event({"id": rounds.id, **rounds.closing(prompt)})
    except Exception as error:  # the answer has begun: an error is its last event, as in every stream
        answer = envelopes.to_api(error)
        if answer.status >= 500 and not isinstance(error, failures.ServeFailure):
            log.exception("Lines mode failed")
        yield sse.event(answer.body())
    finally:
        if rounds.cancel():  # the client left mid-round (Starlette closes this generator)
            metrics.disconnected()
    yield sse.DONE


def stream(rounds: LineRounds, prompt: str, settings, metrics):
    """The SSE answer (its writes time out as every stream's do)."""
    return sse.TimedStream(_events(rounds, prompt, settings.keepalive_seconds, metrics), rounds.cancel,
                           settings.send_timeout, metrics)
