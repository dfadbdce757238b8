"""`textgen info`: versions, devices, and whether training here takes cuDNN."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from textgen.cli.common import CheckpointsOption, JsonOption, emit_json, err, out


def _run_precision(training: dict) -> str:
    """The precision a run trains in, from its recorded training config (float32 if unrecorded)."""
    if training.get("precision"):
        return str(training["precision"])
    return "mixed_float16" if training.get("mixed_precision") else "float32"


def _model_for(checkpoints_dir: Path, run: Optional[str]):
    """(model, precision, source): the run's network as `train` builds it, or the defaults."""
    from textgen import checkpoints, devices
    from textgen.config import ModelConfig, TrainConfig
    from textgen.training.model import build_model

    if run is None:
        config, training, precision, source = ModelConfig(vocab_size=65), TrainConfig(), "float32", "defaults"
        batch_size, seq_len = training.batch_size, training.seq_len
    else:
        directory = checkpoints.find_run(checkpoints_dir, run)
        info = checkpoints.read_run_file(directory)
        config = ModelConfig(**info["model"])
        batch_size = int(info["training"].get("batch_size", TrainConfig.batch_size))
        seq_len = int(info["training"].get("seq_len", TrainConfig.seq_len))
        precision, source = _run_precision(info["training"]), f"run {directory.name}"
    with devices.precision.precision_scope(precision):
        model = build_model(config, batch_size, seq_len)
    return model, precision, source


def _gib(value) -> str:
    return "?" if value is None else f"{value / 2**30:.1f} GiB"


def _show(report: dict) -> None:
    versions = report["versions"]
    table = Table(title="textgen info", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("backend", f"{report['backend']} (KERAS_BACKEND)")
    for name in ("python", "textgen", "keras", "tensorflow", "jax", "jaxlib", "torch", "numpy"):
        if versions.get(name):
            table.add_row(name, versions[name])
    for device in report["devices"]:
        if device["type"] == "CPU":
            table.add_row(device["id"], f"{device['name']}, {device['cores']} cores, {_gib(device['memory_bytes'])}")
        else:
            capability = f", compute {device['compute_capability']}" if device.get("compute_capability") else ""
            table.add_row(device["id"], f"{device['name']}, {_gib(device['memory_bytes'])}{capability}")
    if not report["gpu"]:
        table.add_row("GPU", "none visible to this backend")
    out.print(table)

    cudnn = report["cudnn"]
    model = report["model"]
    layers = Table(title=f"cuDNN for the LSTM layers of {model['source']} ({model['precision']})",
                   title_justify="left")
    layers.add_column("layer")
    layers.add_column("units", justify="right")
    layers.add_column("arguments allow cuDNN")
    layers.add_column("what prevents it")
    for layer in cudnn["layers"]:
        layers.add_row(layer["layer"], str(layer["units"]), "yes" if layer["eligible"] else "[red]no[/]",
                       "; ".join(layer["reasons"]) or "-")
    out.print(layers)
    if cudnn["used"]:
        out.print("[green]Training here uses the fused cuDNN LSTM kernel.[/]")
    else:
        out.print(f"Training here does not use the fused cuDNN kernel: {cudnn['why_not']}.")
    mixed = report["mixed_precision"]
    out.print(f"--mixed-precision: {'available' if mixed['available'] else 'unavailable'} ({mixed['note']})")
    out.print(f"bfloat16: {report['bfloat16']['note']}")
    out.print(f"sampling step: {report['sampling_step']['note']}")
    jit = report["jit"]
    out.print(f"--jit (XLA): {'available' if jit['supported'] else 'unavailable'} ({jit['note']})")
    for feature in report["tensorflow_only"]:
        state = "available" if feature["available"] else "[yellow]needs KERAS_BACKEND=tensorflow[/]"
        out.print(f"TensorFlow-only feature {feature['feature']} ({feature['what']}): {state}")


def info(
    run: Annotated[Optional[str], typer.Option(help="Check the LSTM layers of this run. [default: the default model]")] = None,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """Versions, visible devices, and whether training here takes the fused cuDNN LSTM kernel.

    Example: [bold]KERAS_BACKEND=jax textgen info --run shakespeare --json[/]
    """
    from textgen import devices

    model, precision, source = _model_for(checkpoints_dir, run)
    report = devices.report.describe(model, precision=precision, source=source)
    for warning in devices.cudnn.cudnn_warnings(report["cudnn"]["layers"]):
        err.print(f"[bold yellow]Warning:[/] {warning}")
    if as_json:
        emit_json(report)
        return
    _show(report)


def register(app: typer.Typer) -> None:
    """Add the `info` command to `app`."""
    app.command("info")(info)
