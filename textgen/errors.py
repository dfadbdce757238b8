"""One exception family for every mistake a user can make.

The CLI catches `TextgenError`, prints its message on one line to stderr and exits
non-zero. Anything else reaching the CLI is a bug and keeps its traceback.
"""


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
