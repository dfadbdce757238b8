"""Which LSTM layers take the fused cuDNN kernel, and why not.

The rules below are the ones Keras 3.15 applies before it calls the fused kernel
(keras/src/layers/rnn/lstm.py `LSTM.inner_loop`, and `cudnn_ok` in
keras/src/backend/{tensorflow,jax,torch}/rnn.py):

- `use_cudnn` is "auto" or True,
- `recurrent_dropout == 0`,
- `activation` is tanh and `recurrent_activation` is sigmoid, compared by identity
  (the Keras, `keras.ops` or backend function object, not "a function that computes tanh"),
- `unroll=False`, `use_bias=True`,
- no mask (JAX and PyTorch refuse any mask; TensorFlow accepts only strictly right-padded
  ones, which a character model never needs, so any mask counts as a breaker here),
- and a GPU the backend can see (TensorFlow: a logical GPU; JAX: default backend "gpu";
  PyTorch: CUDA with cuDNN).
"""

from __future__ import annotations

from textgen import devices
from textgen.backend import quiet_import_keras


def cudnn_available() -> bool:
    """Whether the backend would call cuDNN for an eligible LSTM (Keras' own device test)."""
    name = devices.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU")) and tf.test.is_built_with_cuda()
    if name == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if name == "torch":
        import torch

        return torch.cuda.is_available() and torch.backends.cudnn.is_available()
    return False


def _functions(name: str) -> tuple:
    """The function objects Keras accepts as `name` (tanh / sigmoid) for the fused kernel."""
    keras = quiet_import_keras()
    accepted = [getattr(keras.activations, name), getattr(keras.ops, name)]
    current = devices.backend()
    if current == "tensorflow":
        import tensorflow as tf

        accepted.append(getattr(tf, name) if name == "tanh" else tf.sigmoid)
    elif current == "jax" and name == "tanh":  # Keras' JAX check accepts jnp.tanh, not a jax sigmoid
        import jax.numpy as jnp

        accepted.append(jnp.tanh)
    elif current == "torch":
        import torch

        accepted.append(getattr(torch, name))
    return tuple(accepted)


def _function_name(fn) -> str:
    return getattr(fn, "__name__", repr(fn))


def sublayers(layer, prefix: str = ""):
    """(path, layer) for every layer nested inside `layer`, depth first."""
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{sub.name}"
        yield path, sub
        yield from sublayers(sub, path + "/")


def _mask_producers(model) -> list:
    keras = quiet_import_keras()
    found = []
    for path, layer in sublayers(model):
        if isinstance(layer, keras.layers.Masking):
            found.append(f"{path} (Masking)")
        elif isinstance(layer, keras.layers.Embedding) and layer.mask_zero:
            found.append(f"{path} (Embedding with mask_zero=True)")
    return found


def lstm_reasons(layer, masks: list = ()) -> list:
    """Why `layer` (a keras.layers.LSTM) cannot take the fused cuDNN kernel; [] if it can."""
    reasons = []
    if layer.use_cudnn not in ("auto", True):
        reasons.append(f"use_cudnn must be 'auto' or True. Received: use_cudnn={layer.use_cudnn!r}")
    if layer.recurrent_dropout:
        reasons.append(f"recurrent_dropout must be 0 (use a Dropout layer between LSTMs instead). "
                       f"Received: recurrent_dropout={layer.recurrent_dropout}")
    if layer.activation not in _functions("tanh"):
        reasons.append(f"activation must be tanh. Received: activation={_function_name(layer.activation)}")
    if layer.recurrent_activation not in _functions("sigmoid"):
        reasons.append("recurrent_activation must be sigmoid. "
                       f"Received: recurrent_activation={_function_name(layer.recurrent_activation)}")
    if layer.unroll:
        reasons.append(f"unroll must be False. Received: unroll={layer.unroll}")
    if not layer.use_bias:
        reasons.append(f"use_bias must be True. Received: use_bias={layer.use_bias}")
    for producer in masks:
        reasons.append(f"inputs must not be masked. Received: a mask from {producer}")
    return reasons


def cudnn_report(model) -> list:
    """One dict per keras.layers.LSTM inside `model`: layer path, units, eligible, reasons.

    `eligible` says whether the layer's arguments allow the fused kernel on any backend;
    whether it is actually used also needs a GPU (`cudnn_available()`).
    """
    keras = quiet_import_keras()
    masks = _mask_producers(model)
    report = []
    for path, layer in sublayers(model):
        if isinstance(layer, keras.layers.LSTM):
            reasons = lstm_reasons(layer, masks)
            report.append({"layer": path, "units": layer.units, "eligible": not reasons, "reasons": reasons})
    return report


def cudnn_warnings(report: list) -> list:
    """Loud one-line warnings for the layers of `report` that will not take cuDNN."""
    return [f"LSTM layer {r['layer']} cannot use the fused cuDNN kernel (GPU training will be several "
            f"times slower): {'; '.join(r['reasons'])}" for r in report if not r["eligible"]]
