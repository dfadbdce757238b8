"""Model and optimizer variables <-> the named numpy arrays a checkpoint stores.

Model arrays are keyed by variable path (`lstm_0/lstm/lstm_cell/kernel`, ...), except the
dropout layers' seed generators, whose paths depend on creation order across models and are
stored as `seed_state/<n>`. Optimizer arrays are keyed by position (`0000`, `0001`, ...),
which is stable for a given model and optimizer. Only numpy and the variables' own
`numpy()` / `assign()` are used, so this works on every Keras backend.

Averaged weights (`TrainConfig.average`): the optimizer keeps a moving average of every
trainable weight. A checkpoint's weights are the averages (what sampling, evaluation, serving
and export read), and its optimizer arrays hold, besides the optimizer's variables (the
averages among them), the weights being trained under `training/<path>`, so resuming puts
each back where it was.
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


TRAINING_PREFIX = "training/"


def _averages(optimizer) -> list | None:
    """The optimizer's moving averages, in the order of the model's trainable variables (None: none kept)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # mixed_float16's LossScaleOptimizer
    return list(inner._model_variables_moving_average) if getattr(inner, "use_ema", False) else None


def saved_model_arrays(model, optimizer) -> dict:
    """The model arrays a checkpoint holds: `model_arrays`, with the averaged weights where kept."""
    arrays = model_arrays(model)
    if _averages(optimizer) is not None:
        arrays.update({path: value.astype(arrays[path].dtype) for path, value in used_arrays(model, optimizer).items()})
    return arrays


def used_arrays(model, optimizer) -> dict:
    """The trainable weights that evaluation and samples use: the averages where kept."""
    averages = _averages(optimizer)
    if averages is None:
        return trainable_arrays(model)
    return {v.path: np.asarray(a.numpy()) for v, a in zip(model.trainable_variables, averages, strict=True)}


def optimizer_arrays(optimizer, model=None) -> dict:
    """Every optimizer variable (moments, iteration count, averages), keyed by position; with
    averaged weights and `model`, the weights being trained too (`training/<path>`)."""
    arrays = {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    if model is not None and _averages(optimizer) is not None:
        arrays.update({TRAINING_PREFIX + path: value for path, value in trainable_arrays(model).items()})
    return arrays


def assign_optimizer_arrays(optimizer, arrays: dict, model=None) -> None:
    """Load what `optimizer_arrays` saved; with `model`, the weights being trained where saved."""
    trained = {k[len(TRAINING_PREFIX):]: v for k, v in arrays.items() if k.startswith(TRAINING_PREFIX)}
    count = len(arrays) - len(trained)
    if count != len(optimizer.variables):
        raise CheckpointError(
            f"Optimizer state has {count} variables, expected {len(optimizer.variables)}"
        )
    for i, v in enumerate(optimizer.variables):
        v.assign(_check(f"{i:04d}", arrays, v))
    if model is not None and _averages(optimizer) is not None:
        if not trained:
            raise CheckpointError("Optimizer state has no weights in training: it does not match this run")
        for v in model.trainable_variables:
            v.assign(_check(v.path, trained, v))


def set_averages(optimizer, model) -> None:
    """Make the moving averages equal the model's weights (after the best weights are put back)."""
    averages = _averages(optimizer)
    if averages is not None:
        for v, average in zip(model.trainable_variables, averages, strict=True):
            average.assign(v.value)
