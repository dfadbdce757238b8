"""The compiled step (textgen/generation/_kernel.c) against the numpy step it replaces: the same logits
within float rounding for every shape, a row's numbers independent of the rest of the batch,
the compiled draw against `sampling.sample`, and the switch back to numpy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import missing
from test_sampling import random_weights

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


def test_textgen_kernel_0_selects_the_numpy_step(lib, tmp_path):
    # run outside the checkout: from its root, `import textgen` would find the source tree,
    # which has no compiled file after a plain `pip install .`
    tests = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {tests!r}); from test_sampling import random_weights; "
            "from textgen.generation.engine import LSTMEngine; print(LSTMEngine(random_weights(), 2).kind)")
    kinds = []
    for value in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TEXTGEN_KERNEL": value},
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        kinds.append(out.stdout.strip())
    assert kinds == ["numpy", "compiled"]


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
