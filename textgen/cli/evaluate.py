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
    adapt: Annotated[bool, typer.Option(
        "--adapt", help="Also score with dynamic evaluation: the model keeps learning as it reads the text "
                        "(a separate figure; the run is not changed).")] = False,
    adapt_rate: Annotated[Optional[float], typer.Option(
        help="The SGD step of --adapt. (default: 0.2)", show_default=False)] = None,
    as_json: JsonOption = False,
):
    """Bits per character of a text under a trained model (scored in windows, each after a burn-in of context).

    Example: [bold]textgen evaluate held_out.txt --run shakespeare[/]
    """
    from textgen import checkpoints
    from textgen.adapt import RATE, check_rate
    from textgen.scoring import evaluate_file

    if checkpoint not in ("latest", "best"):
        raise ConfigError(f"--checkpoint must be latest or best. Received: checkpoint={checkpoint!r}")
    if adapt_rate is not None and not adapt:
        raise ConfigError(f"--adapt-rate goes with --adapt. Received: adapt_rate={adapt_rate}")
    rate = check_rate(RATE if adapt_rate is None else adapt_rate) if adapt else None
    directory = checkpoints.find_run(checkpoints_dir, run)
    result = evaluate_file(directory, text_file, encoding=encoding, which=checkpoint, adapt=rate)
    if as_json:
        emit_json(result)
        return
    out.print(f"{result['file']}: {result['nats_per_char']:.4f} nats/char = [bold]{result['bits_per_char']:.4f} "
              f"bits/char[/] over {result['scored']:,} characters (run {result['run']}, step {result['step']:,})")
    if adapt:
        a = result["adapted"]
        out.print(f"adapted (dynamic evaluation: learning as it reads, SGD step {a['learning_rate']:g} per "
                  f"{a['segment']} characters): {a['nats_per_char']:.4f} nats/char = {a['bits_per_char']:.4f} "
                  f"bits/char; not a figure of the run's weights, which are unchanged")


def register(app: typer.Typer) -> None:
    """Add the `evaluate` command to `app`."""
    app.command("evaluate")(evaluate)
