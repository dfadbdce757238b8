"""The core runs on Keras' JAX backend too, and checkpoints mean the same thing on every backend.

A tiny model is trained, resumed and sampled by `python -m textgen` under KERAS_BACKEND=jax
(a subprocess: the backend is fixed when Keras is imported). A second run is trained here,
under TensorFlow, meanwhile. Then both checkpoints are loaded into a Keras model on both backends and
into the numpy sampler, and their next-character log-probabilities over 100 characters must
agree within 1e-4: a checkpoint written under one backend samples the same distribution
under the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import TINY_TEXT, engine_log_probs, ok, run_cli

from textgen import checkpoints
from textgen.corpus import prepare
from textgen.generation.draw import log_softmax
from textgen.generation.loading import load_run
from textgen.training.model import ModelConfig, build_model, reset_states
from textgen.training.opening import open_run
from textgen.training.variables import assign_model_arrays

MODEL = ["--layers", "2", "--units", "16", "--embedding-dim", "8", "--dropout", "0.1"]
TRAIN = ["--seq-len", "16", "--batch-size", "8", "--eval-chars", "200", "--learning-rate", "0.01"]
STEPS = 100  # characters compared across backends
BASE_JAX = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}

# Loads each run's latest checkpoint into a Keras model on the current backend and writes
# log-probabilities of the next character after each of the first STEPS characters.
KERAS_LOG_PROBS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from textgen import checkpoints
    from textgen.backend import quiet_import_keras
    from textgen.training.model import ModelConfig, build_model, reset_states
    from textgen.generation.draw import log_softmax
    from textgen.training.variables import assign_model_arrays

    keras = quiet_import_keras()
    ids = np.load(sys.argv[1])
    results = {}
    for directory in sys.argv[3:]:
        info = checkpoints.read_run_file(directory)
        model = build_model(ModelConfig(**info["model"]), batch_size=1, seq_len=None)
        assign_model_arrays(model, checkpoints.load_arrays(checkpoints.latest(directory).path),
                            include_state=False)
        reset_states(model)
        results[directory] = log_softmax(np.asarray(model.predict_on_batch(ids[None]), np.float64))[0]
    np.savez(sys.argv[2], backend=keras.backend.backend(), **{str(i): results[d] for i, d in enumerate(sys.argv[3:])})
""")


def keras_log_probs(directory, ids):
    info = checkpoints.read_run_file(directory)
    model = build_model(ModelConfig(**info["model"]), batch_size=1, seq_len=None)
    assign_model_arrays(model, checkpoints.load_arrays(checkpoints.latest(directory).path), include_state=False)
    reset_states(model)
    return log_softmax(np.asarray(model.predict_on_batch(ids[None]), np.float64))[0]


def numpy_log_probs(directory, ids):
    """The run's numpy sampler teacher-forced with `ids`: (steps, vocab) log-probabilities."""
    return engine_log_probs(load_run(directory)[2], np.asarray(ids)[None])[0]


def summary_of(result) -> dict:
    """The JSON a successful `textgen ... --json` printed."""
    return json.loads(ok(result).stdout)


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT * 12, encoding="utf-8")
    return path


@pytest.mark.slow
def test_jax_trains_resumes_samples_and_checkpoints_cross_backends(small_corpus, tmp_path):
    root = tmp_path / "checkpoints"
    # Compiled XLA programs are shared between the JAX subprocesses (resume reuses train's).
    jax_env = dict(BASE_JAX, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla-cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    # Under JAX: train one epoch (in the background, while TensorFlow trains here), resume, sample.
    training = subprocess.Popen([sys.executable, "-m", "textgen", "train", str(small_corpus), "--run", "onjax",
                                 *MODEL, *TRAIN, "--epochs", "1", "--json"], env=dict(os.environ, **jax_env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    corpus = prepare(small_corpus)
    model_options = {"num_layers": 2, "units": 16, "embedding_dim": 8, "dropout": 0.1}
    train_options = {"seq_len": 16, "batch_size": 8, "eval_chars": 200, "learning_rate": 0.01, "epochs": 1}
    open_run(corpus, "tiny", root, "ontf", model_options, train_options, False).run()
    assert checkpoints.read_run_file(root / "ontf")["versions"]["backend"] == "tensorflow"
    stdout, stderr = training.communicate(timeout=300)
    first = summary_of(subprocess.CompletedProcess(training.args, training.returncode, stdout, stderr))
    assert first["stopped"] == "finished" and first["step"] > 0 and np.isfinite(first["val_loss"])
    info = checkpoints.read_run_file(root / "onjax")
    assert info["versions"]["backend"] == "jax"
    resumed = summary_of(run_cli("train", small_corpus, "--run", "onjax", "--resume", "--epochs", "2", "--json", env=jax_env))
    assert resumed["step"] == 2 * first["step"], "resume continues the step count"
    assert resumed["val_loss"] < first["val_loss"]
    sampled = summary_of(run_cli("sample", "--run", "onjax", "--length", "60", "--seed", "7", "--json", env=jax_env))
    text = sampled["samples"][0]["text"]
    assert sampled["step"] == resumed["step"] and len(text) == 60 and set(text) <= set(TINY_TEXT)

    # Both checkpoints on both backends, against the numpy sampler.
    ids = np.asarray(corpus.ids()[:STEPS], dtype=np.int32)
    np.save(tmp_path / "ids.npy", ids)
    script = tmp_path / "keras_log_probs.py"
    script.write_text(KERAS_LOG_PROBS, encoding="utf-8")
    env = dict(os.environ, **jax_env)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "ids.npy"), str(tmp_path / "jax.npz"),
                           str(root / "onjax"), str(root / "ontf")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    on_jax = np.load(tmp_path / "jax.npz")
    assert str(on_jax["backend"]) == "jax"
    for i, run in enumerate(("onjax", "ontf")):
        numpy_sampler = numpy_log_probs(root / run, ids)
        on_tensorflow = keras_log_probs(root / run, ids)
        assert numpy_sampler.shape == (STEPS, len(corpus.vocab))
        assert np.abs(np.exp(numpy_sampler).sum(axis=1) - 1).max() < 1e-6
        assert not np.allclose(numpy_sampler, numpy_sampler[:1]), "a trained model's predictions vary"
        for name, other in (("jax", on_jax[str(i)]), ("tensorflow", on_tensorflow)):
            diff = np.abs(other - numpy_sampler).max()
            assert diff <= 1e-4, f"run {run} under Keras/{name} differs from the numpy sampler by {diff}"
        assert np.abs(on_jax[str(i)] - on_tensorflow).max() <= 1e-4


@pytest.mark.slow
def test_mixed_precision_is_refused_on_jax_in_one_line(small_corpus, tmp_path):
    # jax.experimental.rnn's cuDNN LSTM (what Keras 3.15 runs on a GPU) rejects float16: refuse up
    # front, before a run directory exists, whatever devices JAX sees.
    result = run_cli("train", small_corpus, "--run", "mp", *MODEL, *TRAIN, "--mixed-precision", env=BASE_JAX)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "jax backend" in lines[0], result.stderr
    assert not (tmp_path / "checkpoints" / "mp").exists()
