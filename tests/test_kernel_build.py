"""The compiled step's build on other CPUs and from other sources, end to end in subprocesses:
on an emulated AVX2-only CPU (Debian's qemu-user, `qemu-x86_64 -cpu Haswell`: AVX2 and FMA,
no AVX-512; any AVX-512 instruction stops it) the loader picks the x86-64-v3 variant, which
writes the same text as on this machine; and `textgen info` says why a stale build is not used.

The children run outside the checkout (cwd=tmp_path): from its root, `import textgen` would
find the source tree instead of the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import missing, random_weights

from textgen.generation import kernel

QEMU = shutil.which("qemu-x86_64") or "/usr/bin/qemu-x86_64"
pytestmark = pytest.mark.slow

# Samples three streams with the compiled step (where the loader gives one) and reports what it ran.
SAMPLE = """
import json, sys
import numpy as np
from textgen.generation import kernel
from textgen.generation.engine import LSTMEngine
from textgen.generation.session import SamplingSession, StreamSpec

engine = LSTMEngine(dict(np.load(sys.argv[1])), 2)
texts = []
if engine.kind == "compiled":
    session = SamplingSession(engine, list("abcdefg"))
    options = [(0.7, None, None), (1.0, None, None), (1.4, None, None), (1.0, 3, None), (1.2, None, 0.9)]
    streams = [session.add(StreamSpec(prime="ab", length=300, temperature=t, top_k=k, top_p=p, seed=5, index=i))
               for i, (t, k, p) in enumerate(options)]  # temperature only: drawn in C; top-k / top-p: numpy
    while session.active:
        session.step(16)
    texts = [s.text for s in streams]
status, baseline = kernel.status(), kernel.open_library(variant=kernel.BASELINE)[0]
print(json.dumps({"kind": status.kind, "variant": status.variant, "reason": status.reason,
                  "level": baseline.tg_cpu_level(), "texts": texts}))
"""

# Steps the x86-64-v4 library past the loader's CPU check: what the old -march=native build did.
FORCED = """
import ctypes, sys
import numpy as np
from textgen.generation import kernel
from textgen.generation.engine import LSTMEngine

lib = ctypes.CDLL(str(kernel.library_path("x86-64-v4")))
kernel._declare(lib)
engine = LSTMEngine(dict(np.load(sys.argv[1])), 2, compiled=False)
(table, recurrent, _), rest = engine.layers[0], engine.layers[1:]
model = kernel.CompiledModel(lib, table, recurrent, [k for k, _, _ in rest], [b for _, _, b in rest],
                             engine.out_kernel, engine.out_bias)
runner = kernel.Runner(model, 8, threaded=False)
runner.step(8)
print("stepped")
"""


@pytest.fixture(scope="module")
def x86_64_variants():
    if kernel.load() is None:
        missing("textgen's compiled step", "pip install . with a C compiler (gcc)")
    if not all(kernel.library_path(v).is_file() for v in ("x86-64", "x86-64-v3", "x86-64-v4")):
        pytest.fail(f"the x86-64 variants were not all built: {sorted(p.name for p in kernel.HERE.glob('_kernel.*'))}")


def run(command: list, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, env={**os.environ, "TEXTGEN_KERNEL": "1", kernel.FORCE: "", **env},
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def report(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_avx2_only_cpu_runs_the_v3_variant_and_writes_the_same_text(x86_64_variants, tmp_path):
    if not os.access(QEMU, os.X_OK):
        missing("qemu-user (qemu-x86_64)", "apt-get install qemu-user")
    np.savez(tmp_path / "weights.npz", **random_weights(num_layers=2, vocab=7, units=24, scale=0.8))
    (tmp_path / "sample.py").write_text(SAMPLE, encoding="utf-8")
    (tmp_path / "forced.py").write_text(FORCED, encoding="utf-8")
    sample, weights = ["sample.py", "weights.npz"], "weights.npz"
    haswell = [QEMU, "-cpu", "Haswell", sys.executable]

    native = report(run([sys.executable, *sample], tmp_path, **{kernel.FORCE: "x86-64-v3"}))
    assert (native["kind"], native["variant"]) == ("compiled", "x86-64-v3")
    emulated = report(run([*haswell, *sample], tmp_path))
    assert emulated["level"] == 3 and (emulated["kind"], emulated["variant"]) == ("compiled", "x86-64-v3")
    assert emulated["texts"] == native["texts"] and len(set(native["texts"])) == 5
    assert all(len(text) == 300 for text in native["texts"])

    refused = report(run([*haswell, *sample], tmp_path, **{kernel.FORCE: "x86-64-v4"}))
    assert (refused["kind"], refused["texts"]) == ("numpy", [])
    assert refused["reason"] == f"{kernel.FORCE}=x86-64-v4 needs AVX-512, which this CPU lacks; it runs x86-64-v3"

    # The hazard the loader avoids, and proof the emulator would catch a wrong choice.
    assert run([sys.executable, "forced.py", weights], tmp_path).stdout.strip() == "stepped"
    died = run([*haswell, "forced.py", weights], tmp_path)
    assert died.returncode == -signal.SIGILL and "stepped" not in died.stdout


def test_textgen_info_says_why_a_stale_build_is_not_used(x86_64_variants, tmp_path):
    """A copy of the package whose _kernel.c was edited after its in-place build."""
    package = Path(kernel.__file__).parents[1]
    shutil.copytree(package, tmp_path / "textgen", ignore=shutil.ignore_patterns("__pycache__"))
    source = tmp_path / "textgen" / "generation" / "_kernel.c"
    source.write_text(source.read_text(encoding="utf-8") + "/* edited after the build */\n", encoding="utf-8")
    info = run([sys.executable, "-m", "textgen", "info"], tmp_path, PYTHONPATH=str(tmp_path), COLUMNS="1000")
    assert info.returncode == 0, info.stderr[-2000:]
    [line] = [line for line in info.stdout.splitlines() if line.startswith("sampling step:")]
    stale = kernel.library_path(kernel.BASELINE).name  # the loader checks the baseline first
    assert line.startswith(f"sampling step: numpy: the compiled step at {stale} is stale: built from a _kernel.c "
                           f"with hash {kernel.source_hash(kernel.HERE / '_kernel.c')}, the source beside it has "
                           f"{kernel.source_hash(source)} (rebuild")
