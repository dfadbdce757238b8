"""The single-neuron perceptron: learns the rule, reproduces the article, gradient is right."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import invoke

from textgen.demos import perceptron
from textgen.errors import ConfigError


def test_learns_the_rule_with_default_iterations():
    result = perceptron.train()
    assert result["iterations"] == 10_000
    assert result["prediction"] > 0.9
    for row in result["training"]:
        assert abs(row["output"] - row["target"]) < 0.05
    errors = [h["squared_error"] for h in result["history"]]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 100


def test_reproduces_the_article_with_seed_1():
    # "How to build a simple neural network in 9 lines of Python code": seed 1, 10,000 iterations.
    result = perceptron.train(10_000, seed=1)
    assert result["prediction"] == pytest.approx(0.99993704, abs=1e-8)
    np.testing.assert_allclose(result["weights"], [9.67299303, -0.2078435, -4.62963669], atol=1e-7)


def test_deterministic_by_seed():
    assert perceptron.train(200, seed=7) == perceptron.train(200, seed=7)
    assert perceptron.train(200, seed=7)["initial_weights"] != perceptron.train(200, seed=8)["initial_weights"]
    for seed in range(20):
        weights = perceptron.initial_weights(seed)
        assert weights.shape == (3, 1) and (weights >= -1).all() and (weights <= 1).all()


def test_update_is_the_negative_gradient_of_the_squared_error():
    weights = perceptron.initial_weights(3)
    update = perceptron.step(weights) - weights
    numeric = np.zeros_like(weights)
    h = 1e-6
    for i in range(3):
        bump = np.zeros_like(weights)
        bump[i] = h
        numeric[i] = (perceptron.squared_error(weights + bump) - perceptron.squared_error(weights - bump)) / (2 * h)
    np.testing.assert_allclose(update, -numeric, atol=1e-8)


def test_zero_iterations_is_the_untrained_neuron_and_negative_is_an_error():
    result = perceptron.train(0, seed=1)
    assert result["weights"] == result["initial_weights"]
    assert result["prediction"] == result["prediction_before_training"]
    with pytest.raises(ConfigError, match="iterations=-1"):
        perceptron.train(-1)


def test_cli_json_and_human_output():
    result = invoke("perceptron", "--iterations", 500, "--seed", 2, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert data["iterations"] == 500 and data["seed"] == 2 and data["new_case"] == [1, 0, 0]
    assert data == json.loads(json.dumps(perceptron.train(500, 2)))

    human = invoke("perceptron")
    assert human.exit_code == 0, human.stdout + human.stderr
    assert "Learned weights" in human.stdout and "0.99993704" in human.stdout


def test_cli_bad_iterations_is_one_line_error():
    result = invoke("perceptron", "--iterations", -5)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "Error: --iterations must be zero or a positive integer. Received: iterations=-5"
