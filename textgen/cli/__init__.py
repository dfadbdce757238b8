"""The `textgen` command line: a Typer app whose commands parse options, call the library, and present.

One module per command group; each has `register(app)`. Shared consoles, options, the
one-line error funnel and JSON output live in `textgen.cli.common`.
"""

from __future__ import annotations

from importlib import import_module

import typer

from textgen.cli.common import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
    help="Character-level LSTM text generation: prepare a corpus, train, sample, evaluate, serve over HTTP, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# ----------------------------------------------------------------------------- command modules
# One line per module, `import_module("textgen.cli.<module>").register(app)`, in the order
# `textgen --help` lists them. Each module imports its library lazily, inside its commands.
import_module("textgen.cli.prepare").register(app)
import_module("textgen.cli.train").register(app)
import_module("textgen.cli.sample").register(app)
import_module("textgen.cli.evaluate").register(app)
import_module("textgen.cli.runs").register(app)
import_module("textgen.cli.serve").register(app)
import_module("textgen.cli.export").register(app)
import_module("textgen.cli.demos").register(app)
import_module("textgen.cli.info").register(app)
# ----------------------------------------------------------------------------- end of command modules


def main():
    app()


if __name__ == "__main__":
    main()
