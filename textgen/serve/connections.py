"""Connection guards below the app: how many connections, and how long a client may take to send a request.

uvicorn's h11 protocol bounds the size of a request's headers (h11's 16 KB) and closes a
keep-alive connection that stays idle, but it waits forever for headers or a body that
trickle in a byte at a time, and accepts any number of connections (its `limit_concurrency`
answers 503 only once a request's headers are complete). `guarded_protocol(settings)` is the
h11 protocol with three more rules:

- a connection beyond `max_connections` is answered 503 and closed as soon as it is accepted;
- a request's headers must be complete within `header_timeout` seconds of the connection (or
  of the end of the previous response on a kept-alive one): else 408 and the connection closes;
- its body must be complete within `body_timeout` seconds of its headers: else it closes, and
  the route waiting for the body sees the client gone;
- a connection's kernel send buffer is fixed at `SEND_BUFFER` bytes: left to autotune, Linux
  lets it grow to 4 MB, so a client that stops reading took megabytes of output (made, and
  held by the kernel) before the server's own back-pressure (`max_unsent`) could see it.
"""

from __future__ import annotations

import json
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from textgen.serve.envelopes import APIError

SEND_BUFFER = 131_072  # bytes; Linux doubles it for its bookkeeping


def _raw_response(status: str, error: APIError) -> bytes:
    body = json.dumps(error.body()).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def guarded_protocol(settings) -> type:
    """An H11Protocol class enforcing `settings.max_connections`, `header_timeout` and `body_timeout`."""
    busy = _raw_response("503 Service Unavailable", APIError(
        503, f"The server has {settings.max_connections} connections open (--max-connections); retry shortly.",
        type="service_unavailable", code="too_many_connections"))
    too_slow = _raw_response("408 Request Timeout", APIError(
        408, f"The request's headers did not arrive within {settings.header_timeout:g} s.", code="request_timeout"))

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._timer, self._phase = None, None
            raw = transport.get_extra_info("socket")
            if raw is not None:
                try:
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                except OSError:  # a transport without a real socket (tests, other platforms)
                    pass
            if len(self.connections) > settings.max_connections:
                transport.write(busy)
                transport.close()
                return
            self._follow()

        def connection_lost(self, exc) -> None:
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def _follow(self) -> None:
            """Arm the timer of the part of a request now awaited (once per part), or none."""
            if self.transport.is_closing():
                return self._cancel()
            state = self.conn.their_state
            phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
            if phase == self._phase:
                return
            self._cancel()
            self._phase = phase
            if phase is not None:
                seconds = settings.header_timeout if phase == "headers" else settings.body_timeout
                self._timer = self.loop.call_later(seconds, self._expired, phase)

        def _cancel(self) -> None:
            if getattr(self, "_timer", None) is not None:
                self._timer.cancel()
            self._timer, self._phase = None, None

        def _expired(self, phase: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if phase == "headers" and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(too_slow)
            self.transport.close()

    return GuardedH11Protocol
