"""Old home of `textgen info`; it moved to `textgen.cli.info`. Kept until tests/test_devices.py imports from there."""

from textgen.cli.info import info, register  # noqa: F401
