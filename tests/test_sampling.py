"""The sampling library: pure filters, the numpy engine against Keras, determinism, stop
strings, constant memory, and the novelty report."""

from __future__ import annotations

import math
import shutil
import tracemalloc

import numpy as np
import pytest

from conftest import TINY_TEXT
from textgen import sampling
from textgen.errors import ConfigError, CorpusError
from textgen.novelty import Corpus, novelty, training_corpus

VOCAB = 7


def random_weights(num_layers=2, vocab=VOCAB, embedding=5, units=8, scale=0.5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    weights = {"embedding/embeddings": rng.normal(0, scale, (vocab, embedding)).astype(np.float32)}
    inputs = embedding
    for i in range(num_layers):
        prefix = f"lstm_{i}/lstm/lstm_cell/"
        weights[prefix + "kernel"] = rng.normal(0, scale, (inputs, 4 * units)).astype(np.float32)
        weights[prefix + "recurrent_kernel"] = rng.normal(0, scale, (units, 4 * units)).astype(np.float32)
        weights[prefix + "bias"] = rng.normal(0, scale, 4 * units).astype(np.float32)
        inputs = units
    weights["logits/kernel"] = rng.normal(0, scale, (units, vocab)).astype(np.float32)
    weights["logits/bias"] = rng.normal(0, scale, vocab).astype(np.float32)
    return weights


def one_hot_engine(next_id):
    """An engine stub whose logits are one-hot x 1e9 on next_id(previous id) (keras-hub's trick)."""

    class Stub:
        vocab_size = VOCAB

        def initial_state(self, batch_size):
            return [np.zeros(batch_size, dtype=np.intp)]

        def feed(self, ids, state):
            return self.step(np.full(len(state[0]), ids[-1]), state)

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
        list(sampling.generate(sampling.LSTMEngine(random_weights(), 2), [1], 3, bad))


@pytest.mark.parametrize("top_k, top_p", [(0, None), (-3, None), (None, 0.0), (None, 1.01), (None, math.nan)])
def test_invalid_top_k_top_p_are_errors(top_k, top_p):
    with pytest.raises(ConfigError, match="top_k" if top_k is not None else "top_p"):
        list(sampling.generate(sampling.LSTMEngine(random_weights(), 2), [1], 3, 1.0, top_k=top_k, top_p=top_p))


def test_one_hot_stub_gives_a_known_string():
    engine = one_hot_engine(lambda i: (i + 1) % VOCAB)
    ids = [int(row[0]) for row in sampling.generate(engine, [2], 9, 1.0, seed=0)]
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
    streams = sampling.TextStreams(engine, chars, [0], 1000, 1.0, num_samples=2, seed=0, stops=["de"])
    texts = ["", ""]
    steps = 0
    for pieces in streams:
        steps += 1
        texts = [t + p for t, p in zip(texts, pieces)]
    assert texts == ["bc", "bc"] and streams.stopped == ["de", "de"]
    assert steps < 10  # ended early, not after 1000 characters


def test_empty_stop_string_is_an_error():
    with pytest.raises(ConfigError, match="stop"):
        sampling.check_stops(["x", ""])


# ----------------------------------------------------------------------------- determinism and memory


def test_same_seed_same_ids_and_stream_i_independent_of_batch_size():
    engine = sampling.LSTMEngine(random_weights(units=16, scale=1.0), 2)

    def run(num_samples, seed=5, **kw):
        return np.stack(list(sampling.generate(engine, [1, 2], 300, 1.0, num_samples, seed, **kw)), axis=1)

    one, three, seventy = run(1), run(3), run(70)  # 70 streams: three shards of 23-24
    assert np.array_equal(run(3), three)
    assert np.array_equal(one[0], three[0])
    assert np.array_equal(three, seventy[:3])
    assert np.array_equal(seventy, run(70, threads=1))  # worker threads do not change the text
    assert not np.array_equal(three[0], three[1])  # streams differ from each other
    assert not np.array_equal(run(3, seed=6), three)


def test_generation_memory_does_not_grow_with_length():
    engine = sampling.LSTMEngine(random_weights(units=16), 2)
    chars = list("abcdefg")

    def peak(length):
        tracemalloc.start()
        for _ in sampling.TextStreams(engine, chars, [1], length, 1.0, seed=0, stops=["gggggggg"]):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(500), peak(5_000)
    assert long < short + 16 * 1024, (short, long)  # keeping 4,500 more characters would cost > 36 KB



BLAS_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from test_sampling import random_weights
from textgen import sampling

getter, setter = sampling._openblas_functions()
calls = []
sampling._openblas_functions = lambda: (getter, lambda n: calls.append(n) or setter(n))
before = getter()
engine = sampling.LSTMEngine(random_weights(units=16), 2)
for num_samples in (1, 3, 1):  # several samples in a row, as the in-process CLI fuzzers do
    list(sampling.generate(engine, [1], 20, 1.0, num_samples=num_samples, seed=0))
print(before, getter(), calls)
"""


def test_sampling_sets_openblas_to_one_thread_once_and_leaves_it_there():
    """One switch for the process, not one each way around every sample: switching back and
    forth makes OpenBLAS end and start threads each time (a fuzzer once stalled in that)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", BLAS_PROBE, str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # also fails when numpy's OpenBLAS is not found
    before, after, calls = out.stdout.split(maxsplit=2)
    assert (before, after, calls.strip()) == ("2", "1", "[1]")
# ----------------------------------------------------------------------------- the engine against Keras


def keras_log_probs(model, ids: np.ndarray) -> np.ndarray:
    from textgen.model import reset_states

    reset_states(model)
    return sampling.log_softmax(np.asarray(model(ids.astype(np.int32))))


def engine_log_probs(engine, ids: np.ndarray) -> np.ndarray:
    state = engine.initial_state(ids.shape[0])
    return np.stack([sampling.log_softmax(engine.step(ids[:, t], state)) for t in range(ids.shape[1])], axis=1)


def test_engine_equals_keras_with_random_weights():
    from textgen.model import ModelConfig, build_model

    config = ModelConfig(vocab_size=11, embedding_dim=6, units=24, num_layers=2)
    model = build_model(config, batch_size=3, seq_len=None)
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:  # larger than the default initialisation: saturating gates
        v.assign(rng.normal(0, 0.6, v.shape).astype(np.float32))
    weights = {v.path: np.asarray(v.numpy()) for v in model.trainable_variables}
    ids = rng.integers(0, 11, size=(3, 400))
    expected = keras_log_probs(model, ids)
    got = engine_log_probs(sampling.LSTMEngine(weights, 2), ids)
    assert expected.shape == got.shape == (3, 400, 11)
    assert np.abs(expected - got).max() <= 1e-4
    assert np.abs(expected).max() > 1.0  # a distribution far from uniform: the test can fail


def test_engine_equals_keras_on_a_trained_checkpoint(trained_run):
    from textgen import checkpoints
    from textgen.corpus import Vocabulary
    from textgen.model import ModelConfig, build_model

    info, ckpt, engine = sampling.load_run(trained_run)
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


def test_load_run_rejects_a_damaged_checkpoint(trained_run, tmp_path):
    from textgen.errors import CheckpointError

    trained_run = shutil.copytree(trained_run, tmp_path / "copy")
    weights = next(trained_run.glob("ckpt-*")) / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="damaged"):
        sampling.load_run(trained_run, next(trained_run.glob("ckpt-*")).name)


