"""What this machine will run textgen on: versions, devices, cuDNN, precision and XLA.

Backend-neutral: the backend's own libraries are imported lazily and only for the backend
Keras runs on (`tensorflow` for tensorflow, `jax` for jax, `torch` for torch), so asking
about devices never drags a second framework in.

The cuDNN rules below are the ones Keras 3.15 applies before it calls the fused kernel
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

import contextlib
import os
import platform
import shutil
import subprocess

from textgen import files
from textgen.backend import quiet_import_keras
from textgen.config import PRECISIONS
from textgen.errors import ConfigError

# CPU flags (Linux /proc/cpuinfo) of units that compute bfloat16 natively, and their names.
BFLOAT16_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"))
DISTRIBUTIONS = files.FRAMEWORKS


def backend() -> str:
    return quiet_import_keras().backend.backend()


# ----------------------------------------------------------------------------- versions


def versions() -> dict:
    """Python, textgen, the Keras backend and the installed framework versions (None: absent)."""
    return files.versions(backend())


def metadata_version(distribution: str):
    """The installed version of `distribution`, or None."""
    return files.package_version(distribution)


# ----------------------------------------------------------------------------- devices


def _host_cpu() -> dict:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"type": "CPU", "id": "CPU:0", "name": name, "cores": os.cpu_count(), "memory_bytes": memory}


def _nvidia_smi_memory() -> list:
    """Total memory in bytes of each NVIDIA GPU, in nvidia-smi's order ([] if unavailable)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10, check=True).stdout
        return [int(float(line)) * 2**20 for line in text.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def _tensorflow_gpus() -> list:
    import tensorflow as tf

    memory = _nvidia_smi_memory()
    gpus = []
    for i, device in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        gpus.append({"type": "GPU", "id": f"GPU:{i}", "name": details.get("device_name", device.name),
                     "memory_bytes": memory[i] if i < len(memory) else None,
                     "compute_capability": ".".join(map(str, capability)) if capability else None})
    return gpus


def _jax_gpus() -> list:
    import jax

    gpus = []
    for device in jax.devices():
        if device.platform != "gpu":
            continue
        try:
            memory = (device.memory_stats() or {}).get("bytes_limit")
        except Exception:  # memory_stats is optional for a PJRT plugin
            memory = None
        gpus.append({"type": "GPU", "id": f"GPU:{device.id}", "name": device.device_kind,
                     "memory_bytes": memory,
                     "compute_capability": getattr(device, "compute_capability", None)})
    return gpus


def _torch_gpus() -> list:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"type": "GPU", "id": f"GPU:{i}", "name": props.name,
                         "memory_bytes": int(props.total_memory),
                         "compute_capability": f"{props.major}.{props.minor}"})
    return gpus


def list_devices() -> list:
    """The host CPU, then every GPU the current Keras backend can see."""
    gpus = {"tensorflow": _tensorflow_gpus, "jax": _jax_gpus, "torch": _torch_gpus}.get(backend(), list)()
    return [_host_cpu(), *gpus]


def gpu_available() -> bool:
    return any(d["type"] == "GPU" for d in list_devices())


def cudnn_available() -> bool:
    """Whether the backend would call cuDNN for an eligible LSTM (Keras' own device test)."""
    name = backend()
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


# ----------------------------------------------------------------------------- cuDNN eligibility


def _functions(name: str) -> tuple:
    """The function objects Keras accepts as `name` (tanh / sigmoid) for the fused kernel."""
    keras = quiet_import_keras()
    accepted = [getattr(keras.activations, name), getattr(keras.ops, name)]
    current = backend()
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


def _sublayers(layer, prefix: str = ""):
    """(path, layer) for every layer nested inside `layer`, depth first."""
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{sub.name}"
        yield path, sub
        yield from _sublayers(sub, path + "/")


def _mask_producers(model) -> list:
    keras = quiet_import_keras()
    found = []
    for path, layer in _sublayers(model):
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
    for path, layer in _sublayers(model):
        if isinstance(layer, keras.layers.LSTM):
            reasons = lstm_reasons(layer, masks)
            report.append({"layer": path, "units": layer.units, "eligible": not reasons, "reasons": reasons})
    return report


def cudnn_warnings(report: list) -> list:
    """Loud one-line warnings for the layers of `report` that will not take cuDNN."""
    return [f"LSTM layer {r['layer']} cannot use the fused cuDNN kernel (GPU training will be several "
            f"times slower): {'; '.join(r['reasons'])}" for r in report if not r["eligible"]]


# ----------------------------------------------------------------------------- precision


def cpu_flags() -> set:
    """The CPU's feature flags from /proc/cpuinfo (an empty set where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def sampling_step_report() -> dict:
    """Which step `sample` and `serve` run: the compiled one (textgen/generation/_kernel.c) or numpy's."""
    from textgen.generation import kernel

    return kernel.status().record()


def native_bfloat16(flags: set | None = None) -> str | None:
    """The units with which this CPU computes bfloat16 natively ("AMX-BF16 and AVX-512 BF16"),
    or None where bfloat16 would be emulated (every AVX2-only CPU)."""
    flags = cpu_flags() if flags is None else flags
    return " and ".join(name for flag, name in BFLOAT16_FLAGS if flag in flags) or None


