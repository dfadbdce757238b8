"""Whether the training step can be compiled with XLA (`--jit`) on this backend and model."""

from __future__ import annotations

from textgen import devices
from textgen.devices import cudnn
from textgen.errors import ConfigError


def jit_supported(model=None) -> tuple:
    """(supported, note): can the training step be compiled with XLA (`--jit`) here?

    With a model, this is Keras' own rule: every layer must allow it. On TensorFlow an LSTM
    that will run on cuDNN does not (cuDNN ops are not XLA-compatible).
    """
    name = devices.backend()
    if model is not None and not all(layer.supports_jit for layer in model._flatten_layers()):
        blockers = [path for path, layer in cudnn.sublayers(model) if not layer.supports_jit]
        return False, (f"layers {', '.join(blockers)} cannot be XLA-compiled on {name}"
                       + (" (they run on cuDNN, which XLA cannot compile)" if cudnn.cudnn_available() else ""))
    if name == "tensorflow":
        return True, "XLA via tf.function(jit_compile=True); Keras' default turns it off on CPU-only machines"
    if name == "jax":
        return True, "JAX always compiles the training step with XLA; --no-jit runs it op by op (debugging only)"
    if name == "torch":
        return True, "--jit uses torch.compile; Keras' default runs PyTorch eagerly"
    return False, f"no XLA on the {name} backend"


def jit_compile_value(requested: bool | None, model=None):
    """The `jit_compile` argument for `model.compile`: "auto" by default, or the user's choice."""
    if requested is None:
        return "auto"
    if requested:
        supported, note = jit_supported(model)
        if not supported:
            raise ConfigError(f"--jit is not possible here: {note}. Received: jit=True")
    return bool(requested)
