"""What stands between the network and the routes: the Host check, the API key, the body limit, the access log.

`Gate` runs before anything reads a request: a `Host` that is not a loopback name, the bound
address or an `--allowed-host` gets 400 (a web page that rebinds its DNS name to 127.0.0.1
still sends its own name), and without the key every route but the public ones gets 401
before one byte of the body is read. It also puts the Content-Security-Policy and the other
browser headers on every answer. `BodyLimit` then refuses bodies over the limit with 413
before they are read whole, whether or not they announce their length.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import sys
import time

from textgen.serve.envelopes import APIError

#: Routes anyone may GET: the page, its files, the docs page (its data, /openapi.json, needs the key) and /health.
PUBLIC = ("/", "/health", "/favicon.ico", "/docs")
PUBLIC_PREFIXES = ("/static/",)
LOOPBACK_NAMES = ("localhost",)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")

#: The playground loads only its own files and talks only to this server; nothing may frame it.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
BROWSER_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                   (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


async def answer(send, error: APIError, extra: list | None = None) -> None:
    """Send `error` as the OpenAI envelope straight to the ASGI `send`."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in error.headers.items()] + (extra or [])
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower case: `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_allowed(name: str, bound: str, extra: tuple) -> bool:
    """Loopback names and addresses, the address the server is bound to, and the names in `extra`
    (`*` allows any). Bound to every interface, any IP literal is the machine itself: allowed."""
    if name in LOOPBACK_NAMES or name == bound.lower() or "*" in extra or name in {e.lower() for e in extra}:
        return True
    address = _ip(name)
    return address is not None and (address.is_loopback or bound in WILDCARD_HOSTS)


def key_matches(authorization: str, key: str) -> APIError | None:
    """None when `Authorization: Bearer <key>` matches, else the 401 to answer."""
    scheme, _, given = authorization.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization:
        return APIError(401, "Missing API key: send the header 'Authorization: Bearer <key>'.",
                        code="invalid_api_key", headers=challenge)
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        return APIError(401, "Incorrect API key provided.", code="invalid_api_key", headers=challenge)
    return None


def is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


class Gate:
    """ASGI middleware: the Host check and the API key, from the headers alone, and the browser headers."""

    def __init__(self, app, settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or []) + BROWSER_HEADERS}
            await send(message)

        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host_name(host), self.settings.host, tuple(self.settings.allowed_hosts)):
            shown = host[:100].encode("unicode_escape").decode("ascii")
            return await answer(send_with_headers, APIError(
                400, f"Host {shown!r} is not served here: only loopback names and the address the server listens "
                     "on are accepted (start it with --allowed-host NAME to add a name).", code="invalid_host"))
        key = self.settings.api_key
        if key is not None and not is_public(scope.get("path", "")):
            refused = key_matches(headers.get(b"authorization", b"").decode("latin-1"), key)
            if refused is not None:
                return await answer(send_with_headers, refused)
        await self.app(scope, receive, send_with_headers)


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
        too_large = APIError(413, f"The request body is larger than {self.limit:,} bytes.", code="request_too_large")
        close = [(b"connection", b"close")]
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await answer(send, too_large, close)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await answer(send, too_large, close)
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


KNOWN_PATHS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
               "/v1/textgen/generate", "/v1/textgen/runs", "/docs", "/openapi.json")


def log_field(text: str, limit: int = 200) -> str:
    """`text` safe inside one quoted access-log field: printable ASCII, with quotes, backslashes,
    control and other characters escaped, at most `limit` characters of it."""
    shown = text[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return shown + ("..." if len(text) > limit else "")


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
                client = log_field(str((scope.get("client") or ("-", 0))[0]), 64)
                seconds = time.monotonic() - started
                print(f'{client} "{log_field(scope.get("method", "-"), 16)} {log_field(path)}" {status} '
                      f'{seconds * 1000:.1f}ms', file=sys.stderr, flush=True)
