"""Summaries of the runs in a checkpoints directory, and a terminal plot of a curve."""

from __future__ import annotations

import math
import time
from pathlib import Path

from textgen import checkpoints
from textgen.config import parameter_count
from textgen.errors import CheckpointError, TextgenError


def describe(info: dict, state: dict) -> dict:
    """What a run is and how it scores, from its run file and a checkpoint's state: the figures
    `textgen runs` and the server's model card share (never raises; a missing figure is None)."""
    model = info.get("model") or {}
    evaluated = [r for r in state.get("history", []) if isinstance(r, dict) and "val_loss" in r]
    best = min((r["val_loss"] for r in evaluated), default=None)
    last = evaluated[-1].get("val_bpc", evaluated[-1]["val_loss"] / math.log(2)) if evaluated else None
    return {"parameters": _parameters(model), "layers": model.get("num_layers"), "units": model.get("units"),
            "vocab_size": len(info.get("vocab") or []), "best_val_loss": best,
            "best_val_bpc": best / math.log(2) if best is not None else None, "val_bpc": last}


def summarize(directory: Path) -> dict:
    """One row of `textgen runs`: what the run is and how far it got (never raises)."""
    row = {"name": directory.name, "path": str(directory)}
    try:
        info = checkpoints.read_run_file(directory)
    except CheckpointError as e:
        return {**row, "error": str(e)}
    model = info.get("model", {})
    row.update({
        "corpus": info.get("corpus", {}).get("name"),
        "size": f"{model.get('num_layers')}x{model.get('units')}",
        "parameters": _parameters(model),
        "created": info.get("created"),
    })
    ckpts = checkpoints.list_checkpoints(directory)
    state = {}
    if ckpts:
        try:
            state = checkpoints.load_state(ckpts[-1])
        except (OSError, ValueError, CheckpointError):
            row["error"] = f"checkpoint {ckpts[-1].name} is unreadable"
    figures = describe(info, state)
    row.update({
        "step": state.get("step", 0),
        "chars_seen": state.get("chars_seen", 0),
        "best_val_loss": figures["best_val_loss"],
        "best_val_bpc": figures["best_val_bpc"],
        "train_seconds": state.get("train_seconds", 0.0),
        "updated": checkpoints.last_update(directory),
    })
    return row


def _parameters(model: dict) -> int | None:
    """The parameter count of a recorded model config, None if the record lacks a field."""
    try:
        return parameter_count(model)
    except (KeyError, TypeError, ValueError, TextgenError):
        return None


def list_summaries(root: Path) -> list[dict]:
    return sorted((summarize(d) for d in checkpoints.list_runs(root)),
                  key=lambda r: r.get("updated") or 0, reverse=True)


def show(root: Path, name: str) -> dict:
    directory = checkpoints.find_run(root, name)
    info = checkpoints.read_run_file(directory)
    ckpts = checkpoints.list_checkpoints(directory)
    state = checkpoints.load_state(ckpts[-1]) if ckpts else {}
    return {"summary": summarize(directory), "model": info.get("model"), "training": info.get("training"),
            "corpus": info.get("corpus"), "versions": info.get("versions"),
            "history": state.get("history", []), "checkpoints": [p.name for p in ckpts]}


def ago(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    seconds = max(0, time.time() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def plot(xs: list, ys: list, width: int = 60, height: int = 12) -> list[str]:
    """A text plot of y against x: one '•' per point, y labels on the left."""
    if not ys:
        return ["(no evaluations yet)"]
    lo, hi = min(ys), max(ys)
    span = hi - lo or 1.0
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    grid = [[" "] * width for _ in range(height)]
    for x, y in zip(xs, ys, strict=True):
        col = round((x - x_lo) / x_span * (width - 1))
        row = round((hi - y) / span * (height - 1))
        grid[row][col] = "•"
    lines = []
    for r, cells in enumerate(grid):
        label = hi - span * r / (height - 1)
        lines.append(f"{label:7.3f} │{''.join(cells)}")
    lines.append(" " * 8 + "└" + "─" * width)
    lines.append(" " * 9 + f"{x_lo:,.0f}".ljust(width - 12) + f"{x_hi:,.0f}".rjust(12))
    return lines
