"""The OpenAI-compatible routes: models, completions, chat completions, and the native one.

Each route validates (Pydantic, then `requests.plan_*`), submits a Job to the model's
scheduler, and streams or gathers what comes back. Nothing here touches numpy.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from textgen.serve import chat, failures, line_rounds, sse
from textgen.serve.jobs import Job
from textgen.serve.line_rounds import LineRounds
from textgen.serve.requests import plan_completion, plan_lines, plan_native, steers
from textgen.serve.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    NativeRequest,
    NativeResponse,
)
from textgen.serve.views import View

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 503)}
router = APIRouter(responses=ERRORS)


def _state(request: Request):
    return request.app.state


async def _until_done(request: Request, job: Job, scheduler, metrics) -> list:
    """The job's updates once it is done; if the client leaves first, cancel it."""
    result = asyncio.ensure_future(job.result())

    async def client_left():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(client_left())
    try:
        done, _ = await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if result not in done:
        result.cancel()
        scheduler.cancel(job)
        metrics.disconnected()
        return None
    return result.result()


async def _plan(body, plan, *args):
    """`plan(body, *args)`, off the event loop when it compiles a constraint (CPU work)."""
    if steers(body):
        return await run_in_threadpool(plan, body, *args)
    return plan(body, *args)


async def _answer(request: Request, served, plan, view: View, stream: bool):
    state = _state(request)
    job = Job(plan.specs, asyncio.get_running_loop(), streamed=stream)
    served.scheduler.submit(job)
    view.step = served.scheduler.version.step
    if stream:
        return sse.stream(job, view, served.scheduler, state.settings, state.metrics)
    try:
        updates = await _until_done(request, job, served.scheduler, state.metrics)
    finally:
        job.release()
    if updates is None:  # nobody to answer; 499 is nginx's "client closed request", for the log
        return Response(status_code=499)
    if job.error is not None:
        raise job.error
    for update in updates:
        view.add(update)
    if any(u.finish_reason == "shutdown" for u in updates):
        raise failures.ShuttingDown()
    view.step = job.checkpoint_step
    return JSONResponse(view.response(job.prime_logprobs))


@router.get("/v1/models", response_model=ModelList, summary="The served runs")
async def list_models(request: Request):
    registry = _state(request).registry
    return {"object": "list", "data": [m.card() for m in registry.models.values() if m.ready]}


@router.get("/v1/models/{model_id}", response_model=ModelCard, summary="One served run")
async def get_model(model_id: str, request: Request):
    return _state(request).registry.get(model_id).card()


@router.post("/v1/completions", response_model=Completion, summary="Continue a prompt (OpenAI completions)",
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream=true"}})
async def completions(body: CompletionRequest, request: Request):
    state = _state(request)
    served = state.registry.get(body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    plan = await _plan(body, plan_completion, served, state.settings, prompts,
                       16 if body.max_tokens is None else body.max_tokens, body.logprobs, body.echo)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    view = View("text", served.name, plan, echo=body.echo, logprobs=body.logprobs, include_usage=include_usage)
    return await _answer(request, served, plan, view, body.stream)


@router.post("/v1/chat/completions", response_model=ChatCompletion, summary="Chat, through the server's template",
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream=true"}})
async def chat_completions(body: ChatCompletionRequest, request: Request):
    """The messages are rendered as plain text through the chat template (`--chat-template`),
    and the model continues after the assistant's label: a bridge for chat clients to a text model."""
    state = _state(request)
    served = state.registry.get(body.model)
    template = state.settings.chat_template
    prompt = chat.render(template, body.messages)
    if (body.stop is None or body.stop == []) and body.pattern() is None:  # a pattern decides where a reply ends
        body.stop = chat.default_stop(template)
    length = body.max_completion_tokens or body.max_tokens or 16
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    plan = await _plan(body, plan_completion, served, state.settings, [prompt], length, logprobs)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    view = View("chat", served.name, plan, logprobs=logprobs, include_usage=include_usage)
    return await _answer(request, served, plan, view, body.stream)


@router.post("/v1/textgen/generate", response_model=NativeResponse, summary="Native: per-choice settings",
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream=true"}})
async def generate(body: NativeRequest, request: Request):
    """What the OpenAI API cannot say: each sample has its own temperature, top-k, top-p,
    length, stop strings, seed (choice i draws from (its seed, i)), regex, banned words and label
    (a run trained on a labelled table; the request's `label` is every sample's default).
    Streams as SSE events `{"id", "samples": [{"index", "text", "finish_reason", "seed"}]}`,
    then one with `usage`. With `lines: N` (a run trained with --lines): N complete lines, as
    `textgen sample --lines N` writes them, and `lines` saying what was dropped and why; streamed,
    each round's kept lines as soon as they are judged."""
    state = _state(request)
    served = state.registry.get(body.model)
    if body.lines is not None:
        return await _lines(request, served, body)
    plan = await _plan(body, plan_native, served, state.settings)
    view = View("native", served.name, plan, logprobs=body.logprobs)
    return await _answer(request, served, plan, view, body.stream)


async def _lines(request: Request, served, body: NativeRequest):
    """Lines mode: rounds of one job each, every line judged as `textgen sample --lines` does,
    until `lines` are kept or the rounds run out; streamed (serve/line_rounds.py) or answered whole."""
    state = _state(request)
    plan = await _plan(body, plan_lines, served, state.settings)
    rounds = LineRounds(served, plan, state.settings.max_n)
    if body.stream:
        return line_rounds.stream(rounds, body.prompt, state.settings, state.metrics)
    kept = []
    while (job := rounds.next_job()) is not None:
        try:
            updates = await _until_done(request, job, served.scheduler, state.metrics)
        finally:
            job.release()
        if updates is None:
            return Response(status_code=499)
        kept += rounds.judge(job, updates)
    closing = rounds.closing(body.prompt)
    return JSONResponse({"id": rounds.id, "model": served.name, "samples": [rounds.sample(i, line)
                                                                             for i, line in enumerate(kept)],
                         **closing})


@router.get("/v1/textgen/runs", summary="Native: the served runs' configuration and validation curves")
async def runs(request: Request):
    registry = _state(request).registry
    return {"data": [m.details() for m in registry.models.values() if m.ready]}
