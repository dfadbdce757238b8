"""Model and optimizer variables <-> the named numpy arrays a checkpoint stores.

Model arrays are keyed by variable path (`lstm_0/lstm/lstm_cell/kernel`, ...), except the
dropout layers' seed generators, whose paths depend on creation order across models and are
stored as `seed_state/<n>`. Optimizer arrays are keyed by position (`0000`, `0001`, ...),
which is stable for a given model and optimizer. Only numpy and the variables' own
`numpy()` / `assign()` are used, so this works on every Keras backend.
"""

from __future__ import annotations

import numpy as np

from textgen.errors import CheckpointError


def _variable_keys(model) -> list:
    keys, seeds = [], 0
    for v in model.variables:
        if "seed_generator" in v.path:
            keys.append(f"seed_state/{seeds}")
            seeds += 1
        else:
            keys.append(v.path)
    return keys


def model_arrays(model) -> dict:
    """Every model variable (weights, carried LSTM state, RNG state) as a numpy array."""
    return {k: np.asarray(v.numpy()) for k, v in zip(_variable_keys(model), model.variables, strict=True)}


def trainable_arrays(model) -> dict:
    """The trainable weights only, keyed by variable path."""
    return {v.path: np.asarray(v.numpy()) for v in model.trainable_variables}


def _check(key: str, arrays: dict, variable) -> np.ndarray:
    if key not in arrays:
        raise CheckpointError(f"Checkpoint has no value for {key!r}: it does not match this model")
    value = arrays[key]
    if tuple(value.shape) != tuple(variable.shape):
        raise CheckpointError(
            f"Checkpoint value {key!r} has shape {tuple(value.shape)}, the model expects {tuple(variable.shape)}"
        )
    return value


def assign_model_arrays(model, arrays: dict, include_state: bool = True) -> None:
    """Load saved variables into `model`; without `include_state`, only trainable weights."""
    for key, v in zip(_variable_keys(model), model.variables, strict=True):
        if not include_state and not v.trainable:
            continue
        v.assign(_check(key, arrays, v))


def assign_trainable_arrays(model, arrays: dict) -> None:
    """Load trainable weights keyed by variable path (a scorer or a sampler sharing a model's weights).

    A missing or misshapen value is a CheckpointError naming it. Each value is copied: JAX
    donates a model's buffers to its predict step, so two models must not share one.
    """
    for v in model.trainable_variables:
        v.assign(np.array(_check(v.path, arrays, v)))


def optimizer_arrays(optimizer) -> dict:
    """Every optimizer variable (moments, iteration count), keyed by position."""
    return {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}


def assign_optimizer_arrays(optimizer, arrays: dict) -> None:
    if len(arrays) != len(optimizer.variables):
        raise CheckpointError(
            f"Optimizer state has {len(arrays)} variables, expected {len(optimizer.variables)}"
        )
    for i, v in enumerate(optimizer.variables):
        v.assign(arrays[f"{i:04d}"])
