"""Training, checkpoints and exact resume, on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import TWO_LAYER_DROPOUT_MODEL

from textgen import checkpoints
from textgen.corpus import prepare
from textgen.errors import CheckpointError, ConfigError
from textgen.training.opening import TrainingCallbacks, open_run


def train_options(**overrides):
    options = {"seq_len": 16, "batch_size": 4, "epochs": 1, "eval_every": 5, "seed": 3,
               "learning_rate": 0.01}
    options.update(overrides)
    return options


class StopAfter(TrainingCallbacks):
    """Asks the trainer to stop after `steps` steps, as Ctrl-C would."""

    def __init__(self, steps):
        self.steps = steps
        self.trainer = None

    def on_step(self, step, logs):
        if step == self.steps:
            self.trainer.stop_reason = "SIGINT"


def weights_of(run_dir):
    ckpt = checkpoints.latest(run_dir)
    return ckpt, checkpoints.load_arrays(ckpt.path)


@pytest.mark.slow
def test_resume_continues_exactly(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    root = tmp_path / "checkpoints"
    # Uninterrupted: 12 steps.
    trainer = open_run(corpus, "tiny", root, "straight", TWO_LAYER_DROPOUT_MODEL, train_options(epochs=1), False)
    total = trainer.batches.steps_per_epoch
    assert total >= 12
    trainer.config.epochs = 1
    stopper = StopAfter(12)
    trainer.callbacks = stopper
    stopper.trainer = trainer
    trainer.run()
    _, straight = weights_of(root / "straight")

    # Interrupted at step 7, resumed in a fresh trainer, stopped at step 12.
    first = open_run(corpus, "tiny", root, "split", TWO_LAYER_DROPOUT_MODEL, train_options(epochs=1), False)
    stopper = StopAfter(7)
    first.callbacks, stopper.trainer = stopper, first
    summary = first.run()
    assert summary["step"] == 7 and summary["stopped"] == "SIGINT"
    second = open_run(corpus, "tiny", root, "split", {}, {}, True)
    assert second.step == 7, "resume must continue the step count"
    stopper = StopAfter(12)
    second.callbacks, stopper.trainer = stopper, second
    second.run()
    ckpt, resumed = weights_of(root / "split")
    assert ckpt.step == 12
    assert set(resumed) == set(straight)
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=0, atol=1e-6, err_msg=key)
    history = ckpt.state["history"]
    assert [r["step"] for r in history] == [5, 7, 10, 12]
    assert all(math.isfinite(r["val_loss"]) and r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2))
               for r in history)


@pytest.mark.slow
def test_run_directory_is_self_describing(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    root = tmp_path / "checkpoints"
    trainer = open_run(corpus, "tiny", root, "desc", TWO_LAYER_DROPOUT_MODEL, train_options(epochs=1, eval_every=40, sample_chars=0),
                       False)
    trainer.run()
    info = json.loads((root / "desc" / "run.json").read_text())
    assert info["model"]["units"] == 16 and info["model"]["vocab_size"] == len(corpus.vocab)
    assert info["training"]["seq_len"] == 16
    assert info["vocab"] == corpus.vocab
    assert info["corpus"]["sha256"] == corpus.sha256
    assert "keras" in info["versions"] and "tensorflow" in info["versions"]
    ckpt = checkpoints.latest(root / "desc")
    assert {p.name for p in ckpt.path.iterdir()} == {"weights.npz", "optimizer.npz", "state.json", "manifest.json"}
    assert ckpt.state["step"] == trainer.batches.steps_per_epoch
    best = checkpoints.best(root / "desc")
    assert best is not None
    assert best.state["best_val_loss"] == min(r["val_loss"] for r in best.state["history"])
    # Only the last two checkpoints are kept and no temporary directory is left.
    assert len(checkpoints.list_checkpoints(root / "desc")) <= checkpoints.KEEP_LATEST
    assert not list((root / "desc").glob(".tmp-*"))


@pytest.mark.slow
def test_existing_run_is_not_overwritten(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    root = tmp_path / "checkpoints"
    trainer = open_run(corpus, "tiny", root, "keep", TWO_LAYER_DROPOUT_MODEL, train_options(epochs=1, eval_every=100, sample_chars=0),
                       False)
    trainer.callbacks = StopAfter(3)
    trainer.callbacks.trainer = trainer
    trainer.run()
    before = (root / "keep" / "run.json").read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        open_run(corpus, "tiny", root, "keep", TWO_LAYER_DROPOUT_MODEL, train_options(), False)
    assert (root / "keep" / "run.json").read_bytes() == before


@pytest.mark.slow
def test_resume_refuses_changed_shape_options(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    root = tmp_path / "checkpoints"
    open_run(corpus, "tiny", root, "fixed", TWO_LAYER_DROPOUT_MODEL, train_options(epochs=1, eval_every=100), False).run()
    with pytest.raises(ConfigError, match="units=16"):
        open_run(corpus, "tiny", root, "fixed", {"units": 32}, {}, True)
    with pytest.raises(ConfigError, match="batch_size=4"):
        open_run(corpus, "tiny", root, "fixed", {}, {"batch_size": 8}, True)


@pytest.mark.slow
def test_time_limit_stops_and_still_checkpoints(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    root = tmp_path / "checkpoints"
    trainer = open_run(corpus, "tiny", root, "timed", TWO_LAYER_DROPOUT_MODEL,
                       train_options(epochs=1000, eval_every=10_000, time_limit=2.0), False)
    summary = trainer.run()
    assert summary["stopped"] == "time_limit"
    assert summary["wall_seconds"] < 60
    ckpt = checkpoints.latest(root / "timed")
    assert ckpt.step == summary["step"] > 0
    assert ckpt.state["history"][-1]["step"] == summary["step"]


@pytest.mark.slow
def test_streamed_evaluation_matches_one_stream(tiny_corpus, tmp_path):
    """Scoring in parallel streams with burn-in agrees with one stream over the whole text."""
    from textgen.scoring import build_scorer, score_ids
    from textgen.training.variables import trainable_arrays

    corpus = prepare(tiny_corpus)
    trainer = open_run(corpus, "tiny", tmp_path / "checkpoints", "ev", TWO_LAYER_DROPOUT_MODEL,
                       train_options(epochs=1, eval_every=1000, sample_chars=0), False)
    trainer.callbacks = StopAfter(20)  # trained a little: any weights must agree across the two paths
    trainer.callbacks.trainer = trainer
    trainer.run()
    ids = np.asarray(corpus.ids()[:3000])
    results = {}
    for streams, window in ((1, 10_000), (4, 500)):
        scorer = build_scorer(trainer.model_config, streams=streams)
        weights = trainable_arrays(trainer.model)
        for v in scorer.trainable_variables:
            v.assign(weights[v.path])
        total, count = score_ids(scorer, ids, window=window, burn_in=100)
        assert count == len(ids) - 1
        results[streams] = total / count
    assert results[4] == pytest.approx(results[1], abs=2e-3)
    # The same numbers by hand: numpy forward pass, one character at a time.
    from textgen.generation.draw import log_softmax
    from textgen.generation.engine import LSTMEngine

    engine = LSTMEngine(trainable_arrays(trainer.model), TWO_LAYER_DROPOUT_MODEL["num_layers"])
    state = engine.initial_state(1)
    nll = 0.0
    for a, b in zip(ids[:-1], ids[1:]):
        nll -= log_softmax(engine.step(np.array([a]), state))[0, b]
    assert nll / (len(ids) - 1) == pytest.approx(results[1], abs=1e-4)


@pytest.mark.slow
def test_build_training_model_is_the_trainers_recipe():
    """One build-and-compile recipe: Adam with the global clip, sparse cross-entropy from logits."""
    from textgen.config import ModelConfig, TrainConfig
    from textgen.training.model import build_training_model

    config = TrainConfig(batch_size=3, seq_len=5, learning_rate=0.02, clip_norm=0.5, jit=False)
    model = build_training_model(ModelConfig(vocab_size=7, units=8, embedding_dim=4, num_layers=1), config)
    assert tuple(model.inputs[0].shape) == (3, 5)
    assert model.optimizer.__class__.__name__ == "Adam" and model.optimizer.built
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    assert model.optimizer.global_clipnorm == 0.5
    assert model.loss.from_logits
    ids = np.arange(18, dtype=np.int32).reshape(3, 6) % 7
    loss = float(model.train_on_batch(ids[:, :-1], ids[:, 1:]))
    assert loss == pytest.approx(math.log(7), rel=0.2)  # untrained: about uniform over 7 characters
    wider = build_training_model(ModelConfig(vocab_size=7, units=8, embedding_dim=4, num_layers=1), config,
                                 batch_size=2, seq_len=None)
    assert tuple(wider.inputs[0].shape) == (2, None)
    with pytest.raises(TypeError, match="units"):
        build_training_model(ModelConfig(vocab_size=7), config, units=3)


@pytest.mark.slow
def test_a_diverged_loss_is_its_own_error(tiny_corpus, tmp_path):
    from textgen.errors import DivergedError

    trainer = open_run(prepare(tiny_corpus), "tiny", tmp_path, "boom", {"num_layers": 1, "units": 8, "embedding_dim": 4},
                       train_options(learning_rate=3e38, clip_norm=None, lr_schedule="constant"), False)
    with pytest.raises(DivergedError, match=r"Training diverged: loss became (nan|inf) at step \d+\. The last"):
        trainer.run()
    assert not (tmp_path / "boom" / "lock").exists(), "the run is unlocked for a retry"


def fake_run(directory, rename=None):
    """A run directory with one checkpoint of an untrained tiny model (no training needed)."""
    from textgen.config import ModelConfig
    from textgen.training.model import build_model
    from textgen.training.variables import model_arrays

    vocab = sorted(set("hello world\n"))
    config = ModelConfig(vocab_size=len(vocab), units=8, embedding_dim=4, num_layers=1)
    arrays = model_arrays(build_model(config, batch_size=2, seq_len=4))
    if rename:
        arrays[rename[1]] = arrays.pop(rename[0])
    checkpoints.write_run_file(directory, {"name": directory.name, "model": config.to_dict(), "vocab": vocab,
                                           "training": {}, "corpus": {}})
    checkpoints.save(directory, 3, arrays, None, {"step": 3, "history": []})
    text = directory.parent / "held_out.txt"
    text.write_text("hello world\n" * 20, encoding="utf-8")
    return text


def test_evaluate_best_refuses_before_any_evaluation(tmp_path):
    from textgen.scoring import evaluate_file

    text = fake_run(tmp_path / "runs" / "fresh")
    latest = evaluate_file(tmp_path / "runs" / "fresh", text)
    assert latest["checkpoint"] == "ckpt-00000003" and latest["bits_per_char"] > 0
    with pytest.raises(CheckpointError) as caught:
        evaluate_file(tmp_path / "runs" / "fresh", text, which="best")
    assert str(caught.value) == "Run 'fresh' has no best checkpoint yet (no evaluation ran)."


def test_evaluate_on_mismatched_variables_is_a_checkpoint_error(tmp_path):
    from textgen.scoring import evaluate_file

    text = fake_run(tmp_path / "runs" / "odd", rename=("logits/kernel", "logits/weights"))
    with pytest.raises(CheckpointError, match=r"ckpt-00000003 of run 'odd': Checkpoint has no value for "
                                              r"'logits/kernel': it does not match this model"):
        evaluate_file(tmp_path / "runs" / "odd", text)
