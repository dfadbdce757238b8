"""What the benchmark scripts share: running textgen as a subprocess, its environment, peak RSS.

Scripts run as `python benchmarks/<name>.py`, so this directory is on `sys.path` and they
`import common`; importing it also puts the repository first on `sys.path`, so the textgen
measured is the one in this checkout. Nothing here imports TensorFlow: the parent process
of a subprocess benchmark stays small, and its own memory does not blur the child's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TEXTGEN = [sys.executable, "-m", "textgen"]


def sampling_step() -> str:
    """Which sampling step this checkout's textgen runs: "compiled" or "numpy".

    `pip install` compiles textgen/generation/_kernel.c into the installed package, not into the checkout,
    and `python -m textgen` run from here imports the checkout: without this, every sampling
    and serving figure would silently be the numpy step's (2-4x slower). So where the checkout
    has no compiled step, build it in place first (what `pip install` builds; gitignored).
    TEXTGEN_KERNEL=0 still selects numpy's step on purpose.
    """
    def kind() -> str:
        probe = "from textgen.generation import kernel; print(kernel.status().kind)"
        return subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    if kind() == "numpy" and os.environ.get("TEXTGEN_KERNEL") is None:
        print("building the compiled sampling step in this checkout (setup.py build_ext --inplace) ...",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=REPO, capture_output=True)
    return kind()


def environment(workdir: Path | None = None, unbuffered: bool = True, **extra: str) -> dict:
    """os.environ for a textgen child: quiet TensorFlow, output unbuffered (so logs are live),
    and with `workdir` its own cache and checkpoints directories under it."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    else:
        env.pop("PYTHONUNBUFFERED", None)
    if workdir is not None:
        env["TEXTGEN_CACHE_DIR"] = str(Path(workdir) / "cache")
        env["TEXTGEN_CHECKPOINTS"] = str(Path(workdir) / "checkpoints")
    env.update(extra)
    return env


def textgen(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m textgen ARGS` to completion, capturing its output as text."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([*TEXTGEN, *map(str, args)], env=env if env is not None else environment(), **kwargs)


def wait4(proc: subprocess.Popen) -> tuple[int, float, float]:
    """Reap `proc` with os.wait4: (exit code, its own peak RSS in MiB, its CPU seconds)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime  # Linux: ru_maxrss in KiB


def run_measured(args: list[str], env: dict, log: Path) -> dict:
    """Run a command with its output in `log`; its wall time, exit code, peak RSS (MiB) and CPU time.

    A failing command ends the benchmark with the tail of its log.
    """
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        rc, peak, cpu = wait4(proc)
        wall = time.perf_counter() - start
    if rc != 0:
        tail = Path(log).read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(map(str, args))} failed with exit code {rc}:\n{tail}")
    return {"seconds": wall, "rc": rc, "max_rss_mb": peak, "cpu_seconds": cpu, "log": str(log)}


def vm_rss_mb(pid: int) -> float | None:
    """The current resident memory of a running process (MiB), from /proc; None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def training_model(vocab_size: int, seed: int | None = None, **options):
    """The model `textgen train` trains, built and compiled by the same recipe
    (`textgen.training.model.build_training_model`); `options` override the defaults (batch_size,
    seq_len, learning_rate, clip_norm, precision, jit). Imports Keras."""
    from textgen.backend import quiet_import_keras
    from textgen.config import ModelConfig, TrainConfig
    from textgen.training.model import build_training_model

    model_options = {k: options.pop(k) for k in ("num_layers", "units", "embedding_dim", "dropout") if k in options}
    keras = quiet_import_keras()
    keras.utils.set_random_seed(TrainConfig.seed if seed is None else seed)
    return build_training_model(ModelConfig(vocab_size=vocab_size, **model_options), TrainConfig(), **options)
