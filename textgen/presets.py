"""Former home of the size presets: they live in `textgen.config` now (kept while callers move)."""

from textgen.config import PRESETS, preset

__all__ = ["PRESETS", "preset"]
