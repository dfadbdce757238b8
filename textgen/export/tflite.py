"""The step contract as a TensorFlow Lite flatbuffer, with TFLite built-in ops only.

Built from the same tf.Module as the SavedModel (textgen.export.savedmodel), converted with
`tf.lite.TFLiteConverter` restricted to TFLITE_BUILTINS: if some op had no built-in kernel
the conversion fails with a clear error instead of silently needing the Flex (select TF ops)
delegate, which Android and microcontroller builds usually lack.

Signature `serving_default`: inputs ids (int64 [batch]) and state (float32
[num_layers, 2, batch, units]); outputs logits and new_state. TFLite models have no
convenient place for a vocabulary, so the metadata (vocab, start_id, run, textgen_version,
num_layers, units) is written as JSON beside the model: `<output>.json`
(e.g. shakespeare.tflite.json).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from textgen.errors import ConfigError
from textgen.export.model_arrays import ModelArrays
from textgen.export.savedmodel import _tensorflow, save

SIGNATURE = "serving_default"


def metadata_path(output: Path) -> Path:
    """Where the metadata JSON of a .tflite file lives: beside it, `<name>.json`."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def convert(arrays: ModelArrays) -> bytes:
    """The .tflite flatbuffer of `arrays` (TFLite built-in ops only)."""
    tf = _tensorflow()
    with tempfile.TemporaryDirectory(prefix="textgen-tflite-") as scratch:
        version = save(arrays, Path(scratch) / "savedmodel", with_metadata=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(version), signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = False
        try:
            return converter.convert()
        except Exception as e:  # the converter raises ConverterError (and others) with long logs
            text = str(e)
            if "Flex" in text or "Select TF" in text or "select_tf_ops" in text or "not supported" in text:
                raise ConfigError(
                    "This model needs TensorFlow ops that TFLite has no built-in kernel for (it would need "
                    "the Flex delegate); export --format onnx or --format savedmodel instead. "
                    f"Received: {text.strip().splitlines()[-1][:200]}"
                ) from None
            raise


def interpreter(model_path):
    """A TFLite interpreter for `model_path` (ai-edge-litert, else TensorFlow's own)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tensorflow.lite import Interpreter
        except ImportError:
            from textgen.errors import MissingExtraError

            raise MissingExtraError('Running a .tflite file needs ai-edge-litert: pip install "textgen[export]"') \
                from None
    return Interpreter(model_path=str(model_path))
