"""Every failure an HTTP client can see, as the OpenAI error envelope.

`{"error": {"message", "type", "param", "code"}}` with the status of the table in the
README: 400 invalid values (never FastAPI's 422), 401 key, 404 unknown model or route,
413 body too large, 429 queue full (with Retry-After), 500 an engine that failed mid-request,
503 loading, restarting or shutting down. The scheduler and the registry raise their own
failures (serve/failures.py); `to_api` is the one place that turns any exception into an
`APIError`, used by the handlers `install(app)` adds and by a stream's final error event.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from textgen.errors import TextgenError
from textgen.serve import failures

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


def _failure(error: failures.ServeFailure) -> APIError:
    message = str(error)
    if isinstance(error, failures.ModelNotFound):
        return APIError(404, message, param="model", code="model_not_found")
    if isinstance(error, failures.QueueFull):
        return APIError(429, message, type="rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(error.retry_after)})
    if isinstance(error, failures.EngineFailed):
        return APIError(500, message, type="server_error", code="engine_failed")
    code = {failures.ModelLoading: "loading", failures.EngineRestarting: "engine_restarting",
            failures.ShuttingDown: "shutting_down"}.get(type(error), "unavailable")
    headers = {"Retry-After": "1"} if code in ("loading", "engine_restarting") else None
    return APIError(503, message, type="service_unavailable", code=code, headers=headers)


def to_api(error: BaseException) -> APIError:
    """Any exception as the APIError a client sees: the one map from domain errors to HTTP."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, failures.ServeFailure):
        return _failure(error)
    if isinstance(error, TextgenError):
        return from_textgen_error(error)
    return APIError(500, "Internal server error (a bug; the server log has the traceback).", type="server_error",
                    code="internal_error")


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
        return respond(to_api(error))

    @app.exception_handler(failures.ServeFailure)
    async def _failure_handler(request: Request, error: failures.ServeFailure):
        return respond(to_api(error))

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
        return respond(to_api(error))
