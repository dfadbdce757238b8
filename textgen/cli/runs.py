"""`textgen runs` and `textgen runs show`: the runs in a checkpoints directory, and one run's history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from textgen.cli.common import CheckpointsOption, JsonOption, compact_count, compact_duration, emit_json, out

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
    from textgen import summary as runs_lib

    rows = runs_lib.list_summaries(checkpoints_dir)
    if as_json:
        emit_json({"checkpoints": str(checkpoints_dir), "runs": rows})
        return
    if not rows:
        out.print(f"No runs in {checkpoints_dir}. Train one: textgen train")
        return
    table, notes = _runs_table(rows, checkpoints_dir, runs_lib.ago, out.width)
    out.print(table)
    for note in notes:
        out.print(f"[red]{note}[/]")


def _runs_table(rows: list, checkpoints_dir: Path, ago, width: int) -> tuple[Table, list]:
    """The table of runs in `width` columns with compact figures (1.8M, 1m07s), and the lines
    that explain unreadable runs. The run name is never cut; a long corpus name gives way."""
    cells = []
    notes = []
    for r in rows:
        if "error" in r and "corpus" not in r:
            cells.append([r["name"], "[red]unreadable[/]", *["-"] * 6])
            notes.append(f"{r['name']}: {r['error']}")
            continue
        bpc = f"{r['best_val_bpc']:.4f}" if r.get("best_val_bpc") is not None else "-"
        params = compact_count(r["parameters"]) if r.get("parameters") is not None else "-"
        cells.append([r["name"], str(r.get("corpus")), r.get("size", "-"), params,
                      compact_count(r.get("chars_seen")), bpc, compact_duration(r.get("train_seconds")),
                      ago(r.get("updated"))])
    headers = ["run", "corpus", "size", "params", "chars", "best bpc", "time", "updated"]
    widths = [max(len(headers[i]), *(len(Text.from_markup(row[i])) for row in cells)) for i in range(len(headers))]
    widths[1] = min(widths[1], 6)  # a long corpus name gives way first (with an ellipsis)
    for optional in ("updated", "corpus", "size"):  # then whole columns, so that no name is cut
        if sum(widths) + len(widths) - 1 <= width:
            break
        index = headers.index(optional)
        for sequence in (headers, widths, *cells):
            del sequence[index]
    corpus_width = width - (sum(widths) + len(widths) - 1) + 6 if "corpus" in headers else 0
    table = Table(title=f"Runs in {checkpoints_dir}", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=0)  # columns one space apart
    for header, column_width in zip(headers, widths, strict=True):
        if header == "run":
            table.add_column(header, no_wrap=True, min_width=column_width)
        elif header == "corpus":
            table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=corpus_width)
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    return table, notes


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="The run to show.")],
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """Show a run's configuration and metric history, with its validation curve.

    Example: [bold]textgen runs show run-20260101-120000[/]
    """
    from textgen import summary as runs_lib

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
