"""Training controls: presets, learning-rate schedules, early stopping, samples, TensorBoard."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from helpers import SMALLEST_MODEL
from typer.testing import CliRunner

from textgen import checkpoints
from textgen.cli import app
from textgen.config import DEFAULT_PRESET, PRESETS, ModelConfig, TrainConfig, preset
from textgen.corpus import prepare
from textgen.errors import ConfigError
from textgen.training.opening import TrainingCallbacks, open_run


def options(**overrides):
    base = {"seq_len": 8, "batch_size": 2, "epochs": 1, "seed": 1, "eval_chars": 200, "sample_chars": 0}
    base.update(overrides)
    return base


class Recorder(TrainingCallbacks):
    def __init__(self):
        self.samples, self.rates, self.trainer = [], [], None

    def on_step(self, step, logs):
        self.rates.append(self.trainer.current_learning_rate())

    def on_sample(self, text):
        self.samples.append(text)


def run(corpus, root, name, **train):
    rec = Recorder()
    trainer = open_run(corpus, "tiny", root, name, SMALLEST_MODEL, options(**train), False, callbacks=rec)
    rec.trainer = trainer
    return trainer, rec, trainer.run()


@pytest.mark.slow
def test_size_presets(tiny_corpus):
    """Each preset builds its model config; --size reaches the run's config (one tiny CLI run)."""
    counts = {}
    for size, expected in PRESETS.items():
        config = ModelConfig(vocab_size=65, **preset(size)).validate()
        assert {k: getattr(config, k) for k in expected} == expected
        counts[size] = config.num_parameters()
    assert counts["small"] < counts["medium"] < counts["large"]
    # --size small sets one layer; --units/--embedding-dim override the preset's others.
    result = CliRunner().invoke(app, ["train", str(tiny_corpus), "--size", "small", "--units", "8",
                                      "--embedding-dim", "4", "--run", "small", "--epochs", "1", "--seq-len", "64",
                                      "--batch-size", "8", "--eval-chars", "100", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads((checkpoints.run_dir("checkpoints", "small") / "run.json").read_text())
    assert PRESETS["small"]["num_layers"] != PRESETS[DEFAULT_PRESET]["num_layers"]
    assert (info["model"]["num_layers"], info["model"]["units"], info["model"]["embedding_dim"]) == \
        (PRESETS["small"]["num_layers"], 8, 4)
    assert "size" not in info["chosen"], "a size the user gave is not textgen's choice"
    result = CliRunner().invoke(app, ["train", str(tiny_corpus), "--size", "huge"])
    assert result.exit_code == 1 and "size=" in result.stderr


@pytest.mark.slow
def test_cosine_with_warmup(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    trainer, rec, _ = run(corpus, tmp_path, "cos", lr_schedule="cosine", warmup_steps=5, decay_steps=40,
                          learning_rate=0.01, eval_every=1000, epochs=1, seq_len=32, batch_size=4)
    assert trainer.step > 30
    rates = rec.rates
    assert rates[0] < rates[3] < rates[4], "warm-up rises"
    assert max(rates) == pytest.approx(0.01, rel=0.05)
    assert rates[30] < rates[10], "then decays"
    assert min(rates) >= 0.01 * 0.1 - 1e-9


def cosine(step, total, lr=0.01, floor=0.1):
    progress = min(1.0, step / total)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class StopAt(Recorder):
    """Stops the run after step `at`, as SIGTERM would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_step(self, step, logs):
        super().on_step(step, logs)
        if step == self.at:
            self.trainer.stop_reason = "SIGTERM"


@pytest.mark.slow
def test_cosine_fits_its_decay_to_the_time_limit(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    trainer, rec, summary = run(corpus, tmp_path, "fit", lr_schedule="cosine", time_limit=4.0, epochs=100_000,
                                eval_every=300, learning_rate=0.01)
    assert summary["stopped"] == "time_limit" and trainer.fitted
    steps = trainer.step
    assert abs(trainer.decay_total - steps) <= 0.25 * steps, (trainer.decay_total, steps)
    assert rec.rates[0] == pytest.approx(0.01, rel=1e-6)
    assert rec.rates[-1] < 0.01 * 0.3, "decayed close to the 10% floor when the time ran out"
    assert checkpoints.latest(tmp_path / "fit").state["fitted_decay_steps"] == trainer.decay_total


def test_fitted_decay_arithmetic(tiny_corpus, tmp_path):
    trainer = open_run(prepare(tiny_corpus), "tiny", tmp_path, "arith", SMALLEST_MODEL,
                       options(lr_schedule="cosine", time_limit=30.0, epochs=1000), False)
    trainer.lock.release()
    assert trainer.fitting and not trainer.fitted
    trainer.step = 100
    now = time.time()
    trainer._clock, trainer._started = (now - 10, 0), now - 10  # 10 steps/s so far, 20 s left: 200 more
    trainer._fit_decay()
    assert trainer.decay_total == pytest.approx(300, abs=2)
    trainer.config.time_limit, trainer.config.epochs = 3000.0, 1  # never beyond the run's last step
    trainer._fit_decay()
    assert trainer.decay_total == trainer.batches.steps_per_epoch


@pytest.mark.slow
def test_resume_keeps_the_fitted_schedule(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    first = StopAt(200)
    trainer = open_run(corpus, "tiny", tmp_path, "res", SMALLEST_MODEL,
                       options(lr_schedule="cosine", time_limit=60.0, epochs=1000, eval_every=10_000,
                               learning_rate=0.01), False, callbacks=first)
    first.trainer = trainer
    trainer.run()
    fitted = trainer.decay_total
    assert trainer.fitted and trainer.step == 200 < fitted
    assert checkpoints.latest(tmp_path / "res").state["fitted_decay_steps"] == fitted
    # A new time limit on --resume does not refit: the run keeps the schedule it started.
    again = StopAt(210)
    resumed = open_run(corpus, "tiny", tmp_path, "res", {}, {"time_limit": 1000.0}, True, callbacks=again)
    again.trainer = resumed
    assert resumed.decay_total == fitted and not resumed.fitting
    resumed.run()
    assert again.rates == pytest.approx([cosine(s, fitted) for s in range(200, 210)], rel=1e-6)
    # --decay-steps on --resume replaces it.
    third = StopAt(215)
    resumed = open_run(corpus, "tiny", tmp_path, "res", {}, {"decay_steps": 400}, True, callbacks=third)
    third.trainer = resumed
    resumed.run()
    assert third.rates == pytest.approx([cosine(s, 400) for s in range(210, 215)], rel=1e-6)


@pytest.mark.slow
def test_plateau_halves_and_patience_stops_restoring_best(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    # A huge learning rate makes validation loss get worse: plateau halves, patience stops.
    trainer, rec, summary = run(corpus, tmp_path, "plat", lr_schedule="plateau", learning_rate=0.5,
                                clip_norm=None, eval_every=2, patience=4, epochs=50)
    assert summary["stopped"] == "early_stopping"
    history = trainer.history
    best = min(history, key=lambda r: r["val_loss"])
    assert history[-1]["step"] - best["step"] == 4 * 2
    assert history[-1]["learning_rate"] < 0.5, "plateau lowered the rate"
    latest = checkpoints.latest(tmp_path / "plat")
    best_ckpt = checkpoints.best(tmp_path / "plat")
    assert latest.state["restored_best_from_step"] == best["step"] == best_ckpt.step
    for key, value in checkpoints.load_arrays(best_ckpt.path).items():
        if "seed_state" not in key and not key.endswith(("/h", "/c")):
            np.testing.assert_array_equal(checkpoints.load_arrays(latest.path)[key], value)


@pytest.mark.slow
def test_sample_every(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    trainer, rec, _ = run(corpus, tmp_path, "smp", sample_every=4, sample_chars=0, eval_every=1000,
                          time_limit=None, epochs=1, seq_len=64, batch_size=8)
    steps = trainer.step
    assert len(rec.samples) == steps // 4
    assert all(len(s) == 200 for s in rec.samples)


@pytest.mark.slow
def test_tensorboard_logs(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    run(corpus, tmp_path, "tb", tensorboard=True, eval_every=5, epochs=1, seq_len=64, batch_size=8)
    events = list(checkpoints.tensorboard_dir(tmp_path / "tb").rglob("events.out.tfevents*"))
    assert {p.parent.name for p in events} >= {"train", "validation"}
    assert all(p.stat().st_size > 0 for p in events)


@pytest.mark.parametrize("field,value", [("lr_schedule", "linear"), ("warmup_steps", -1), ("patience", 0),
                                         ("state_reset", 0), ("sample_temperature", -1.0)])
def test_bad_control_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


def test_plateau_refuses_warmup():
    with pytest.raises(ConfigError, match="warmup"):
        TrainConfig(lr_schedule="plateau", warmup_steps=3).validate()


@pytest.mark.slow
def test_a_time_limit_reached_after_the_best_evaluation_restores_the_best(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    # A huge constant learning rate: validation soon gets worse, so the last evaluation is rarely the best.
    trainer, rec, summary = run(corpus, tmp_path, "tl", lr_schedule="constant", learning_rate=0.5,
                                clip_norm=None, eval_every=2, time_limit=3.0, epochs=100_000)
    assert summary["stopped"] == "time_limit" and len(trainer.history) >= 3
    best = min(trainer.history, key=lambda r: r["val_loss"])
    latest = checkpoints.latest(tmp_path / "tl")
    if best["val_loss"] < trainer.history[-1]["val_loss"]:
        assert latest.state["restored_best_from_step"] == best["step"] == checkpoints.best(tmp_path / "tl").step
        assert summary["val_loss"] == best["val_loss"] and "weights restored" in summary["stop_reason"]
        for key, value in checkpoints.load_arrays(checkpoints.best(tmp_path / "tl").path).items():
            if "seed_state" not in key and not key.endswith(("/h", "/c")):
                np.testing.assert_array_equal(checkpoints.load_arrays(latest.path)[key], value)
    else:  # the last evaluation is the best: nothing to put back
        assert latest.state["restored_best_from_step"] is None and "restored" not in summary["stop_reason"]
        assert summary["val_loss"] == trainer.history[-1]["val_loss"]
