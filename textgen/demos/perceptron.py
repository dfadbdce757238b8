"""The single sigmoid neuron from the classic "neural network in 9 lines of Python", numpy only.

Three inputs, no bias, weights drawn uniformly from [-1, 1]. Each iteration runs the four
training examples forward, out = sigmoid(x · w), and adds x^T · ((y - out) · out · (1 - out)):
the negative gradient of the squared error ½ Σ (y - out)², with learning rate 1. The
label equals the first input, so the neuron should answer close to 1 for the unseen (1, 0, 0).
"""

from __future__ import annotations

import numpy as np

from textgen.errors import ConfigError

TRAINING_INPUTS = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=np.float64)
TRAINING_OUTPUTS = np.array([[0, 1, 1, 0]], dtype=np.float64).T
NEW_CASE = np.array([1, 0, 0], dtype=np.float64)
DEFAULT_ITERATIONS = 10_000
DEFAULT_SEED = 1  # the article's seed; with it the prediction for (1, 0, 0) is 0.99993704


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def initial_weights(seed: int) -> np.ndarray:
    """(3, 1) weights uniform in [-1, 1), drawn as the article does (legacy RandomState)."""
    return 2 * np.random.RandomState(seed).random_sample((3, 1)) - 1


def squared_error(weights: np.ndarray, inputs=TRAINING_INPUTS, outputs=TRAINING_OUTPUTS) -> float:
    """½ Σ (y - sigmoid(x · w))² over the examples."""
    return float(0.5 * np.sum((outputs - sigmoid(inputs @ weights)) ** 2))


def step(weights: np.ndarray, inputs=TRAINING_INPUTS, outputs=TRAINING_OUTPUTS) -> np.ndarray:
    """One back-propagation update: the weights plus the negative gradient of `squared_error`."""
    output = sigmoid(inputs @ weights)
    return weights + inputs.T @ ((outputs - output) * output * (1 - output))


def train(iterations: int = DEFAULT_ITERATIONS, seed: int = DEFAULT_SEED, history_points: int = 6) -> dict:
    """Train the neuron; returns weights, predictions and the error at a few iterations."""
    if iterations < 0:
        raise ConfigError(f"--iterations must be zero or a positive integer. Received: iterations={iterations}")
    if not 0 <= seed < 2 ** 32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1. Received: seed={seed}")
    weights = initial_weights(seed)
    start = weights.copy()
    marks = sorted({0, iterations, *np.unique(np.geomspace(1, max(iterations, 1), history_points).astype(int))})
    marks = [m for m in marks if m <= iterations]
    history = []
    for i in range(iterations + 1):
        if i in marks:
            history.append({"iteration": i, "squared_error": squared_error(weights)})
        if i < iterations:
            weights = step(weights)
    return {
        "seed": seed, "iterations": iterations,
        "initial_weights": start[:, 0].tolist(), "weights": weights[:, 0].tolist(),
        "training": [{"inputs": x.astype(int).tolist(), "target": int(y[0]), "output": float(sigmoid(x @ weights)[0])}
                     for x, y in zip(TRAINING_INPUTS, TRAINING_OUTPUTS, strict=True)],
        "new_case": NEW_CASE.astype(int).tolist(),
        "prediction_before_training": float(sigmoid(NEW_CASE @ start)[0]),
        "prediction": float(sigmoid(NEW_CASE @ weights)[0]),
        "history": history,
    }
