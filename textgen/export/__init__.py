"""`textgen export`: a trained run as one offline HTML page, ONNX, a SavedModel or TFLite.

`export(run_dir, format, output, ...)` loads the run's checkpoint the way `textgen sample`
does (same checks, same messages), builds the file from the run's arrays, writes it under a
temporary name beside the output and renames it into place, so an interrupted export never
leaves a half-written file under the output's name. An existing output is refused unless
`force` is given. ONNX, SavedModel and TFLite exports are run once in their own runtime and
compared with the numpy engine before the rename (`check_max_abs_diff` in the result).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from textgen.errors import ConfigError
from textgen.export.model_arrays import PRECISIONS, check_precision, load
from textgen.files import atomic_path, temporary_name

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


def _check_writable(output: Path) -> None:
    """Fail early, in one line, where the output's directory cannot take a new file."""
    probe = temporary_name(output)
    try:
        probe.touch()
        probe.unlink()
    except PermissionError:
        raise ConfigError(
            f"Cannot write in {str(output.parent)!r} (permission denied). Received: output={str(output)!r}"
        ) from None
    except OSError as e:
        raise ConfigError(f"Cannot write in {str(output.parent)!r}: {e.strerror}. Received: output={str(output)!r}") \
            from None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# -- the exporters: each writes `arrays` to a temporary path and checks what it wrote ------------


def _html(arrays, path: Path, info: dict, precision: str, step: int, measure_bpc: bool) -> dict:
    from textgen.export import html

    path.write_text(html.page(arrays, precision, step), encoding="utf-8")
    return _bpc_change(info, arrays, precision) if precision != "float32" and measure_bpc else {}


def _onnx(arrays, path: Path, *_) -> dict:
    from textgen.export import checks, onnx_export

    onnx_export.write(arrays, path)
    return {"opset": onnx_export.OPSET, "check_max_abs_diff": checks.onnx_diff(path, arrays, CHECK_STEPS)}


def _savedmodel(arrays, path: Path, *_) -> dict:
    from textgen.export import checks, savedmodel

    version = savedmodel.save(arrays, path)
    return {"check_max_abs_diff": checks.savedmodel_diff(version, arrays, CHECK_STEPS), "version": version.name}


def _tflite(arrays, path: Path, *_) -> dict:
    from textgen.export import checks, tflite

    path.write_bytes(tflite.convert(arrays))
    return {"check_max_abs_diff": checks.tflite_diff(path, arrays, CHECK_STEPS)}


EXPORTERS = {"html": _html, "onnx": _onnx, "savedmodel": _savedmodel, "tflite": _tflite}
FORMATS = tuple(EXPORTERS)


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
    _check_writable(output)
    # Every file is written under a temporary name and renamed into place only when the
    # export and its check succeeded (the TFLite metadata file first, then the model).
    with contextlib.ExitStack() as stack:
        temp = stack.enter_context(atomic_path(output))
        if format == "tflite":
            stack.enter_context(atomic_path(extra[0])).write_text(
                json.dumps(arrays.metadata(), ensure_ascii=False, indent=1), encoding="utf-8")
            result["metadata"] = str(extra[0])
        written = EXPORTERS[format](arrays, temp, info, precision, ckpt.step, measure_bpc)
        if format == "savedmodel":
            written["serving_version"] = str(output / written.pop("version"))
        result.update(written)
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
