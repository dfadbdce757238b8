"""What stands between the network and the routes: the API key, the body limit, the access log.

The key guards every route except `/health` and the page (its files are public; the page
asks for the key and sends it like any client). Bodies over the limit are refused with 413
before they are read whole, whether or not they announce their length.
"""

from __future__ import annotations

import hmac
import sys
import time

from fastapi import Request

from textgen.serve.errors import APIError

PUBLIC = ("/", "/health", "/favicon.ico")


async def require_key(request: Request) -> None:
    """FastAPI dependency: 401 unless `Authorization: Bearer <key>` matches (when a key is set)."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise APIError(401, "Missing API key: send the header 'Authorization: Bearer <key>'.",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: 413 in the OpenAI envelope for bodies over `limit` bytes.

    The body is read here (at most `limit` bytes are held) and replayed to the app, so a body
    without a Content-Length is refused as soon as it passes the limit, before any route runs.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await self._refuse(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        import json

        body = json.dumps(APIError(413, f"The request body is larger than {self.limit:,} bytes.",
                                   code="request_too_large").body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


KNOWN_PATHS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
               "/v1/textgen/generate", "/v1/textgen/runs", "/docs", "/openapi.json")


class AccessLog:
    """ASGI middleware: one line per request on stderr (unless quiet) and the request counters."""

    def __init__(self, app, metrics, quiet: bool):
        self.app, self.metrics, self.quiet = app, metrics, quiet

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = 500

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            path = scope.get("path", "")
            label = path if path in KNOWN_PATHS else ("/v1/models/{id}" if path.startswith("/v1/models/") else
                                                      "/static" if path.startswith("/static/") else "other")
            self.metrics.request(label, status)
            if not self.quiet:
                client = scope.get("client") or ("-", 0)
                seconds = time.monotonic() - started
                shown = path[:200].encode("unicode_escape").decode("ascii") + ("..." if len(path) > 200 else "")
                print(f'{client[0]} "{scope.get("method", "-")} {shown}" {status} {seconds * 1000:.1f}ms',
                      file=sys.stderr, flush=True)
