"""The sampling library: pure filters, the numpy engine against Keras, the session
(determinism, stop strings, joining and leaving, logprobs) and constant memory."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from helpers import TINY_TEXT, engine_log_probs, missing, random_weights

from textgen.errors import ConfigError
from textgen.generation import draw as sampling
from textgen.generation import kernel
from textgen.generation.engine import LSTMEngine
from textgen.generation.loading import load_run
from textgen.generation.session import SamplingSession, StreamSpec
from textgen.generation.writers import generate

VOCAB = 7


def one_hot_engine(next_id):
    """An engine stub whose logits are one-hot x 1e9 on next_id(previous id) (keras-hub's trick)."""

    class State:
        def __init__(self, capacity):
            self.arrays, self.rows = [np.zeros(capacity)], capacity

    class Stub:
        vocab_size = VOCAB

        def initial_state(self, capacity, threads=None):
            return State(capacity)

        def feed(self, ids, state):
            return self.step(np.full(state.rows, ids[-1]), state)

        def step(self, ids, state):
            logits = np.zeros((len(ids), VOCAB), dtype=np.float32)
            logits[np.arange(len(ids)), [next_id(int(i)) for i in ids]] = 1e9
            return logits

    return Stub()


# ----------------------------------------------------------------------------- pure functions


def test_greedy_is_argmax_and_ignores_uniforms():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    for u in ([0.0, 0.0], [0.999, 0.5]):
        assert sampling.sample(logits, 0.0, np.array(u)).tolist() == [1, 0]


def test_sample_follows_the_cdf_of_the_tempered_softmax():
    logits = np.log(np.array([[0.2, 0.3, 0.5]]))
    assert [int(sampling.sample(logits, 1.0, np.array([u]))[0]) for u in (0.1, 0.25, 0.49, 0.51, 0.99)] == [0, 1, 1, 2, 2]
    # Temperature 0.5 squares the probabilities: p ∝ (0.04, 0.09, 0.25); cdf 0.105, 0.342, 1.
    assert [int(sampling.sample(logits, 0.5, np.array([u]))[0]) for u in (0.1, 0.11, 0.34, 0.35)] == [0, 1, 1, 2]


def test_top_k_one_and_tiny_top_p_are_greedy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, VOCAB))
    uniforms = rng.random(50)
    greedy = np.argmax(logits, axis=-1)
    assert np.array_equal(sampling.sample(logits, 1.5, uniforms, top_k=1), greedy)
    assert np.array_equal(sampling.sample(logits, 1.5, uniforms, top_p=1e-9), greedy)


def test_top_k_and_top_p_keep_only_their_sets():
    probs = np.array([[0.05, 0.4, 0.1, 0.3, 0.15]])
    logits = np.log(probs)
    drawn = {int(sampling.sample(logits, 1.0, np.array([u]), top_k=2)[0]) for u in np.linspace(0, 0.999, 200)}
    assert drawn == {1, 3}
    drawn = {int(sampling.sample(logits, 1.0, np.array([u]), top_p=0.8)[0]) for u in np.linspace(0, 0.999, 200)}
    assert drawn == {1, 3, 4}  # 0.4 + 0.3 < 0.8 <= 0.4 + 0.3 + 0.15


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf])
def test_invalid_temperature_is_an_error(bad):
    with pytest.raises(ConfigError, match="temperature"):
        sampling.check_temperature(bad)
    with pytest.raises(ConfigError, match="temperature"):
        list(generate(LSTMEngine(random_weights(), 2), [1], 3, bad))


@pytest.mark.parametrize("top_k, top_p", [(0, None), (-3, None), (None, 0.0), (None, 1.01), (None, math.nan)])
def test_invalid_top_k_top_p_are_errors(top_k, top_p):
    with pytest.raises(ConfigError, match="top_k" if top_k is not None else "top_p"):
        list(generate(LSTMEngine(random_weights(), 2), [1], 3, 1.0, top_k=top_k, top_p=top_p))


