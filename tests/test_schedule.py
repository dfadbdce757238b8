"""The learning-rate schedule as pure functions: no model, no trainer."""

from __future__ import annotations

import math

import pytest

from textgen.config import TrainConfig
from textgen.training import schedule


def config(**options) -> TrainConfig:
    return TrainConfig(**{"learning_rate": 0.01, **options}).validate()


def test_constant_with_and_without_warmup():
    flat = config(lr_schedule="constant")
    assert [schedule.learning_rate(s, flat, 100) for s in (0, 50, 10_000)] == [0.01] * 3
    warm = config(lr_schedule="constant", warmup_steps=4)
    rates = [schedule.learning_rate(s, warm, 100) for s in range(6)]
    assert rates == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_cosine_runs_from_the_rate_to_the_floor_and_stays():
    cos = config(lr_schedule="cosine", min_lr_fraction=0.1)
    assert schedule.learning_rate(0, cos, 100) == pytest.approx(0.01)
    assert schedule.learning_rate(50, cos, 100) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
    assert schedule.learning_rate(100, cos, 100) == pytest.approx(0.001)
    assert schedule.learning_rate(5_000, cos, 100) == pytest.approx(0.001)
    rates = [schedule.learning_rate(s, cos, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:])), "never rises"


def test_cosine_after_warmup_starts_at_the_peak():
    cos = config(lr_schedule="cosine", warmup_steps=10)
    assert schedule.learning_rate(9, cos, 110) == pytest.approx(0.01)  # last warm-up step reaches the peak
    assert schedule.learning_rate(10, cos, 110) == pytest.approx(0.01)  # cosine progress 0
    expected = 0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert schedule.learning_rate(35, cos, 110) == pytest.approx(expected)


def test_cosine_with_a_zero_floor_and_a_degenerate_length():
    cos = config(lr_schedule="cosine", min_lr_fraction=0.0, warmup_steps=5)
    assert schedule.learning_rate(5, cos, 5) == pytest.approx(0.01)  # no division by zero
    assert schedule.learning_rate(6, cos, 5) == pytest.approx(0.0)


def test_plateau_has_no_per_step_rate():
    assert schedule.learning_rate(3, config(lr_schedule="plateau"), 100) is None


def test_initial_decay_steps_and_when_to_fit():
    assert schedule.initial_decay_steps(config(epochs=3), 40) == 120
    assert schedule.initial_decay_steps(config(epochs=3, decay_steps=7), 40) == 7
    assert schedule.fits_to_time_limit(config(time_limit=60.0))
    assert not schedule.fits_to_time_limit(config(time_limit=60.0, decay_steps=10))
    assert not schedule.fits_to_time_limit(config(time_limit=60.0, lr_schedule="constant"))
    assert not schedule.fits_to_time_limit(config())


def test_fitted_decay_steps():
    projected = schedule.projected_steps(100, steps_per_second=10.0, seconds_left=20.0)
    assert projected == 300.0
    assert schedule.projected_steps(100, 10.0, -5.0) == 100.0  # over time: no steps left
    assert schedule.fitted_decay_steps(projected, 100, max_steps=10_000) == 300
    assert schedule.fitted_decay_steps(projected, 100, max_steps=250) == 250  # never past the run
    assert schedule.fitted_decay_steps(50.0, 100, max_steps=250) == 100  # never before now


def test_evals_since_best():
    assert schedule.evals_since_best([]) == 0
    assert schedule.evals_since_best([3.0, 2.0, 1.0]) == 0
    assert schedule.evals_since_best([3.0, 2.0, 2.5, 2.0]) == 2  # equal is not better
    assert schedule.evals_since_best([3.0, 2.0, 2.5, 1.5, 1.6]) == 1


def test_plateau_halves_every_second_stale_evaluation_down_to_the_floor():
    plateau = config(lr_schedule="plateau", min_lr_fraction=0.3)
    assert schedule.plateau_learning_rate(0.01, plateau, stale=0) is None
    assert schedule.plateau_learning_rate(0.01, plateau, stale=1) is None
    assert schedule.plateau_learning_rate(0.01, plateau, stale=2) == pytest.approx(0.005)
    assert schedule.plateau_learning_rate(0.005, plateau, stale=3) is None
    assert schedule.plateau_learning_rate(0.005, plateau, stale=4) == pytest.approx(0.003)
    assert schedule.plateau_learning_rate(0.01, config(lr_schedule="cosine"), stale=2) is None
