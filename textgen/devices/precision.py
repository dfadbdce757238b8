"""Mixed precision: which policy this machine can train in, and setting it for the models built next."""

from __future__ import annotations

import contextlib

from textgen import devices
from textgen.backend import quiet_import_keras
from textgen.config import PRECISIONS
from textgen.errors import ConfigError


def check_mixed_precision(policy: str = "mixed_float16") -> None:
    """Refuse a mixed precision where it would only slow training.

    mixed_float16 needs a GPU (on a CPU float16 is emulated) and not JAX, whose cuDNN LSTM
    (jax.experimental.rnn, Keras 3.15) fails on float16 inputs ("Unknown output type float16",
    seen on an H100). mixed_bfloat16 is for CPUs that compute bfloat16 natively (AVX-512 BF16,
    AMX) and no GPU: elsewhere it is emulated.
    """
    if policy == "mixed_bfloat16":
        if devices.gpu_available():
            raise ConfigError(
                "--precision mixed_bfloat16 is for CPU training; on a GPU use --mixed-precision "
                "(float16). Received: precision='mixed_bfloat16'"
            )
        if devices.native_bfloat16() is None:
            raise ConfigError(
                f"--precision mixed_bfloat16 needs a CPU that computes bfloat16 natively (AVX-512 BF16 "
                f"or AMX); this one ({devices.host_cpu()['name']}) would emulate it, which only slows training. "
                "Received: precision='mixed_bfloat16'"
            )
        return
    if devices.backend() == "jax":
        raise ConfigError(
            "--mixed-precision does not work on the jax backend: the cuDNN LSTM Keras uses there "
            "accepts float32 only. Use KERAS_BACKEND=tensorflow or torch for mixed_float16. "
            "Received: mixed_precision=True"
        )
    if not devices.gpu_available():
        raise ConfigError(
            f"--mixed-precision needs a GPU, and the {devices.backend()} backend sees none: on a CPU, float16 "
            "arithmetic is emulated and only slows training. Received: mixed_precision=True"
        )


def apply_precision(policy: str) -> None:
    """Set Keras' global dtype policy (one of `PRECISIONS`) for models built next.

    Under mixed_float16 / mixed_bfloat16 variables stay float32 and layers compute in float16
    / bfloat16; `build_model` keeps the logits layer (and so the softmax and the loss) in
    float32. Under mixed_float16 Keras' compile wraps the optimizer in a LossScaleOptimizer
    (bfloat16 has float32's exponent range and needs no loss scaling).
    """
    if policy not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={policy!r}")
    quiet_import_keras().mixed_precision.set_global_policy(policy)


@contextlib.contextmanager
def precision_scope(policy: str):
    """Build models under `policy`, then restore the previous global policy."""
    keras = quiet_import_keras()
    previous = keras.mixed_precision.global_policy().name
    apply_precision(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
