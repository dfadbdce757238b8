"""`create_app(settings)`: the FastAPI application of `textgen serve`, with no module globals.

State lives on `app.state`: settings, metrics, and the registry of served runs (each with
its scheduler). Models load in the background after start, so `/health` answers at once
(503 until every run is loaded, then 200).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from textgen.serve import api, envelopes
from textgen.serve.jobs import Outbox
from textgen.serve.metrics import Metrics
from textgen.serve.registry import Registry
from textgen.serve.security import AccessLog, BodyLimit, Gate

STATIC = Path(__file__).parent / "static"
DESCRIPTION = """An OpenAI-compatible API over textgen's character-level models: one token is one character.

Every concurrent request shares one step of the model (continuous batching); choice i of a
request draws from (seed, i) only, so a seeded request gives the same text however busy the
server is. Errors use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`."""


def create_app(settings) -> FastAPI:
    """The application for `settings` (raises CheckpointError for an unknown run name)."""
    metrics = Metrics()
    outbox = Outbox(None)
    registry = Registry(settings, outbox, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        outbox.loop = asyncio.get_running_loop()
        registry.start()
        try:
            yield
        finally:
            registry.close()

    from textgen import __version__

    # No Swagger or ReDoc (they load from a CDN): /docs is a page of our own that reads /openapi.json.
    app = FastAPI(title="textgen serve", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.settings, app.state.metrics, app.state.registry = settings, metrics, registry
    envelopes.install(app)
    app.include_router(api.router)  # the key is checked by Gate, before the body is read

    @app.get("/health", summary="200 when every model steps, else 503 naming those that do not", tags=["service"])
    async def health(request: Request):
        """Model names and a few words on each one that does not step (loading, restarting...): never a
        path. With the API key (when one is set), `detail` adds the log's words for each model."""
        from textgen.serve.security import key_matches

        waiting = {name: reason for name, reason in registry.health().items() if reason is not None}
        if not waiting:
            return {"status": "ok", "models": list(registry.models)}
        loading = all(not registry.models[name].ready for name in waiting)
        body = {"status": "loading" if loading else "unavailable", "waiting": waiting}
        key = settings.api_key
        if key is not None and key_matches(request.headers.get("authorization", ""), key) is None:
            body["detail"] = registry.detail()
        return JSONResponse(body, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"],
             summary="Prometheus text format")
    async def prometheus():
        return PlainTextResponse(metrics.render(registry.models), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "docs.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Outermost last: the access log sees every answer, CORS headers go on errors too; the Host
    # and the key are checked from the headers before BodyLimit reads any of the body.
    app.add_middleware(BodyLimit, limit=settings.max_body)
    app.add_middleware(Gate, settings=settings)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    app.add_middleware(AccessLog, metrics=metrics, quiet=settings.quiet)
    return app
