"""Run the app with uvicorn: the start-up panel, the warnings, and a clean exit on a signal.

SIGTERM or Ctrl-C: the engine threads end every stream with a final event (an error object
saying the server is shutting down, then `data: [DONE]`), uvicorn stops accepting and waits
for the responses to finish, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from textgen.serve.app import create_app
from textgen.serve.connections import guarded_protocol


def _panel(settings, app) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Playground", f"{settings.url}/")
    grid.add_row("API", f"{settings.url}/v1   (reference: {settings.url}/docs)")
    grid.add_row("Models", ", ".join(app.state.registry.models))
    grid.add_row("Limits", f"{settings.max_streams} streams, queue {settings.max_queue}, n <= {settings.max_n}, "
                 f"max_tokens <= {settings.max_length}, prompt <= {settings.max_prompt} chars")
    grid.add_row("API key", "required" if settings.api_key else "none (anyone who can reach the port may use it)")
    grid.add_row("CORS", ", ".join(settings.cors_origins) or "off")
    grid.add_row("Hosts", "loopback, " + ", ".join((settings.host, *settings.allowed_hosts)))
    grid.add_row("Connections", f"{settings.max_connections} at most; headers within {settings.header_timeout:g} s, "
                 f"body within {settings.body_timeout:g} s")
    if settings.forwarded_allow_ips:
        grid.add_row("Proxies", "X-Forwarded-For trusted from " + ", ".join(settings.forwarded_allow_ips))
    return Panel(grid, title="textgen serve", expand=False)


def serve(settings) -> None:
    """Serve until SIGTERM / Ctrl-C (raises CheckpointError first if a run name is unknown)."""
    import uvicorn

    console = Console(stderr=True, highlight=False)
    app = create_app(settings)
    if settings.exposed and not settings.api_key:
        console.print(f"[yellow]Warning:[/] listening on {settings.host} without --api-key: anyone who can reach "
                      "this port can use the server. Set the key with TEXTGEN_API_KEY or --api-key-file (a key "
                      "given on the command line shows in ps).")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("textgen.serve").setLevel(logging.INFO)
    console.print(_panel(settings, app))
    # X-Forwarded-For / -Proto are believed only from the proxies named by --forwarded-allow-ips
    # (uvicorn would trust them from loopback by default).
    proxies = list(settings.forwarded_allow_ips)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False, log_level="warning",
                            timeout_graceful_shutdown=10, lifespan="on", ws="none", http=guarded_protocol(settings),
                            proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)
    server = _Server(config, app.state.registry, console)
    # uvicorn re-raises the signal it caught once it has shut down; with these handlers in
    # place that re-raise is a no-op, so the process exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[_listen(settings)])
    console.print("textgen serve: stopped.")


def _listen(settings) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear error line."""
    from textgen.errors import ConfigError

    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"Could not listen on {settings.host}:{settings.port}: {e.strerror or e}. "
                          f"Received: port={settings.port}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server:
    """uvicorn.Server whose exit handler first ends the streams in flight."""

    def __new__(cls, config, registry, console):
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame):
                if not self.should_exit:
                    console.print("Shutting down: ending the streams in flight.")
                registry.begin_shutdown()
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True
                self.should_exit = True

        return Server(config)