# ----------------------------------------------------------------------------- novelty


def brute_force_novelty(sample: str, corpus: str, min_span: int = 20):
    longest = 0
    covered = [False] * len(sample)
    for i in range(len(sample)):
        for j in range(i + 1, len(sample) + 1):
            if sample[i:j] not in corpus:
                break
            longest = max(longest, j - i)
            if j - i >= min_span:
                covered[i:j] = [True] * (j - i)
    return longest, sum(covered)


def test_novelty_matches_brute_force():
    rng = np.random.default_rng(3)
    alphabet = np.array(list("abcde"))
    corpus = "".join(rng.choice(alphabet, 3000))
    index = {c: i for i, c in enumerate("abcde")}
    for k in range(6):
        pieces = ["".join(rng.choice(alphabet, rng.integers(5, 40)))]
        for _ in range(3):
            start, span = int(rng.integers(0, 2900)), int(rng.integers(10, 60))
            pieces += [corpus[start: start + span], "".join(rng.choice(alphabet, rng.integers(3, 15)))]
        sample = "".join(pieces)
        report = novelty(np.array([index[c] for c in sample], dtype=np.uint8),
                         Corpus(np.array([index[c] for c in corpus], dtype=np.uint8)))
        longest, copied = brute_force_novelty(sample, corpus)
        assert (report["longest_copied"], report["copied_chars"]) == (longest, copied), k
        assert report["copied_share"] == pytest.approx(copied / len(sample))


