"""`textgen serve`: an OpenAI-compatible HTTP API and a web playground over trained runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from textgen.cli.common import CheckpointsOption


def serve(
    run: Annotated[Optional[list[str]], typer.Option("--run", help="A run to serve (repeat for several). (default: the most recently trained)")] = None,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network (set --api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' on every route but /health and the pages. Prefer the variable or --api-key-file: a command line is visible to every user in ps.", envvar="TEXTGEN_API_KEY", show_envvar=True)] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="Read the API key from this file (its first line).")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Allow browser pages from this origin (repeatable; '*' for any). (default: CORS off)")] = None,
    max_streams: Annotated[int, typer.Option(help="Streams (choices) advanced together per model.")] = 64,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait for room per model; more get 429.")] = 256,
    max_length: Annotated[int, typer.Option(help="Cap on max_tokens (characters per choice).")] = 4096,
    max_prompt: Annotated[int, typer.Option(help="Cap on prompt characters.")] = 10000,
    max_n: Annotated[Optional[int], typer.Option(help="Cap on choices per request. (default: 16, or --max-streams if lower)")] = None,
    chat_template: Annotated[Optional[str], typer.Option(help="Chat template: text with {ROLE}/{role}/{Role} and {content}, or a file holding it. (default: '{ROLE}:\\n{content}\\n\\n')")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access-log line per request.")] = False,
    allowed_host: Annotated[Optional[list[str]], typer.Option("--allowed-host", help="Also accept requests whose Host header is this name (repeatable; '*' for any). (default: loopback names and the --host address)")] = None,
    forwarded_allow_ips: Annotated[Optional[str], typer.Option(help="Believe X-Forwarded-For/-Proto only from these proxy addresses (comma-separated; '*' for any). (default: from nobody)")] = None,
    max_connections: Annotated[int, typer.Option(help="Open connections at most; more are answered 503 and closed.")] = 512,
    header_timeout: Annotated[float, typer.Option(help="Seconds a client has to send a request's headers.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds a client has to send a request's body.")] = 30.0,
    max_prompt_total: Annotated[Optional[int], typer.Option(help="Cap on prompt characters x choices per request; more get 400. (default: --max-prompt x --max-n)")] = None,
    max_unsent: Annotated[int, typer.Option(help="Bytes of output one streamed request may hold unread; then it pauses until its client reads.")] = 262_144,
    max_buffered: Annotated[int, typer.Option(help="Bytes of unread output in the whole server; past it, requests holding much pause.")] = 67_108_864,
    send_timeout: Annotated[float, typer.Option(help="Seconds a stream may wait for its client to read; then it is cancelled and its rows freed.")] = 30.0,
    keepalive: Annotated[float, typer.Option(hidden=True, help="Seconds between SSE keep-alive comments.")] = 15.0,
    reload_seconds: Annotated[float, typer.Option(hidden=True, help="Seconds between checks for a new checkpoint.")] = 1.0,
):
    """Serve runs over HTTP: OpenAI-compatible /v1 API (streaming, continuous batching) and a playground at /.

    Example: [bold]TEXTGEN_API_KEY="$KEY" textgen serve --run shakespeare --port 8080[/]
    """
    from textgen.errors import ConfigError, MissingExtraError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtraError('textgen serve needs FastAPI and uvicorn: pip install "textgen[serve]"') from None
    from textgen.serve.server import serve as run_server
    from textgen.serve.settings import Settings, chat_template_from_option

    if api_key_file is not None:
        if api_key is not None:
            raise ConfigError("Give the API key one way: --api-key-file, or --api-key / TEXTGEN_API_KEY, not both. "
                              f"Received: api_key_file={str(api_key_file)!r}")
        api_key = _read_key(api_key_file)
    proxies = tuple(p.strip() for p in (forwarded_allow_ips or "").split(",") if p.strip())
    settings = Settings(runs=tuple(run or ()), checkpoints=checkpoints_dir, host=host, port=port, api_key=api_key,
                        cors_origins=tuple(cors_origin or ()), max_streams=max_streams, max_queue=max_queue,
                        max_length=max_length, max_prompt=max_prompt, max_n=max_n, quiet=quiet,
                        chat_template=chat_template_from_option(chat_template), keepalive_seconds=keepalive,
                        reload_seconds=reload_seconds, allowed_hosts=tuple(allowed_host or ()),
                        forwarded_allow_ips=proxies, max_connections=max_connections, header_timeout=header_timeout,
                        body_timeout=body_timeout, max_prompt_total=max_prompt_total, max_unsent=max_unsent,
                        max_buffered=max_buffered, send_timeout=send_timeout)
    run_server(settings)


def _read_key(path: Path) -> str:
    """The key in the first line of `path` (surrounding spaces and the newline dropped)."""
    from textgen.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as file:
            key = file.readline(4096).strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read the API key file: {getattr(e, 'strerror', None) or e}. "
                          f"Received: api_key_file={str(path)!r}") from None
    if not key:
        raise ConfigError(f"The API key file's first line is empty. Received: api_key_file={str(path)!r}")
    return key


def register(app: typer.Typer) -> None:
    """Add the `serve` command to `app`."""
    app.command("serve")(serve)
