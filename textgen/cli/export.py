"""`textgen export`: a trained run as one offline HTML page, ONNX, a SavedModel or TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from textgen.cli.common import CheckpointsOption, JsonOption, emit_json, err, out


def _size(num_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:,} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return ""


def export(
    format: Annotated[str, typer.Option("--format", help="html (one offline page), onnx, savedmodel or tflite.")],
    run: Annotated[Optional[str], typer.Option(help="Run to export. (default: the most recently trained)")] = None,
    output: Annotated[Optional[Path], typer.Option(help="File (directory for savedmodel) to write. (default: <run>.html|.onnx|.tflite or <run>_savedmodel/ in the current directory)")] = None,
    precision: Annotated[str, typer.Option(help="Weights embedded in the html page: float32, float16, or int8 (a scale per row).")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    checkpoint: Annotated[str, typer.Option(help="latest, best, or a checkpoint directory name such as ckpt-00001200.")] = "latest",
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    use_previous: Annotated[bool, typer.Option("--use-previous", help="If the newest checkpoint is damaged, use the previous good one.")] = False,
    as_json: JsonOption = False,
):
    """Write a trained run as a file other programs run: an offline HTML page, ONNX, a SavedModel or TFLite.

    Example: [bold]textgen export --run shakespeare --format html --precision int8[/]
    """
    from textgen import checkpoints
    from textgen.export import export as export_run

    directory = checkpoints.find_run(checkpoints_dir, run)
    result = export_run(directory, format, output, precision=precision, force=force, which=checkpoint,
                        use_previous=use_previous)
    if as_json:
        emit_json(result)
        return
    if "fell_back_from" in result:
        err.print(f"[yellow]Newest checkpoint {result['fell_back_from']} is damaged; "
                  f"used {result['checkpoint']}.[/]")
    what = f"{result['format']}" + (f" ({result['precision']})" if result["format"] == "html" else "")
    out.print(f"Wrote {what} [bold]{result['output']}[/]: {_size(result['bytes'])} "
              f"(run {result['run']}, {result['checkpoint']})")
    if "check_max_abs_diff" in result:
        out.print(f"[dim]Checked in its runtime against textgen's engine: max |log p difference| "
                  f"{result['check_max_abs_diff']:.1e}[/]")
    if "metadata" in result:
        out.print(f"[dim]Vocabulary and metadata: {result['metadata']}[/]")
    if "serving_version" in result:
        out.print(f"[dim]TF Serving layout: version directory {result['serving_version']}[/]")
    if "bpc" in result:
        bpc = result["bpc"]
        out.print(f"Validation text ({bpc['characters']:,} characters): {bpc['float32']:.4f} bits/char in float32, "
                  f"{bpc[result['precision']]:.4f} in {result['precision']} ([bold]{bpc['change']:+.4f}[/])")
    elif "bpc_skipped" in result:
        err.print(f"[yellow]Note: {result['bpc_skipped']}.[/]")


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""
    app.command("export")(export)