def test_novelty_with_uint16_ids_needs_aligned_matches():
    corpus = Corpus(np.array([0x0102, 0x0304], dtype=np.uint16))
    assert corpus.contains(np.array([0x0102, 0x0304], dtype=np.uint16))
    assert not corpus.contains(np.array([0x0401], dtype=np.uint16))  # its bytes 01 04 occur, but unaligned
    assert novelty(np.array([0x0102, 0x0304, 0x0001], dtype=np.uint16), corpus, min_span=2)["longest_copied"] == 2


def test_training_corpus_uses_the_training_split_and_detects_a_missing_or_changed_corpus(trained_run, tmp_path):
    from textgen import checkpoints
    from textgen.corpus import split_point

    info = checkpoints.read_run_file(trained_run)
    corpus = training_corpus(info)
    assert len(corpus.ids) == split_point(info["corpus"]["characters"], info["training"]["val_fraction"])
    assert np.array_equal(corpus.ids[:50], np.asarray(training_corpus(info).ids[:50]))
    source = tmp_path / "moved.txt"
    shutil.copy(info["corpus"]["source"], source)
    info["corpus"]["source"] = str(source)
    assert len(training_corpus(info).ids) == len(corpus.ids)
    source.write_text(source.read_text(encoding="utf-8") + "x", encoding="utf-8")
    with pytest.raises(CorpusError, match="changed"):
        training_corpus(info)
    source.unlink()
    with pytest.raises(CorpusError, match="gone"):
        training_corpus(info)


# ----------------------------------------------------------------------------- a trained run

_TRAINED: dict = {}


def train_tiny_run(tmp_path_factory):
    """The checkpoints directory of a 2-layer run trained for a few steps through
    textgen.train.open_run; trained once per session (test_sample_cli uses it too).
    Tests must not modify it: copy it first."""
    if "root" not in _TRAINED:
        from textgen import corpus as corpus_lib
        from textgen.train import open_run

        root = tmp_path_factory.mktemp("trained")
        source = root / "tiny.txt"
        source.write_text(TINY_TEXT * 40, encoding="utf-8")
        prepared = corpus_lib.prepare(source, cache_dir=root / "cache")
        trainer = open_run(prepared, "tiny", root / "checkpoints", "tiny",
                           model_options={"num_layers": 2, "units": 32, "embedding_dim": 8},
                           train_options={"seq_len": 32, "batch_size": 8, "epochs": 3, "learning_rate": 0.01,
                                          "seed": 0},
                           resume=False)
        trainer.config.sample_chars = 0
        trainer.run()
        _TRAINED["root"] = root / "checkpoints"
    return _TRAINED["root"]


@pytest.fixture
def trained_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory) / "tiny"
