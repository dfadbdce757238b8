"""One exception family for every mistake a user can make, and the checks that raise it.

The CLI catches `TextgenError`, prints its message on one line to stderr and exits
non-zero; the HTTP server turns it into an error object. Anything else reaching a
front-end is a bug and keeps its traceback.
"""

from __future__ import annotations


class TextgenError(Exception):
    """A user-facing failure: the message says what happened and what was received."""

    exit_code = 1


class CorpusError(TextgenError):
    """The corpus cannot be read, decoded or used for training."""


class CheckpointError(TextgenError):
    """A run directory is missing, incompatible, damaged or locked."""


class ConfigError(TextgenError):
    """An option value is out of range or options contradict each other."""


class DownloadError(TextgenError):
    """A named corpus could not be fetched or failed its checksum."""


class DataError(TextgenError):
    """An image data set is missing, malformed, or cannot be downloaded."""


class DivergedError(TextgenError):
    """Training produced a non-finite loss (the run's last good checkpoint is kept)."""


class MissingExtraError(TextgenError):
    """A feature needs an optional dependency that is not installed."""


def positive_int(name: str, value, allow_none: bool = False, option: bool = False):
    """`value` if it is an integer >= 1 (or None when allowed), else a ConfigError.

    `option=True` names it as a command-line option (`--num-samples`) in the message.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = "--" + name.replace("_", "-") if option else name
        raise ConfigError(f"{shown} must be a positive integer. Received: {name.replace('-', '_')}={value!r}")
    return value


def positive_number(name: str, value, allow_none: bool = False, option: bool = False):
    """`value` if it is a finite number > 0 (or None when allowed), else a ConfigError."""
    import math

    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        shown = "--" + name.replace("_", "-") if option else name
        raise ConfigError(f"{shown} must be a positive number. Received: {name.replace('-', '_')}={value!r}")
    return value
