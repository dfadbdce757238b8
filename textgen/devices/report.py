"""Everything `textgen info` shows about this machine, as one JSON-ready dict."""

from __future__ import annotations

from textgen import devices
from textgen.devices import cudnn, xla

TENSORFLOW_ONLY = (
    ("tf.distribute", "train --strategy mirrored / multi-worker (several GPUs, several hosts)"),
    ("TensorBoard", "training curves written with tf.summary"),
)


def bfloat16_report(gpu: bool) -> dict:
    """Whether this CPU computes bfloat16 natively, and so whether new runs train in it."""
    from textgen.defaults import BFLOAT16_MIN_UNITS

    native = devices.native_bfloat16()
    if gpu:
        note = "a GPU is visible: training runs there (float32, or mixed_float16 with --mixed-precision)"
    elif native:
        note = f"native on this CPU ({native}): new runs of {BFLOAT16_MIN_UNITS}+ units train in mixed_bfloat16 (--precision float32 to refuse)"
    else:
        note = "emulated by this CPU (it has no AVX-512 BF16 or AMX): not used; new runs train in float32"
    return {"native": native, "default": bool(native) and not gpu, "note": note}


def sampling_step_report() -> dict:
    """Which step `sample` and `serve` run: the compiled one (textgen/generation/_kernel.c) or numpy's."""
    from textgen.generation import kernel

    return kernel.status().record()


def describe(model=None, precision: str = "float32", source: str = "defaults") -> dict:
    """Everything `textgen info` shows, as one JSON-ready dict."""
    name = devices.backend()
    found = devices.list_devices()
    gpu = any(d["type"] == "GPU" for d in found)
    cudnn_here = cudnn.cudnn_available()
    report = cudnn.cudnn_report(model) if model is not None else []
    eligible = all(r["eligible"] for r in report)
    if not report:
        why = "no LSTM layer"
    elif not eligible:
        why = "; ".join(f"{r['layer']}: {'; '.join(r['reasons'])}" for r in report if r["reasons"])
    elif not cudnn_here:
        why = f"no GPU with cuDNN visible to the {name} backend"
    else:
        why = None
    supported, note = xla.jit_supported(model)
    tensorflow_installed = devices.metadata_version("tensorflow") is not None
    return {
        "versions": devices.versions(),
        "backend": name,
        "devices": found,
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
