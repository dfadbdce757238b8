"""`textgen runs` and `textgen runs show`: the runs in a checkpoints directory, and one run's history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from textgen.cli.common import CheckpointsOption, JsonOption, emit_json, out

runs_app = typer.Typer(no_args_is_help=False)


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """List the runs: corpus, size, parameters, characters seen, best validation bpc, time.

    Example: [bold]textgen runs[/]  ·  [bold]textgen runs show RUN[/]
    """
    if ctx.invoked_subcommand is not None:
        return
    from textgen import runs as runs_lib

    rows = runs_lib.list_summaries(checkpoints_dir)
    if as_json:
        emit_json({"checkpoints": str(checkpoints_dir), "runs": rows})
        return
    if not rows:
        out.print(f"No runs in {checkpoints_dir}. Train one: textgen train")
        return
    table = Table(title=f"Runs in {checkpoints_dir}", title_justify="left")
    for column in ("run", "corpus", "size", "params", "chars seen", "best bpc", "train time", "updated"):
        table.add_column(column, justify="right" if column not in ("run", "corpus") else "left")
    for r in rows:
        if "error" in r and "corpus" not in r:
            table.add_row(r["name"], f"[red]{r['error']}[/]", *[""] * 6)
            continue
        bpc = f"{r['best_val_bpc']:.4f}" if r.get("best_val_bpc") is not None else "-"
        table.add_row(r["name"], str(r.get("corpus")), r.get("size", "-"), f"{r.get('parameters') or 0:,}",
                      f"{r.get('chars_seen', 0):,}", bpc,
                      time.strftime("%H:%M:%S", time.gmtime(r.get("train_seconds") or 0)),
                      runs_lib.ago(r.get("updated")))
    out.print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="The run to show.")],
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """Show a run's configuration and metric history, with its validation curve.

    Example: [bold]textgen runs show run-20260101-120000[/]
    """
    from textgen import runs as runs_lib

    data = runs_lib.show(checkpoints_dir, run)
    if as_json:
        emit_json(data)
        return
    config = Table(title=f"Run {run}", show_header=False, title_justify="left")
    config.add_column(style="bold")
    config.add_column()
    for section in ("model", "training", "corpus"):
        for key, value in (data.get(section) or {}).items():
            if value is not None:
                config.add_row(f"{section}.{key}", str(value))
    out.print(config)
    history = [r for r in data["history"] if "val_loss" in r]
    if history:
        table = Table(title="Metric history", title_justify="left")
        for column in ("step", "epoch", "chars seen", "train loss", "val loss", "val bpc", "learning rate"):
            table.add_column(column, justify="right")
        for r in history:
            train_loss = f"{r['train_loss']:.4f}" if r.get("train_loss") is not None else "-"
            lr = f"{r['learning_rate']:.2e}" if r.get("learning_rate") is not None else "-"
            table.add_row(f"{r['step']:,}", f"{r.get('epoch', 0):.2f}", f"{r.get('chars_seen', 0):,}", train_loss,
                          f"{r['val_loss']:.4f}", f"{r['val_bpc']:.4f}", lr)
        out.print(table)
        out.print("Validation loss (nats/char) against characters seen:")
        for line in runs_lib.plot([r.get("chars_seen", r["step"]) for r in history], [r["val_loss"] for r in history]):
            out.print(line, markup=False, highlight=False)
    else:
        out.print("No evaluations yet.")


def register(app: typer.Typer) -> None:
    """Add the `runs` group (list, `show`) to `app`."""
    app.add_typer(runs_app, name="runs")
