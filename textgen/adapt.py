"""Dynamic evaluation (`textgen evaluate --adapt`): the model keeps learning as it reads the text.

After Krause et al. (2018), "Dynamic Evaluation of Neural Sequence Models": the text is read as
one stream in segments of `segment` characters, the LSTM state carried from one to the next;
each segment is scored with the weights as they are, and only then do the weights take one
plain SGD step on that segment's loss. So every character is predicted by a model that has seen
everything before it and nothing after. The figure is a separate, labelled number: the adapted
weights are never saved, and no checkpoint is ever picked by it. With `rate` 0 the same pass
scores one continuous stream without learning (what the adaptation is measured against).
"""

from __future__ import annotations

import math
import time

import numpy as np

from textgen.errors import ConfigError

RATE = 0.2  # SGD step on a segment's mean loss: safe for both models swept, benchmarks/README.md "Dynamic evaluation"
SEGMENT = 100


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ConfigError(f"--adapt-rate must be a number. Received: adapt_rate={rate!r}")
    r = float(rate)
    if math.isnan(r) or math.isinf(r) or r < 0:
        raise ConfigError(f"--adapt-rate must be a finite number >= 0. Received: adapt_rate={rate}")
    return r


def adapted_score(model_config, arrays: dict, ids: np.ndarray, rate: float = RATE,
                  segment: int = SEGMENT) -> dict:
    """Sum and mean of -log p(next char) over `ids[1:]`, read as one stream that learns as it
    goes (see the module docstring); a rate that is not a finite number >= 0 is a ConfigError
    before anything is built."""
    rate = check_rate(rate)
    import tensorflow as tf

    from textgen.training.model import build_model, reset_states
    from textgen.training.variables import assign_trainable_arrays

    model = build_model(model_config, batch_size=1, seq_len=None)
    assign_trainable_arrays(model, arrays)
    reset_states(model)
    weights = model.trainable_variables

    @tf.function(input_signature=[tf.TensorSpec((1, None), tf.int32), tf.TensorSpec((1, None), tf.int32)])
    def read(inputs, targets):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(inputs, training=False), tf.float32)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
            mean = tf.reduce_mean(losses)
        if rate > 0:  # after the segment is scored: one step on its mean loss
            for weight, grad in zip(weights, tape.gradient(mean, weights)):
                weight.assign_sub(tf.cast(rate * tf.convert_to_tensor(grad), weight.dtype))
        return tf.reduce_sum(losses)

    ids = np.asarray(ids, dtype=np.int32)
    total, began = 0.0, time.time()
    for start in range(0, len(ids) - 1, segment):
        stop = min(start + segment, len(ids) - 1)
        total += float(read(ids[None, start:stop], ids[None, start + 1: stop + 1]))
    count = len(ids) - 1
    return {"nats_per_char": total / count, "bits_per_char": total / count / math.log(2.0), "scored": count,
            "learning_rate": rate, "segment": segment, "seconds": round(time.time() - began, 2)}
