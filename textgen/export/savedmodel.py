"""The step contract as a TensorFlow SavedModel (a tf.Module built from the run's arrays).

Layout (TF Serving's: a model base path holding numbered versions):
    <output>/1/saved_model.pb, variables/, assets/textgen.json
Signatures: `serving_default` and `step` (ids int64 [batch], state float32
[num_layers, 2, batch, units] -> logits, new_state), `initial_state` (batch_size int32 ->
state of zeros) and `metadata` (no inputs -> vocab, the list of characters, and
metadata_json). The loaded object also has the attributes `vocab` (string tensor) and
`metadata_json` (JSON: vocab, start_id, run, textgen_version, num_layers, units).
"""

from __future__ import annotations

import json
from pathlib import Path

from textgen.export.model_arrays import ModelArrays

VERSION_DIR = "1"
METADATA_ASSET = "textgen.json"


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError:
        from textgen.errors import MissingExtraError

        raise MissingExtraError('This export needs TensorFlow: pip install "textgen[export]" tensorflow') from None
    return tf


def step_module(arrays: ModelArrays, asset_path: Path | None = None):
    """A tf.Module whose `step(ids, state)` follows the step contract with these arrays."""
    tf = _tensorflow()
    num_layers, units = arrays.num_layers, arrays.units

    class TextgenStep(tf.Module):
        def __init__(self):
            super().__init__(name="textgen")
            constant = lambda value, name: tf.Variable(value, trainable=False, name=name)  # noqa: E731
            self.table = constant(arrays.first_layer_table(), "table_0")
            self.recurrents = [constant(arrays.recurrents[i], f"recurrent_{i}") for i in range(num_layers)]
            self.kernels = [constant(arrays.kernels[i], f"kernel_{i}") for i in range(1, num_layers)]
            self.biases = [constant(arrays.biases[i], f"bias_{i}") for i in range(1, num_layers)]
            self.out_kernel = constant(arrays.out_kernel, "out_kernel")
            self.out_bias = constant(arrays.out_bias, "out_bias")
            self.vocab = tf.Variable(list(arrays.vocab), trainable=False, dtype=tf.string, name="vocab")
            self.metadata_json = tf.Variable(json.dumps(arrays.metadata(), ensure_ascii=False), trainable=False,
                                             dtype=tf.string, name="metadata_json")
            if asset_path is not None:
                self.metadata_file = tf.saved_model.Asset(str(asset_path))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids"),
                                      tf.TensorSpec([num_layers, 2, None, units], tf.float32, name="state")])
        def step(self, ids, state):
            pairs, below = [], None
            for i in range(num_layers):
                h, c = state[i, 0], state[i, 1]
                z = tf.matmul(h, self.recurrents[i])
                if i == 0:
                    z = z + tf.gather(self.table, ids)
                else:
                    z = z + tf.matmul(below, self.kernels[i - 1]) + self.biases[i - 1]
                gate_i, gate_f, gate_c, gate_o = tf.split(z, 4, axis=1)  # Keras' gate order
                c = tf.sigmoid(gate_f) * c + tf.sigmoid(gate_i) * tf.tanh(gate_c)
                h = tf.sigmoid(gate_o) * tf.tanh(c)
                pairs.append(tf.stack([h, c]))
                below = h
            logits = tf.matmul(below, self.out_kernel) + self.out_bias
            return {"logits": logits, "new_state": tf.stack(pairs)}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")])
        def initial_state(self, batch_size):
            return {"state": tf.zeros(tf.stack([num_layers, 2, batch_size, units]), tf.float32)}

        @tf.function(input_signature=[])
        def metadata(self):
            return {"vocab": tf.identity(self.vocab), "metadata_json": tf.identity(self.metadata_json)}

    return TextgenStep()


def save(arrays: ModelArrays, directory: Path, with_metadata: bool = True) -> Path:
    """Save the SavedModel of `arrays` into `directory`/1; returns that version directory."""
    tf = _tensorflow()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    asset = None
    if with_metadata:
        asset = directory / METADATA_ASSET
        asset.write_text(json.dumps(arrays.metadata(), ensure_ascii=False, indent=1), encoding="utf-8")
    module = step_module(arrays, asset)
    version = directory / VERSION_DIR
    signatures = {"serving_default": module.step, "step": module.step,
                  "initial_state": module.initial_state, "metadata": module.metadata}
    tf.saved_model.save(module, str(version), signatures=signatures)
    if asset is not None:
        asset.unlink()  # the copy under <version>/assets/ is the one that travels
    return version
