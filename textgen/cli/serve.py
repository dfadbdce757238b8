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
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' on every route but /health and the page.", envvar="TEXTGEN_API_KEY", show_envvar=True)] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Allow browser pages from this origin (repeatable; '*' for any). (default: CORS off)")] = None,
    max_streams: Annotated[int, typer.Option(help="Streams (choices) advanced together per model.")] = 64,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait for room per model; more get 429.")] = 256,
    max_length: Annotated[int, typer.Option(help="Cap on max_tokens (characters per choice).")] = 4096,
    max_prompt: Annotated[int, typer.Option(help="Cap on prompt characters.")] = 10000,
    max_n: Annotated[Optional[int], typer.Option(help="Cap on choices per request. (default: 16, or --max-streams if lower)")] = None,
    chat_template: Annotated[Optional[str], typer.Option(help="Chat template: text with {ROLE}/{role}/{Role} and {content}, or a file holding it. (default: '{ROLE}:\\n{content}\\n\\n')")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access-log line per request.")] = False,
    keepalive: Annotated[float, typer.Option(hidden=True, help="Seconds between SSE keep-alive comments.")] = 15.0,
    reload_seconds: Annotated[float, typer.Option(hidden=True, help="Seconds between checks for a new checkpoint.")] = 1.0,
):
    """Serve runs over HTTP: OpenAI-compatible /v1 API (streaming, continuous batching) and a playground at /.

    Example: [bold]textgen serve --run shakespeare --port 8080 --api-key "$KEY"[/]
    """
    from textgen.errors import MissingExtraError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtraError('textgen serve needs FastAPI and uvicorn: pip install "textgen[serve]"') from None
    from textgen.serve.server import serve as run_server
    from textgen.serve.settings import Settings, chat_template_from_option

    settings = Settings(runs=tuple(run or ()), checkpoints=checkpoints_dir, host=host, port=port, api_key=api_key,
                        cors_origins=tuple(cors_origin or ()), max_streams=max_streams, max_queue=max_queue,
                        max_length=max_length, max_prompt=max_prompt, max_n=max_n, quiet=quiet,
                        chat_template=chat_template_from_option(chat_template), keepalive_seconds=keepalive,
                        reload_seconds=reload_seconds)
    run_server(settings)


def register(app: typer.Typer) -> None:
    """Add the `serve` command to `app`."""
    app.command("serve")(serve)
