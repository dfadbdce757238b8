"""Run an exported file in its own runtime for a few steps and compare with the numpy engine.

Each check feeds the same ids to two streams of the exported model and to textgen's engine
and returns the largest absolute difference of the log-softmax (per character, over the
vocabulary). The export refuses to finish when it exceeds TOLERANCE.
"""

from __future__ import annotations

import numpy as np

from textgen.export.model_arrays import ModelArrays, reference_engine
from textgen.generation.draw import log_softmax

TOLERANCE = 1e-4


def compare(step, arrays: ModelArrays, steps: int) -> float:
    """Max |log-softmax difference| between `step(ids, state) -> (logits, new_state)` and the
    engine over `steps` steps of two streams with different ids."""
    engine = reference_engine(arrays)
    reference_state = engine.initial_state(2)
    state = np.zeros((arrays.num_layers, 2, 2, arrays.units), np.float32)
    worst = 0.0
    for t in range(steps):
        ids = np.array([(7 * t + 1) % arrays.vocab_size, (3 * t + 2) % arrays.vocab_size], dtype=np.int64)
        logits, state = step(ids, state)
        expected = engine.step(ids.astype(np.intp), reference_state)
        worst = max(worst, float(np.abs(log_softmax(logits) - log_softmax(expected)).max()))
    if not worst <= TOLERANCE:
        from textgen.errors import CheckpointError

        raise CheckpointError(f"The exported model disagrees with textgen's engine: max |log p difference| "
                              f"{worst:.3g} > {TOLERANCE:g}. Received: run={arrays.run!r}")
    return worst


def onnx_diff(path, arrays: ModelArrays, steps: int) -> float:
    try:
        import onnxruntime
    except ImportError:
        from textgen.errors import MissingExtraError

        raise MissingExtraError('Checking an ONNX export needs onnxruntime: pip install "textgen[export]"') from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return compare(lambda ids, state: session.run(["logits", "new_state"], {"ids": ids, "state": state}),
                   arrays, steps)


def savedmodel_diff(version_dir, arrays: ModelArrays, steps: int) -> float:
    from textgen.export.savedmodel import _tensorflow

    tf = _tensorflow()
    model = tf.saved_model.load(str(version_dir))

    def step(ids, state):
        out = model.step(tf.constant(ids), tf.constant(state))
        return out["logits"].numpy(), out["new_state"].numpy()

    return compare(step, arrays, steps)


def tflite_diff(path, arrays: ModelArrays, steps: int) -> float:
    from textgen.export.tflite import SIGNATURE, interpreter

    runner = interpreter(path).get_signature_runner(SIGNATURE)

    def step(ids, state):
        out = runner(ids=ids, state=state)
        return out["logits"], out["new_state"]

    return compare(step, arrays, steps)
