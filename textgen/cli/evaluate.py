"""`textgen evaluate`: bits per character of a text under a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from textgen.cli.common import CheckpointsOption, JsonOption, emit_json, out
from textgen.errors import ConfigError


def evaluate(
    text_file: Annotated[Path, typer.Argument(help="Text to score under the model.")],
    run: Annotated[Optional[str], typer.Option(help="Run to evaluate. (default: the most recently trained)")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest or best.")] = "latest",
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    as_json: JsonOption = False,
):
    """Bits per character of a text under a trained model (scored in windows, each after a burn-in of context).

    Example: [bold]textgen evaluate held_out.txt --run shakespeare[/]
    """
    from textgen import checkpoints
    from textgen.scoring import evaluate_file

    if checkpoint not in ("latest", "best"):
        raise ConfigError(f"--checkpoint must be latest or best. Received: checkpoint={checkpoint!r}")
    directory = checkpoints.find_run(checkpoints_dir, run)
    result = evaluate_file(directory, text_file, encoding=encoding, which=checkpoint)
    if as_json:
        emit_json(result)
        return
    out.print(f"{result['file']}: {result['nats_per_char']:.4f} nats/char = [bold]{result['bits_per_char']:.4f} "
              f"bits/char[/] over {result['scored']:,} characters (run {result['run']}, step {result['step']:,})")


def register(app: typer.Typer) -> None:
    """Add the `evaluate` command to `app`."""
    app.command("evaluate")(evaluate)
