"""What every command shares: the consoles, the one-line error funnel, common options, JSON output.

Errors: every `TextgenError` (and every usage error) is printed as one line on stderr,
`Error: ...`, with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from textgen.errors import TextgenError

try:  # Typer >= 0.24 vendors Click; older releases use the click package.
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1):
    """Print one line to stderr and exit with `code`."""
    sys.stdout.flush()
    text = " ".join(str(message).split())
    print(f"Error: {text}", file=sys.stderr, flush=True)
    sys.exit(code)


class OneLineErrors(TyperGroup):
    """Turns user mistakes (ours and Click's) into one-line messages without tracebacks."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if hasattr(signal, "SIGXFSZ"):  # a file-size limit must surface as an error message, not a crash
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
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
        except OSError as e:  # disk full, permission denied, file-size limit...
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}", 1)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`): not an error
            sys.exit(0)
        sys.exit(rv if isinstance(rv, int) else 0)


CheckpointsOption = Annotated[
    Path, typer.Option("--checkpoints", help="Directory holding the runs.", envvar="TEXTGEN_CHECKPOINTS")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]


def emit_json(obj) -> None:
    """Print `obj` as one JSON object on stdout (the only thing `--json` writes there)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
