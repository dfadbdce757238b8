"""Import Keras lazily and quietly.

Importing TensorFlow takes about 3 s and prints C++ log lines about missing CUDA drivers
on CPU-only machines. Commands that do not need Keras (sample, prepare, runs) never import
it; the others call `quiet_import_keras()`, which hides those start-up lines (and only
those: once Keras is imported, stderr is restored).
"""

from __future__ import annotations

import os
import sys
import tempfile


def quiet_import_keras():
    """Import and return `keras`, silencing TensorFlow's start-up chatter on stderr."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return keras
