"""`textgen export`: a trained run as one offline HTML page, ONNX, a SavedModel or TFLite.

`export(run_dir, format, output, ...)` loads the run's checkpoint the way `textgen sample`
does (same checks, same messages), builds the file from the run's arrays, writes it under a
temporary name beside the output and renames it into place, so an interrupted export never
leaves a half-written file under the output's name. An existing output is refused unless
`force` is given. ONNX, SavedModel and TFLite exports are run once in their own runtime and
compared with the numpy engine before the rename (`check_max_abs_diff` in the result).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from textgen.errors import ConfigError
from textgen.export.model_arrays import PRECISIONS, check_precision, load
from textgen.files import temporary_name

FORMATS = ("html", "onnx", "savedmodel", "tflite")
CHECK_STEPS = 16


def default_output(run: str, format: str) -> Path:
    """`<run>.<extension>` in the current directory (`<run>_savedmodel/` for a SavedModel)."""
    return Path(f"{run}_savedmodel") if format == "savedmodel" else Path(f"{run}.{format}")


def _check_output(output: Path, force: bool, extra: list[Path]) -> None:
    for path in [output, *extra]:
        if (path.exists() or path.is_symlink()) and not force:
            raise ConfigError(f"{str(path)!r} already exists; pass --force to replace it. Received: output={str(output)!r}")
    parent = output.parent
    if not parent.is_dir():
        raise ConfigError(f"--output's directory does not exist. Received: output={str(output)!r}")
    if output.is_dir() and output.suffix in (".html", ".onnx", ".tflite"):
        raise ConfigError(f"--output is a directory. Received: output={str(output)!r}")


def _temporary(output: Path, directory: bool) -> Path:
    """A hidden temporary path beside `output`; an unwritable directory is a one-line error."""
    temp = temporary_name(output)  # textgen's convention: .<name>.tmp-<pid>
    try:
        if directory:
            temp.mkdir()
        else:
            temp.touch()
    except PermissionError:
        raise ConfigError(
            f"Cannot write in {str(output.parent)!r} (permission denied). Received: output={str(output)!r}"
        ) from None
    except OSError as e:
        raise ConfigError(f"Cannot write in {str(output.parent)!r}: {e.strerror}. Received: output={str(output)!r}") \
            from None
    return temp


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _move_into_place(temp: Path, output: Path) -> None:
    """Rename `temp` over `output`; an existing directory is moved aside first, then deleted."""
    if output.is_dir() and not output.is_symlink():
        aside = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, aside)
        os.replace(temp, output)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(temp, output)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export(run_dir, format: str, output=None, precision: str = "float32", force: bool = False,
           which: str = "latest", use_previous: bool = False, measure_bpc: bool = True) -> dict:
    """Export run `run_dir`'s checkpoint `which` to `output`; returns what was written.

    `precision` applies to the html page (float32, float16, or int8 with a scale per row);
    the other formats are float32. For a float16/int8 page the result also holds the bits
    per character of the run's validation text with float32 and with the stored weights
    (`bpc`), or why they could not be measured (`bpc_skipped`).
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
    check_precision(precision)
    if format != "html" and precision != "float32":
        raise ConfigError(f"--precision applies to --format html only; {format} is float32. "
                          f"Received: precision={precision!r}")
    run_dir = Path(run_dir)
    output = Path(output) if output is not None else default_output(run_dir.name, format)
    from textgen.export.tflite import metadata_path

    extra = [metadata_path(output)] if format == "tflite" else []
    _check_output(output, force, extra)
    info, ckpt, arrays = load(run_dir, which, use_previous=use_previous)
    result = {"run": run_dir.name, "checkpoint": ckpt.path.name, "step": ckpt.step, "format": format,
              "precision": precision, "output": str(output)}
    if "fell_back_from" in ckpt.state:
        result["fell_back_from"] = ckpt.state["fell_back_from"]
    temps = []
    try:
        temp = _temporary(output, directory=(format == "savedmodel"))
        temps.append(temp)
        if format == "onnx":
            from textgen.export import checks, onnx_export

            onnx_export.write(arrays, temp)
            result["opset"] = onnx_export.OPSET
            result["check_max_abs_diff"] = checks.onnx_diff(temp, arrays, CHECK_STEPS)
        elif format == "savedmodel":
            from textgen.export import checks, savedmodel

            temp.rmdir()
            version = savedmodel.save(arrays, temp)
            result["check_max_abs_diff"] = checks.savedmodel_diff(version, arrays, CHECK_STEPS)
            result["serving_version"] = str(output / version.name)
        elif format == "tflite":
            import json

            from textgen.export import checks, tflite

            temp.write_bytes(tflite.convert(arrays))
            meta_temp = _temporary(extra[0], directory=False)
            temps.append(meta_temp)
            meta_temp.write_text(json.dumps(arrays.metadata(), ensure_ascii=False, indent=1), encoding="utf-8")
            result["check_max_abs_diff"] = checks.tflite_diff(temp, arrays, CHECK_STEPS)
            result["metadata"] = str(extra[0])
        else:
            from textgen.export import html

            temp.write_text(html.page(arrays, precision, ckpt.step), encoding="utf-8")
            if precision != "float32" and measure_bpc:
                result.update(_bpc_change(info, arrays, precision))
        if format == "tflite":
            _move_into_place(temps[1], extra[0])
        _move_into_place(temp, output)
        temps.clear()
    finally:
        for leftover in temps:
            _remove(leftover)
    result["bytes"] = _size(output)
    return result


def _bpc_change(info: dict, arrays, precision: str) -> dict:
    from textgen.export.model_arrays import quantise
    from textgen.export.quality import bits_per_char, validation_ids

    ids, why = validation_ids(info)
    if ids is None:
        return {"bpc_skipped": why}
    _stored, dequantised = quantise(arrays, precision)
    reference = bits_per_char(arrays, ids)
    lowered = bits_per_char(dequantised, ids)
    return {"bpc": {"float32": reference, precision: lowered, "change": lowered - reference,
                    "characters": int(len(ids))}}


__all__ = ["FORMATS", "PRECISIONS", "default_output", "export"]
