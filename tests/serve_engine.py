"""For the tests of the server's engine side (back-pressure, prompts, recovery).

`settings_server`: `textgen serve` with settings its command line does not offer (the engine
bounds: send_timeout, max_unsent, max_buffered, max_prompt_total), a real server subprocess on
a free 127.0.0.1 port running the same `serve(Settings(...))` the CLI calls, driven like
helpers.Server. `send_request` / `read_response`: a raw-socket client that sends a
request and reads nothing until told to (its receive window kept small)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import Server, free_port

LAUNCH = ("import json, sys; from textgen.serve.settings import Settings; from textgen.serve.server import serve; "
          "serve(Settings(**json.loads(sys.argv[1])))")


def settings_server(checkpoints: Path, env: dict | None = None, **settings) -> Server:
    """A started server for `Settings(checkpoints=..., port=<free>, **settings)`, ready (health 200)."""
    server = Server.__new__(Server)
    server.port = free_port()
    server.url = f"http://127.0.0.1:{server.port}"
    server.log_path = checkpoints.parent / f"serve-{server.port}.log"
    server._log = open(server.log_path, "w", encoding="utf-8")
    values = {"checkpoints": str(checkpoints), "port": server.port, **settings}
    server.started = time.monotonic()
    server.process = subprocess.Popen([sys.executable, "-c", LAUNCH, json.dumps(values)], stdout=server._log,
                                      stderr=subprocess.STDOUT, cwd=checkpoints.parent,
                                      env={**os.environ, "COLUMNS": "200", **(env or {})})
    server.health_after = None
    server.wait_ready()
    return server


def send_request(port: int, body: dict, path: str = "/v1/completions", receive_buffer: int = 4096) -> socket.socket:
    """A client that sends a POST and reads nothing (its window kept small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (path.encode(), len(payload)) + payload)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """The whole (chunked) body of the 200 response on `sock`, read at last."""
    sock.settimeout(60)
    data = bytearray()
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    body = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2:]
    return bytes(body)