def check_mixed_precision(policy: str = "mixed_float16") -> None:
    """Refuse a mixed precision where it would only slow training.

    mixed_float16 needs a GPU (on a CPU float16 is emulated) and not JAX, whose cuDNN LSTM
    (jax.experimental.rnn, Keras 3.15) fails on float16 inputs ("Unknown output type float16",
    seen on an H100). mixed_bfloat16 is for CPUs that compute bfloat16 natively (AVX-512 BF16,
    AMX) and no GPU: elsewhere it is emulated.
    """
    if policy == "mixed_bfloat16":
        if gpu_available():
            raise ConfigError(
                "--precision mixed_bfloat16 is for CPU training; on a GPU use --mixed-precision "
                "(float16). Received: precision='mixed_bfloat16'"
            )
        if native_bfloat16() is None:
            raise ConfigError(
                f"--precision mixed_bfloat16 needs a CPU that computes bfloat16 natively (AVX-512 BF16 "
                f"or AMX); this one ({_host_cpu()['name']}) would emulate it, which only slows training. "
                "Received: precision='mixed_bfloat16'"
            )
        return
    if backend() == "jax":
        raise ConfigError(
            "--mixed-precision does not work on the jax backend: the cuDNN LSTM Keras uses there "
            "accepts float32 only. Use KERAS_BACKEND=tensorflow or torch for mixed_float16. "
            "Received: mixed_precision=True"
        )
    if not gpu_available():
        raise ConfigError(
            f"--mixed-precision needs a GPU, and the {backend()} backend sees none: on a CPU, float16 "
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


# ----------------------------------------------------------------------------- XLA


def jit_supported(model=None) -> tuple:
    """(supported, note): can the training step be compiled with XLA (`--jit`) here?

    With a model, this is Keras' own rule: every layer must allow it. On TensorFlow an LSTM
    that will run on cuDNN does not (cuDNN ops are not XLA-compatible).
    """
    name = backend()
    if model is not None and not all(layer.supports_jit for layer in model._flatten_layers()):
        blockers = [path for path, layer in _sublayers(model) if not layer.supports_jit]
        return False, (f"layers {', '.join(blockers)} cannot be XLA-compiled on {name}"
                       + (" (they run on cuDNN, which XLA cannot compile)" if cudnn_available() else ""))
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


# ----------------------------------------------------------------------------- the report


TENSORFLOW_ONLY = (
    ("tf.distribute", "train --strategy mirrored / multi-worker (several GPUs, several hosts)"),
    ("TensorBoard", "training curves written with tf.summary"),
)


def bfloat16_report(gpu: bool) -> dict:
    """Whether this CPU computes bfloat16 natively, and so whether new runs train in it."""
    from textgen.config import BFLOAT16_MIN_UNITS

    native = native_bfloat16()
    if gpu:
        note = "a GPU is visible: training runs there (float32, or mixed_float16 with --mixed-precision)"
    elif native:
        note = f"native on this CPU ({native}): new runs of {BFLOAT16_MIN_UNITS}+ units train in mixed_bfloat16 (--precision float32 to refuse)"
    else:
        note = "emulated by this CPU (it has no AVX-512 BF16 or AMX): not used; new runs train in float32"
    return {"native": native, "default": bool(native) and not gpu, "note": note}


def describe(model=None, precision: str = "float32", source: str = "defaults") -> dict:
    """Everything `textgen info` shows, as one JSON-ready dict."""
    name = backend()
    devices = list_devices()
    gpu = any(d["type"] == "GPU" for d in devices)
    cudnn_here = cudnn_available()
    report = cudnn_report(model) if model is not None else []
    eligible = all(r["eligible"] for r in report)
    if not report:
        why = "no LSTM layer"
    elif not eligible:
        why = "; ".join(f"{r['layer']}: {'; '.join(r['reasons'])}" for r in report if r["reasons"])
    elif not cudnn_here:
        why = f"no GPU with cuDNN visible to the {name} backend"
    else:
        why = None
    supported, note = jit_supported(model)
    tensorflow_installed = metadata_version("tensorflow") is not None
    return {
        "versions": versions(),
        "backend": name,
        "devices": devices,
        "gpu": gpu,
        "model": {"source": source, "precision": precision},
        "cudnn": {"layers": report, "eligible": bool(report) and eligible,
                  "used": bool(report) and eligible and cudnn_here, "why_not": why},
        "mixed_precision": {"available": gpu and name != "jax",
                            "note": "refused on jax (its cuDNN LSTM accepts float32 only)" if name == "jax"
                            else "mixed_float16 on the GPU" if gpu else "refused: no GPU (float16 only slows a CPU)"},
        "bfloat16": bfloat16_report(gpu),
        "sampling_step": sampling_step_report(),
        "jit": {"supported": supported, "note": note},
        "tensorflow_only": [
            {"feature": feature, "what": what,
             "available": name == "tensorflow" if feature == "tf.distribute" else tensorflow_installed}
            for feature, what in TENSORFLOW_ONLY
        ],
    }

