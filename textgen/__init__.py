"""textgen: character-level LSTM text generation.

The Python API (loaded on first use, so ``import textgen`` stays light and imports no TensorFlow):

    >>> import textgen
    >>> run = textgen.train("shakespeare", time_limit=60)
    >>> model = textgen.load(run.name)
    >>> print(model.sample("ROMEO:", length=200, temperature=0.7, seed=1))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Model", "Run", "TextgenError", "__version__", "load", "runs", "train"]

_LAZY = {"train": "textgen.api", "load": "textgen.api", "runs": "textgen.api", "Run": "textgen.api",
         "Model": "textgen.api", "TextgenError": "textgen.errors"}

if TYPE_CHECKING:
    from textgen.api import Model, Run, load, runs, train
    from textgen.errors import TextgenError


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'textgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