def test_one_hot_stub_gives_a_known_string():
    engine = one_hot_engine(lambda i: (i + 1) % VOCAB)
    ids = [int(row[0]) for row in generate(engine, [2], 9, 1.0, seed=0)]
    assert ids == [3, 4, 5, 6, 0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- stop strings


def test_stop_filter_cuts_before_the_stop_and_holds_back_little():
    f = sampling.StopFilter(["END", "\n\n"])
    shown = [f.push(c) for c in "ab\nc EN!xEND tail"]
    assert "".join(shown) == "ab\nc EN!x"
    assert f.stopped == "END"
    # Never more than len(longest stop) - 1 = 2 characters held back.
    fed = 0
    shown_total = 0
    g = sampling.StopFilter(["END", "\n\n"])
    for c in "abcdefEN":
        fed += 1
        shown_total += len(g.push(c))
        assert fed - shown_total <= 2
    assert g.finish() == "EN" and g.stopped is None


def test_stop_filter_without_stops_passes_through():
    f = sampling.StopFilter()
    assert "".join(f.push(c) for c in "hello") == "hello" and f.finish() == ""


def test_text_streams_stop_each_stream_and_end_when_all_stopped():
    chars = list("abcdefg")
    engine = one_hot_engine(lambda i: (i + 1) % VOCAB)  # ... a b c d e f g a b ...
    session = SamplingSession(engine, chars)
    specs = [StreamSpec(prime="a", length=1000, temperature=1.0, seed=0, index=i, stops=["de"]) for i in range(2)]
    streams = [session.add(spec) for spec in specs]
    steps = 0
    while session.active:
        session.step()
        steps += 1
    assert [s.text for s in streams] == ["bc", "bc"] and [s.stop for s in streams] == ["de", "de"]
    assert [s.finish_reason for s in streams] == ["stop", "stop"] and session.active == 0
    assert steps < 10  # ended early, not after 1000 characters


def test_empty_stop_string_is_an_error():
    with pytest.raises(ConfigError, match="stop"):
        sampling.check_stops(["x", ""])


# ----------------------------------------------------------------------------- determinism and memory


@pytest.mark.slow
def test_same_seed_same_ids_and_stream_i_independent_of_batch_size():
    weights = random_weights(units=16, scale=1.0)
    engine = LSTMEngine(weights, 2)

    def run(num_samples, seed=5, threads=2):
        engine_ = engine if threads == 2 else LSTMEngine(weights, 2, threads=threads)
        return np.stack(list(generate(engine_, [1, 2], 300, 1.0, num_samples, seed)), axis=1)

    one, three, seventy = run(1), run(3), run(70)
    assert np.array_equal(run(3), three)
    assert np.array_equal(one[0], three[0])
    assert np.array_equal(three, seventy[:3])
    assert np.array_equal(seventy, run(70, threads=1))  # the worker thread does not change the text
    assert not np.array_equal(three[0], three[1])  # streams differ from each other
    assert not np.array_equal(run(3, seed=6), three)


@pytest.mark.slow
def test_generation_memory_does_not_grow_with_length():
    engine = LSTMEngine(random_weights(units=16), 2)
    chars = list("abcdefg")

    def peak(length):
        tracemalloc.start()
        session = SamplingSession(engine, chars)
        for pieces in session.run([StreamSpec(prime="b", length=length, temperature=1.0, stops=["gggggggg"])]):
            for piece in pieces:
                piece.stream.parts.clear()  # a streaming caller keeps nothing
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(500), peak(5_000)
    assert long < short + 16 * 1024, (short, long)  # keeping 4,500 more characters would cost > 36 KB



BLAS_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import threadpoolctl
from helpers import random_weights
from textgen.generation.engine import LSTMEngine
from textgen.generation.writers import generate

def blas_threads():
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"][0]

calls = []
real = threadpoolctl.threadpool_limits
threadpoolctl.threadpool_limits = lambda limits=None, user_api=None: calls.append(limits) or real(limits, user_api)
before = blas_threads()
engine = LSTMEngine(random_weights(units=16), 2, compiled=sys.argv[2] == "compiled")
for num_samples in (1, 3, 1):  # several samples in a row, as the in-process CLI fuzzers do
    list(generate(engine, [1], 20, 1.0, num_samples=num_samples, seed=0))
print(before, blas_threads(), calls)
"""


def _blas_probe(step: str) -> tuple:
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    with tempfile.TemporaryDirectory() as elsewhere:  # not the checkout: import the installed textgen
        out = subprocess.run([sys.executable, "-c", BLAS_PROBE, str(Path(__file__).resolve().parent), step],
                             env=env, capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert out.returncode == 0, out.stderr  # also fails when numpy's BLAS is not found
    before, after, calls = out.stdout.split(maxsplit=2)
    return before, after, calls.strip()


@pytest.mark.slow
def test_sampling_sets_blas_to_one_thread_once_and_leaves_it_there():
    """The numpy step: one switch for the process, not one each way around every sample:
    switching back and forth makes OpenBLAS end and start threads each time (a fuzzer once
    stalled in that)."""
    assert _blas_probe("numpy") == ("2", "1", "[1]")


@pytest.mark.slow
def test_the_compiled_step_leaves_numpys_blas_alone():
    """The compiled step does its own products: BLAS keeps its threads for the user's code."""
    if kernel.load() is None:
        missing("textgen's compiled step", "pip install . with a C compiler (gcc)")
    assert _blas_probe("compiled") == ("2", "2", "[]")
# ----------------------------------------------------------------------------- the engine against Keras


def keras_log_probs(model, ids: np.ndarray) -> np.ndarray:
    from textgen.training.model import reset_states

    reset_states(model)
    return sampling.log_softmax(np.asarray(model(ids.astype(np.int32))))


@pytest.mark.slow
def test_engine_equals_keras_with_random_weights():
    from textgen.training.model import ModelConfig, build_model

    config = ModelConfig(vocab_size=11, embedding_dim=6, units=24, num_layers=2)
    model = build_model(config, batch_size=3, seq_len=None)
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:  # larger than the default initialisation: saturating gates
        v.assign(rng.normal(0, 0.6, v.shape).astype(np.float32))
    weights = {v.path: np.asarray(v.numpy()) for v in model.trainable_variables}
    ids = rng.integers(0, 11, size=(3, 400))
    expected = keras_log_probs(model, ids)
    steps = [False] + ([True] if kernel.load() is not None else [])  # the numpy step, and the compiled one
    for compiled in steps:
        got = engine_log_probs(LSTMEngine(weights, 2, compiled=compiled), ids)
        assert expected.shape == got.shape == (3, 400, 11)
        assert np.abs(expected - got).max() <= 1e-4, compiled
    assert np.abs(expected).max() > 1.0  # a distribution far from uniform: the test can fail


@pytest.mark.slow
def test_engine_equals_keras_on_a_trained_checkpoint(two_layer_run):
    from textgen import checkpoints
    from textgen.corpus import Vocabulary
    from textgen.training.model import ModelConfig, build_model

    info, ckpt, engine = load_run(two_layer_run.run)
    model = build_model(ModelConfig(**info["model"]), batch_size=1, seq_len=None)
    arrays = checkpoints.load_arrays(ckpt.path)
    for v in model.trainable_variables:
        v.assign(arrays[v.path])
    ids = Vocabulary(info["vocab"]).encode(TINY_TEXT * 2)[None, :300]
    expected, got = keras_log_probs(model, ids), engine_log_probs(engine, ids)
    assert np.abs(expected - got).max() <= 1e-4
    # Trained: the text itself is likely under the model (far better than uniform).
    picked = np.take_along_axis(got[0, :-1], ids[0, 1:, None], axis=-1)
    assert -picked.mean() < math.log(len(info["vocab"])) - 0.5


def test_load_run_rejects_a_damaged_checkpoint(tiny_run, tmp_path):
    from textgen.errors import CheckpointError

    run = tiny_run.copy(tmp_path / "copy") / "tiny"
    weights = next(run.glob("ckpt-*")) / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="damaged"):
        load_run(run, next(run.glob("ckpt-*")).name)
