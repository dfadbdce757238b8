"""The compiled step (textgen/generation/_kernel.c) against the numpy step it replaces: the same logits
within float rounding for every shape, a row's numbers independent of the rest of the batch,
the compiled draw against `sampling.sample`, and the switch back to numpy. Its build: the
variant chosen for the CPU, the same bits from the FMA variants, stale builds refused, the C
side's own checks (tests/test_kernel_build.py runs it on an emulated older CPU)."""

from __future__ import annotations

import ctypes
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import missing, random_weights

import textgen.generation
from textgen.devices import cpu_flags
from textgen.generation import draw as sampling
from textgen.generation import kernel
from textgen.generation.engine import LSTMEngine
from textgen.generation.session import SamplingSession, StreamSpec


@pytest.fixture(scope="module")
def lib():
    found = kernel.load()
    if found is None:
        missing("textgen's compiled step", "pip install . with a C compiler (gcc)")
    return found


@pytest.mark.parametrize("layers,units,vocab", [(1, 13, 7), (2, 8, 20), (2, 32, 7), (3, 37, 40)])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_step_computes_the_numpy_step(lib, layers, units, vocab, threads):
    """Units that are not a multiple of the 8-unit block are padded; the padding must stay 0."""
    weights = random_weights(num_layers=layers, vocab=vocab, units=units, scale=0.4)
    reference = LSTMEngine(weights, layers, threads=1, compiled=False)
    engine = LSTMEngine(weights, layers, threads=threads)
    assert (reference.kind, engine.kind) == ("numpy", "compiled")
    for rows in (1, 2, 3, 4, 17, 40):
        a, b = reference.initial_state(rows), engine.initial_state(rows)
        ids = np.arange(rows) % vocab
        for _ in range(20):
            x, y = reference.step(ids, a).copy(), engine.step(ids, b).copy()
            assert np.abs(x - y).max() < 2e-5, rows
            ids = np.argmax(x, axis=-1)
        for layer in range(layers):
            for ours, theirs in zip(b[layer], a[layer]):
                assert np.abs(ours[:rows] - theirs[:rows]).max() < 2e-5
            assert not b.h[layer][:, units:].any() and not b.c[layer][:, units:].any()  # padding
        b.close()
        assert np.abs(engine.step(ids, b) - reference.step(ids, a)).max() < 2e-5  # one thread after close


def test_a_rows_numbers_do_not_depend_on_the_batch(lib):
    """Bit for bit: each output is one chain of multiply-adds in a fixed order, whichever tile,
    job or thread computes it (BLAS can sum another way for another matrix height)."""
    weights = random_weights(num_layers=2, vocab=11, units=24, scale=0.5)
    engine = LSTMEngine(weights, 2, threads=2)
    alone = engine.initial_state(1, threads=1)
    crowd = engine.initial_state(61)
    rng = np.random.default_rng(0)
    for _ in range(30):
        ids = rng.integers(0, 11, 61)
        mine = engine.step(ids[:1], alone).copy()
        theirs = engine.step(ids, crowd)
        assert np.array_equal(mine[0], theirs[0])
    crowd.close()


def test_the_compiled_draw_is_sampling_sample(lib):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((300, 50)) * 3).astype(np.float32)
    uniforms = rng.random((300, 4))
    for temperature in (0.0, 0.3, 1.0, 2.5):
        ids = np.zeros(300, np.int64)
        used = np.zeros(300, np.int64)
        drawn = np.zeros(300)
        temps = np.full(300, temperature)
        empty = kernel.Draw(lib, logits, temps, uniforms, used, drawn, ids)(300)
        assert empty == 0 and (used == 1).all() and np.array_equal(drawn, uniforms[:, 0])
        assert np.array_equal(ids, sampling.sample(logits, temperature, uniforms[:, 0]))


def test_compiled_and_numpy_sessions_write_the_same_text(lib):
    """Same seeds, same text: the two steps differ only by rounding, far below what moves a draw."""
    chars = list("abcdefg")
    weights = random_weights(num_layers=2, vocab=7, units=16, scale=0.8)
    texts = []
    for compiled in (True, False):
        session = SamplingSession(LSTMEngine(weights, 2, compiled=compiled), chars)
        specs = [StreamSpec(prime="ab", length=400, temperature=t, seed=5, index=i, top_k=k)
                 for i, (t, k) in enumerate([(0.7, None), (1.0, None), (0.0, None), (0.9, 3), (1.2, None)])]
        streams = [session.add(spec) for spec in specs]
        while session.active:
            session.step()
        texts.append([s.text for s in streams])
        session.close()
    assert texts[0] == texts[1]
    assert len(set(texts[0])) == 5


