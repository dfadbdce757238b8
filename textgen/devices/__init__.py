"""What this machine will run textgen on: the Keras backend, versions, the CPU and the GPUs.

Backend-neutral: the backend's own libraries are imported lazily and only for the backend
Keras runs on (`tensorflow` for tensorflow, `jax` for jax, `torch` for torch), so asking
about devices never drags a second framework in. Beside this module: `cudnn` (which LSTMs
take the fused kernel), `xla` (--jit), `precision` (mixed precision policies) and `report`
(what `textgen info` shows).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

from textgen import files
from textgen.backend import quiet_import_keras

# CPU flags (Linux /proc/cpuinfo) of units that compute bfloat16 natively, and their names.
BFLOAT16_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"))
DISTRIBUTIONS = files.FRAMEWORKS


def backend() -> str:
    return quiet_import_keras().backend.backend()


def versions() -> dict:
    """Python, textgen, the Keras backend and the installed framework versions (None: absent)."""
    return files.versions(backend())


def metadata_version(distribution: str):
    """The installed version of `distribution`, or None."""
    return files.package_version(distribution)


def host_cpu() -> dict:
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
    return [host_cpu(), *gpus]


def gpu_available() -> bool:
    return any(d["type"] == "GPU" for d in list_devices())


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


def native_bfloat16(flags: set | None = None) -> str | None:
    """The units with which this CPU computes bfloat16 natively ("AMX-BF16 and AVX-512 BF16"),
    or None where bfloat16 would be emulated (every AVX2-only CPU)."""
    flags = cpu_flags() if flags is None else flags
    return " and ".join(name for flag, name in BFLOAT16_FLAGS if flag in flags) or None


# The concerns beside this module (each imports this one, which is complete by now).
from textgen.devices import cudnn, precision, report, xla  # noqa: E402

__all__ = ["cudnn", "precision", "report", "xla"]
