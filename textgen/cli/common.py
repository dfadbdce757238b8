"""What every command shares: the consoles, the one-line error funnel, common options, JSON output.

Errors: every `TextgenError` (and every usage error) is printed as one line on stderr,
`Error: ...`, with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from textgen.errors import TextgenError

try:  # Typer >= 0.24 vendors Click; older releases use the click package.
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions



def reader_gone():
    """Exit quietly (status 0) after stdout's reader closed the pipe: what is still buffered
    goes to /dev/null, so the flush at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


class _Console(Console):
    def on_broken_pipe(self) -> None:  # Rich exits with status 1; a reader that left is no error
        self.quiet = True
        reader_gone()


out = _Console(highlight=False)
err = _Console(stderr=True, highlight=False)


def _quiet_help_consoles() -> None:
    """Typer prints `--help` through a Rich console of its own, which exits with status 1 when the
    reader has gone (`textgen --help | head -1`); give its consoles our quiet exit. Done when the
    CLI runs, not on import, so a program that imports textgen keeps Rich as it was."""
    from typer import rich_utils

    make = rich_utils._get_rich_console
    if getattr(make, "quiet_pipe", False):
        return

    def console(stderr: bool = False) -> Console:
        made = make(stderr)
        made.on_broken_pipe = _Console.on_broken_pipe.__get__(made)
        return made

    console.quiet_pipe = True
    rich_utils._get_rich_console = console


def fail(message: str, code: int = 1):
    """Print one line to stderr and exit with `code`."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()
    text = " ".join(str(message).split())
    print(f"Error: {text}", file=sys.stderr, flush=True)
    sys.exit(code)


def _no_type_hint(ctx=None):
    return None


def plain_help(command, ctx) -> None:
    """Drop the type hints (`<int>`, `<bool>`, `<path>`) that Typer's help tables print beside
    every option of `command` and its sub-commands; choices (`digits|fashion`) stay."""
    for param in command.get_params(ctx):  # includes --help, which Click creates on first use
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is not None and not descriptor.is_choice:
            param.display_type_rich = _no_type_hint
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub, ctx)


class OneLineErrors(TyperGroup):
    """Turns user mistakes (ours and Click's) into one-line messages without tracebacks,
    and prints help tables without type hints."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            plain_help(command, ctx)
        return command

    def format_help(self, ctx, formatter):
        plain_help(self, ctx)
        return super().format_help(ctx, formatter)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # here, before Typer's own handler turns it into exit status 1
            reader_gone()

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if hasattr(signal, "SIGXFSZ"):  # a file-size limit must surface as an error message, not a crash
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _quiet_help_consoles()
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except TextgenError as e:
            fail(str(e), e.exit_code)
        except click_exceptions.NoArgsIsHelpError as e:
            print(e.ctx.get_help() if e.ctx else str(e))
            sys.exit(0)
        except click_exceptions.UsageError as e:
            hint = f" (see: {e.ctx.command_path} --help)" if e.ctx else ""
            fail(f"{e.format_message()}{hint}", 2)
        except typer.Abort:
            fail("Aborted.", 130)
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            fail("Interrupted.", 130)
        except BrokenPipeError:  # before OSError, its base: the reader went away (`| head`), not an error
            reader_gone()
        except OSError as e:  # disk full, permission denied, file-size limit...
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


CheckpointsOption = Annotated[
    Path, typer.Option("--checkpoints", help="Directory holding the runs.", envvar="TEXTGEN_CHECKPOINTS")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]

# What a corpus is read from besides files and folders (`textgen prepare` and `textgen train`).
GlobOption = Annotated[Optional[str], typer.Option(help="With folders: read only the files whose names match this pattern, e.g. '*.py' (each file a document).")]
JsonlOption = Annotated[Optional[Path], typer.Option(help="A JSON Lines file: each record's --text-field is a document (instead of a corpus path).", show_default=False)]
TextFieldOption = Annotated[Optional[str], typer.Option(help="With --jsonl: the field holding each record's text.")]
LabelFieldOption = Annotated[Optional[str], typer.Option(help="With --jsonl: a field whose value labels the record; the model learns to write for a label (textgen sample --label X).")]
CsvOption = Annotated[Optional[Path], typer.Option(help="A CSV file with a header row: each row's --text-column is a document.", show_default=False)]
TextColumnOption = Annotated[Optional[str], typer.Option(help="With --csv: the column holding each row's text.")]
LabelColumnOption = Annotated[Optional[str], typer.Option(help="With --csv: a column whose value labels the row (textgen sample --label X).")]


def emit_json(obj) -> None:
    """Print `obj` as one JSON object on stdout (the only thing `--json` writes there)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def compact_count(value) -> str:
    """A count in at most four characters plus a unit: 950, 12K, 1.8M, 3.3G."""
    value = int(value or 0)
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if value >= size * 0.9995:  # 999,960 reads 1.0M, not 1000K
            scaled = value / size
            return f"{scaled:.1f}{unit}" if round(scaled, 1) < 10 else f"{scaled:.0f}{unit}"
    return str(value)


def compact_duration(seconds) -> str:
    """A duration in at most six characters: 45s, 1m07s, 2h03m, 3d04h."""
    seconds = int(round(seconds or 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
