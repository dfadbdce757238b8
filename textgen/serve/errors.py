"""Every failure an HTTP client can see, as the OpenAI error envelope.

`{"error": {"message", "type", "param", "code"}}` with the status of the table in the
README: 400 invalid values (never FastAPI's 422), 401 key, 404 unknown model or route,
413 body too large, 429 queue full (with Retry-After), 503 loading or shutting down.
One handler per exception family, installed by `install(app)`; routes just raise.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from textgen.errors import TextgenError

log = logging.getLogger("textgen.serve")


class APIError(Exception):
    """An error answered as the OpenAI envelope with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found_model(model: str, served: list[str]) -> APIError:
    shown = model if len(model) <= 100 else model[:100] + "..."
    return APIError(404, f"The model {shown!r} does not exist. Served models: {', '.join(served) or 'none'}.",
                    param="model", code="model_not_found")


def loading() -> APIError:
    return APIError(503, "The server is still loading its models; retry in a moment.",
                    type="service_unavailable", code="loading", headers={"Retry-After": "1"})


def queue_full(retry_after: int) -> APIError:
    return APIError(429, "Too many requests are waiting for this model (the queue is full); retry later.",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": str(retry_after)})


def shutting_down() -> APIError:
    return APIError(503, "The server is shutting down.", type="service_unavailable", code="shutting_down")


_RECEIVED = re.compile(r"Received: ([A-Za-z_][A-Za-z0-9_.\[\]]*)=")


def from_textgen_error(error: TextgenError) -> APIError:
    """A library error (bad temperature, characters outside the vocabulary...) as a 400."""
    found = _RECEIVED.search(str(error))
    return APIError(400, str(error), param=found.group(1) if found else None, code="invalid_value")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _param(loc) -> str | None:
    parts = [p for p in loc if p != "body"]
    # Unions report which branch failed (`str`, `list[str]`...): the parameter is what the user named.
    name = ""
    for p in parts:
        if isinstance(p, int):
            name += f"[{p}]"
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", str(p)):
            name += ("." if name else "") + str(p)
        else:
            break
    return name or None


def from_validation_error(error: RequestValidationError) -> APIError:
    """FastAPI's 422 as OpenAI's 400, naming the parameter and the received value."""
    errors = error.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    kind, param = first.get("type", ""), _param(first.get("loc", ()))
    if kind == "json_invalid" or (kind == "model_attributes_type" and not param):
        return APIError(400, "We could not parse the JSON body of your request: expected a JSON object.",
                        code="invalid_json")
    if kind == "missing":
        return APIError(400, f"Missing required parameter: {param!r}.", param=param, code="missing_required_parameter")
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}. Received: {param}="
                        f"{_short(first.get('input'))}", param=param, code="unknown_parameter")
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return APIError(400, f"Invalid value for {param!r}: {message}. Received: {param}={_short(first.get('input'))}",
                    param=param, code="invalid_value")


def respond(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install(app: FastAPI) -> None:
    """Route every exception family to the envelope; anything else is a logged 500."""

    @app.exception_handler(APIError)
    async def _api(request: Request, error: APIError):
        return respond(error)

    @app.exception_handler(TextgenError)
    async def _textgen(request: Request, error: TextgenError):
        return respond(from_textgen_error(error))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError):
        return respond(from_validation_error(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            message = f"Unknown URL: {request.method} {request.url.path}"
            return respond(APIError(404, message, code="unknown_url"))
        if error.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
            return respond(APIError(405, message, code="method_not_allowed", headers=error.headers))
        return respond(APIError(error.status_code, str(error.detail), code=None, headers=error.headers))

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception):
        log.exception("Internal error on %s %s", request.method, request.url.path)
        return respond(APIError(500, "Internal server error (a bug; the server log has the traceback).",
                                type="server_error", code="internal_error"))