@pytest.mark.slow
def test_textgen_kernel_0_selects_the_numpy_step(lib, tmp_path):
    """And TEXTGEN_KERNEL_VARIANT selects a variant the CPU runs; an unknown one is refused."""
    # run outside the checkout: from its root, `import textgen` would find the source tree,
    # which has no compiled file after a plain `pip install .`
    tests = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {tests!r}); from helpers import random_weights; "
            "from textgen.generation import kernel; from textgen.generation.engine import LSTMEngine; "
            "print(LSTMEngine(random_weights(), 2).kind, kernel.status().variant)")
    baseline = kernel.BASELINE if kernel.library_path(kernel.BASELINE).is_file() else "generic"
    cases = {("TEXTGEN_KERNEL", "0"): "numpy None", ("TEXTGEN_KERNEL", "1"): f"compiled {kernel.status().variant}",
             (kernel.FORCE, baseline): f"compiled {baseline}", (kernel.FORCE, "x86-64-v9"): "numpy None"}
    for (name, value), expected in cases.items():
        env = {**os.environ, "TEXTGEN_KERNEL": "1", kernel.FORCE: "", name: value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                             cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected, (name, value)


def test_several_steps_per_call_write_the_same_text(lib):
    """`step(16)` runs 16 draws and steps in one C call: streams that end mid-way (a stop
    string, their length) and uniform blocks that run out (every 256 characters) must give
    exactly the text of one step at a time."""
    chars = list("abcdefg")
    weights = random_weights(num_layers=2, vocab=7, units=16, scale=0.8)
    engine = LSTMEngine(weights, 2)
    specs = lambda: [StreamSpec(prime="ab", length=600, temperature=0.9, seed=1, index=0),  # noqa: E731
                     StreamSpec(prime="c", length=37, temperature=1.3, seed=1, index=1),
                     StreamSpec(prime="", length=300, temperature=1.0, seed=2, index=0, stops=["gg", "fa"]),
                     StreamSpec(prime="d", length=45, temperature=0.0, seed=3, index=0)]
    results = []
    for max_steps in (1, 16):
        session = SamplingSession(engine, chars)
        shown = {}
        streams = [session.add(spec) for spec in specs()]
        calls = 0
        while session.active:
            for piece in session.step(max_steps):
                shown[id(piece.stream)] = shown.get(id(piece.stream), "") + piece.text
            calls += 1
        results.append(([(s.text, s.finish_reason, s.stop) for s in streams],
                        [shown.get(id(s), "") for s in streams], calls))
        session.close()
    (one, one_shown, one_calls), (many, many_shown, many_calls) = results
    assert one == many and one_shown == many_shown == [t for t, _, _ in one]
    assert [len(t) for t, _, _ in one][:2] == [600, 37] and one[2][1] == "stop"  # the cases happened
    assert many_calls < one_calls / 8


def test_an_interrupt_ends_a_multi_step_call_after_its_current_step(lib):
    """What lets the server run several steps per call and still admit a request, or free a
    client that left, at the next step: another thread sets `session.interrupt`."""
    chars = list("abcdefg")
    session = SamplingSession(LSTMEngine(random_weights(num_layers=2, vocab=7, units=16), 2), chars)
    stream = session.add(StreamSpec(prime="a", length=100, temperature=1.0, seed=4))
    session.step(16)
    assert session.steps_done == 16 and len(stream.text) == 16
    session.interrupt[0] = 1
    session.step(16)
    assert session.steps_done == 1 and len(stream.text) == 17
    session.interrupt[0] = 0
    session.step(16)
    assert session.steps_done == 16 and len(stream.text) == 33
    session.close()


def test_a_large_vocabulary_and_bad_ids(lib):
    """A CJK corpus can have thousands of characters; an id outside the vocabulary is an error,
    never a read outside the weights."""
    weights = random_weights(num_layers=1, vocab=5000, units=8, scale=0.5)
    engine, reference = LSTMEngine(weights, 1), LSTMEngine(weights, 1, compiled=False)
    state, ref_state = engine.initial_state(2), reference.initial_state(2)
    ids = np.array([4999, 7])
    logits = engine.step(ids, state)
    assert np.abs(logits - reference.step(ids, ref_state)).max() < 2e-5
    chars = [chr(0x4E00 + i) for i in range(5000)]
    texts = []
    for step in (engine, reference):
        session = SamplingSession(step, chars)
        streams = [session.add(StreamSpec(prime=chars[4999], length=50, temperature=1.0, seed=9, index=i))
                   for i in range(2)]
        while session.active:
            session.step(8)
        texts.append([s.text for s in streams])
        session.close()
    assert texts[0] == texts[1] and all(len(t) == 50 for t in texts[0])
    for bad in (np.array([5000, 0]), np.array([-1, 0])):
        with pytest.raises(ValueError, match="ids must be in"):
            engine.step(bad, state)
    state.close()


def test_every_compiled_file_is_a_library_not_a_module(lib):
    """The variants are `_kernel.<variant>.so`: no module name, so a package walk (pkgutil,
    PyInstaller, --doctest-modules) finds only modules that import."""
    built = sorted(path.name for path in kernel.HERE.glob("_kernel.*.so"))
    assert kernel.status().variant in {name.split(".")[1] for name in built}
    names = [m.name for m in pkgutil.walk_packages(textgen.generation.__path__, "textgen.generation.")]
    assert "textgen.generation.kernel" in names and not any("_kernel" in name for name in names)
    for name in names:
        importlib.import_module(name)


# What each x86-64 level adds, in Linux's /proc/cpuinfo names (pni is SSE3, abm is LZCNT).
LEVEL_FLAGS = {2: {"pni", "ssse3", "cx16", "sse4_1", "sse4_2", "popcnt", "lahf_lm"},
               3: {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
               4: {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}}


def test_the_variant_is_the_best_this_cpu_runs(lib):
    """The C side's CPUID check agrees with the operating system's flags, and the loader takes
    the best variant built for that level (`textgen info` names it)."""
    if not kernel.library_path(kernel.BASELINE).is_file():
        assert kernel.status().variant == "generic"  # not an x86-64 build: one variant
        return
    flags = cpu_flags()
    if not flags:
        missing("/proc/cpuinfo", "run on Linux")
    level = 1
    while level < 4 and LEVEL_FLAGS[level + 1] <= flags:
        level += 1
    baseline = kernel.open_library(variant=kernel.BASELINE)[0]
    assert baseline.tg_cpu_level() == level
    best = next(v for v, (need, _) in kernel.VARIANTS.items() if need <= level and kernel.library_path(v).is_file())
    status = kernel.status()
    assert (status.kind, status.variant) == ("compiled", best)
    assert status.record()["note"].startswith(f"compiled: variant {best} ")


def variant_logits(lib, weights: dict, layers: int, rows: int, steps: int = 30) -> np.ndarray:
    """(steps, rows, vocab) logits of `lib`'s compiled step fed random ids (seeded; the same for
    every library), or the numpy step's where `lib` is None."""
    engine = LSTMEngine(weights, layers, compiled=False)
    if lib is None:
        state = engine.initial_state(rows)
        step = lambda ids: engine.step(ids, state)  # noqa: E731
    else:
        (table, recurrent, _), rest = engine.layers[0], engine.layers[1:]
        model = kernel.CompiledModel(lib, table, recurrent, [k for k, _, _ in rest], [b for _, _, b in rest],
                                     engine.out_kernel, engine.out_bias)
        runner = kernel.Runner(model, rows, threaded=False)

        def step(ids):
            runner.ids[:rows] = ids
            runner.step(rows)
            return runner.logits
    rng = np.random.default_rng(1)
    return np.stack([step(rng.integers(0, engine.vocab_size, rows)).copy() for _ in range(steps)])


@pytest.mark.parametrize("layers,units,vocab,rows", [(1, 13, 7, 1), (2, 37, 40, 2), (3, 24, 90, 7), (2, 64, 74, 40)])
def test_the_fma_variants_compute_the_same_bits(lib, layers, units, vocab, rows):
    """What docs/sampling.md states: x86-64-v3 and x86-64-v4 give the same numbers bit for bit (every
    output is one chain of fused multiply-adds in the same order), so the same text for a seed;
    the baseline x86-64 (no FMA) and numpy round apart from them, within 2e-5. Each variant
    this CPU runs (v4 needs AVX-512), one and several rows (different tiles)."""
    weights = random_weights(num_layers=layers, vocab=vocab, units=units, scale=0.3)  # 0.4: chaotic at 64 units
    runs = {}
    for variant in kernel.VARIANTS:
        found = kernel.open_library(variant=variant)[0]
        if found is not None:
            runs[variant] = variant_logits(found, weights, layers, rows)
    reference = variant_logits(None, weights, layers, rows)
    fused = [runs[v] for v in ("x86-64-v3", "x86-64-v4") if v in runs]
    for other in fused[1:]:
        assert np.array_equal(other, fused[0])
    for variant, values in runs.items():
        assert np.abs(values - reference).max() < 2e-5, variant
    if fused and "x86-64" in runs:  # the baseline does round otherwise: the comparison above can tell
        assert not np.array_equal(runs["x86-64"], fused[0])


def test_a_stale_build_is_refused(lib, tmp_path):
    """A build whose stamp is not the hash of the _kernel.c beside it (the source edited after an
    in-place build) is refused for the numpy step, and the reason says so."""
    for path in kernel.HERE.glob("_kernel.*"):
        shutil.copy(path, tmp_path / path.name)
    assert kernel.open_library(tmp_path)[1].variant == kernel.status().variant  # the copy as built: used
    with open(tmp_path / "_kernel.c", "a", encoding="utf-8") as f:
        f.write("/* edited after the build */\n")
    found, status = kernel.open_library(tmp_path)
    assert found is None and (status.kind, status.variant) == ("numpy", None)
    assert "is stale" in status.reason and kernel.source_hash(tmp_path / "_kernel.c") in status.reason
    assert kernel.source_hash(kernel.HERE / "_kernel.c") in status.reason  # what the build was made from
    (tmp_path / "_kernel.c").unlink()
    assert "_kernel.c is missing" in kernel.open_library(tmp_path)[1].reason


def test_a_variant_not_built_is_refused(lib):
    for name in ("x86-64-v9", "generic" if kernel.library_path(kernel.BASELINE).is_file() else "x86-64"):
        found, status = kernel.open_library(variant=name)
        assert found is None and status.kind == "numpy"
        assert status.reason.startswith(f"{kernel.FORCE}={name} is not a variant built here (")


def test_the_c_side_checks_what_it_can(lib):
    """Python checks first (the tests above); C refuses on its own too: a layer outside the
    model, ids outside the table's rows, rows beyond the capacity, impossible sizes."""
    engine = LSTMEngine(random_weights(num_layers=2, vocab=7, units=8), 2)
    runner = kernel.Runner(engine.compiled, 3, threaded=False)
    h = runner.h[0].ctypes.data
    assert lib.tg_runner_set(runner.handle, 2, h, h, h) == -1 and lib.tg_runner_set(runner.handle, -1, h, h, h) == -1
    runner.ids[:3] = [0, 6, 7]  # 7: one past the table's last row
    assert lib.tg_step(runner.handle, 3) == -1
    runner.ids[:3] = [0, 6, 1]
    assert lib.tg_step(runner.handle, 4) == -1 and lib.tg_step(runner.handle, 3) == 0
    assert lib.tg_run(runner.handle, 4, 1, None, None, 1, None, None, None, None, None) == -1  # 4 rows > capacity 3
    assert lib.tg_runner_create(engine.compiled.handle, 0, 0) is None
    model, weights = engine.compiled, (ctypes.c_void_p * 2)(*[w.ctypes.data for w in engine.compiled.weights])
    tables = model.table.ctypes.data, ctypes.addressof(weights), ctypes.addressof(weights)
    outputs = model.out.ctypes.data, model.out_bias.ctypes.data
    accepted = lib.tg_model_create(2, 8, 8, 7, 1, *tables, *outputs)  # the sizes as built
    assert accepted
    lib.tg_model_destroy(accepted)
    for layers, units, padded, vocab, panels in [(0, 8, 8, 7, 1), (17, 8, 8, 7, 1), (2, 8, 4, 7, 1), (2, 8, 12, 7, 1),
                                                 (2, 8, 8, 0, 1), (2, 8, 8, 33, 1)]:
        assert lib.tg_model_create(layers, units, padded, vocab, panels, *tables, *outputs) is None
    used = np.array([4], np.int64)  # a block of 4 uniforms, all used: the caller must refill first
    args = [runner.logits.ctypes.data, 1, 7, np.ones(1).ctypes.data, np.zeros(4).ctypes.data, 4, used.ctypes.data,
            np.zeros(1).ctypes.data, np.zeros(1, np.int64).ctypes.data]
    assert lib.tg_sample(*args) == -1
    used[0] = 3
    assert lib.tg_sample(*args) == 1 and used[0] == 4
