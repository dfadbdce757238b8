"""A small Dense image classifier for MNIST-style data: build, train, compare, save, reload.

Flatten(H×W) → Dense(h, relu) × len(hidden) → Dense(classes, softmax), adam, categorical
cross-entropy, accuracy; the test set is scored after every epoch by a callback. The data
(`Data`, loading, classes, scaling) comes from `textgen.demos.mnist_data`.

A trained model lives in `<checkpoints>/mnist/`: `model.keras` plus `mnist.json` (settings,
metrics, history, versions and the SHA-256 of `model.keras`, so a model and a JSON from two
different runs never load together). Keras is imported inside functions only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textgen.demos.mnist_data import Data, load, one_hot, scale, select_classes
from textgen.errors import CheckpointError, ConfigError, positive_int
from textgen.files import atomic_path, atomic_write_json, file_sha256, versions

MODEL_FILE = "model.keras"
METRICS_FILE = "mnist.json"
DEFAULTS = {"hidden": (128,), "epochs": 5, "batch_size": 32, "seed": 0}


# ----------------------------------------------------------------------------- model


def parse_hidden(text: str | Sequence[int]) -> tuple:
    """'800' → (800,); '10,10' → (10, 10). Each size must be a positive integer."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        sizes = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes):
        raise ConfigError(f"Hidden layer sizes must be positive integers separated by commas, such as 128 "
                          f"or 10,10. Received: hidden={text!r}")
    return sizes


def _keras():
    from textgen.backend import quiet_import_keras

    return quiet_import_keras()


def build_model(hidden: Sequence[int], image_shape: Sequence[int], num_classes: int):
    """Flatten → Dense(h, relu) for each h in `hidden` → Dense(num_classes, softmax), compiled."""
    keras = _keras()
    layers = [keras.Input(shape=tuple(image_shape)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    model = keras.Sequential(layers, name="mnist_" + "_".join(map(str, hidden)))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def check_seed(seed: int) -> int:
    if not 0 <= int(seed) < 2 ** 32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1. Received: seed={seed}")
    return int(seed)


def _check_positive(**values):
    for name, value in values.items():
        positive_int(name, value, option=True)


def _epoch_callback(x_test, y_test, hooks, epochs: int, steps: int):
    """A Keras callback that scores the test set after each epoch and reports to `hooks`."""
    keras = _keras()

    class EpochEvaluation(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            _call(hooks, "on_epoch_begin", epoch + 1, epochs, steps)

        def on_train_batch_end(self, batch, logs=None):
            _call(hooks, "on_batch", batch + 1, logs or {})

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            started = time.perf_counter()
            scores = self.model.evaluate(x_test, y_test, batch_size=1024, verbose=0, return_dict=True)
            record = {"epoch": epoch + 1, "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
                      "test_loss": float(scores["loss"]), "test_accuracy": float(scores["accuracy"]),
                      "seconds": round(seconds, 3), "eval_seconds": round(time.perf_counter() - started, 3)}
            logs.update(test_loss=record["test_loss"], test_accuracy=record["test_accuracy"])
            self.history.append(record)
            _call(hooks, "on_epoch_end", record)

    return EpochEvaluation()


def _call(hooks, name, *args):
    method = getattr(hooks, name, None)
    if method is not None:
        method(*args)


def predict(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities for images `x` (uint8 or float), shape (N, classes)."""
    return np.asarray(model.predict(scale(x), batch_size=batch_size, verbose=0))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[t, p]: test images of true class t predicted as class p."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def score(model, data: Data, batch_size: int = 1024) -> dict:
    """Test loss, accuracy, predictions and confusion matrix of `model` on `data`'s test set."""
    k = len(data.classes)
    probabilities = predict(model, data.x_test, batch_size)
    predicted = probabilities.argmax(axis=1)
    picked = np.clip(probabilities[np.arange(len(predicted)), data.y_test], 1e-7, 1.0)
    return {"test_loss": float(-np.log(picked).mean()),
            "test_accuracy": float((predicted == data.y_test).mean()),
            "predicted": predicted,
            "confusion_matrix": confusion_matrix(data.y_test, predicted, k)}


def train(data: Data, hidden=DEFAULTS["hidden"], epochs: int = DEFAULTS["epochs"],
          batch_size: int = DEFAULTS["batch_size"], seed: int = DEFAULTS["seed"], hooks=None):
    """Train a fresh model on `data`, scoring the test set after every epoch.

    `hooks` may define on_train_begin(info), on_epoch_begin(epoch, epochs, steps),
    on_batch(step, logs) and on_epoch_end(record); all are optional.
    Returns (model, result) where result holds settings, history and final scores.
    """
    keras = _keras()
    hidden = parse_hidden(hidden)
    _check_positive(epochs=epochs, batch_size=batch_size)
    keras.utils.set_random_seed(check_seed(seed))
    k = len(data.classes)
    model = build_model(hidden, data.x_train.shape[1:], k)
    x_train, y_train = scale(data.x_train), one_hot(data.y_train, k)
    x_test, y_test = scale(data.x_test), one_hot(data.y_test, k)
    steps = -(-len(x_train) // batch_size)
    _call(hooks, "on_train_begin", {"parameters": model.count_params(), "train_size": len(x_train),
                                    "test_size": len(x_test), "steps_per_epoch": steps, "epochs": epochs,
                                    "hidden": list(hidden)})
    callback = _epoch_callback(x_test, y_test, hooks, epochs, steps)
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[callback])
    total = time.perf_counter() - started
    scores = score(model, data)
    result = {
        "dataset": data.dataset, "source": data.source, "classes": data.classes,
        "class_names": data.class_names, "image_shape": list(data.x_train.shape[1:]),
        "hidden": list(hidden), "parameters": int(model.count_params()), "epochs": int(epochs),
        "batch_size": int(batch_size), "seed": int(seed), "optimizer": "adam",
        "loss": "categorical_crossentropy", "train_size": len(x_train), "test_size": len(x_test),
        "history": callback.history, "test_loss": scores["test_loss"],
        "test_accuracy": scores["test_accuracy"],
        "confusion_matrix": scores["confusion_matrix"].tolist(),
        "seconds": round(total, 2),
        "seconds_per_epoch": round(sum(r["seconds"] for r in callback.history) / len(callback.history), 3),
    }
    return model, result


# ----------------------------------------------------------------------------- comparison


def random_split(count: int, seed: int, repeat: int, train_fraction: float = 0.8) -> tuple:
    """(train indices, test indices): a fresh random partition of range(count) per (seed, repeat)."""
    n_train = int(round(train_fraction * count))
    if not 0 < n_train < count:
        raise ConfigError(f"Too few images to split {train_fraction:.0%}/{1 - train_fraction:.0%}. "
                          f"Received: {count} images")
    order = np.random.default_rng([int(seed), int(repeat)]).permutation(count)
    return order[:n_train], order[n_train:]


def compare(data: Data, architectures: Sequence, repeats: int = 5, epochs: int = DEFAULTS["epochs"],
            batch_size: int = DEFAULTS["batch_size"], seed: int = DEFAULTS["seed"],
            train_fraction: float = 0.8, hooks=None) -> dict:
    """Test accuracy of each architecture over `repeats` fresh random train/test splits.

    All images (train and test together) are shuffled and split `train_fraction` /
    rest for each repeat; every architecture sees the same split in a repeat (a paired
    comparison) and starts from fresh random weights. `hooks.on_run_end(record)` is called
    after each training run. The standard deviation is the sample one (ddof=1; 0 for one run).
    """
    keras = _keras()
    architectures = [parse_hidden(a) for a in architectures]
    if not architectures:
        raise ConfigError("Give at least one architecture to compare, such as --compare 128.")
    _check_positive(repeats=repeats, epochs=epochs, batch_size=batch_size)
    check_seed(seed)
    x_all = np.concatenate([data.x_train, data.x_test])
    y_all = np.concatenate([data.y_train, data.y_test])
    k = len(data.classes)
    runs = {i: [] for i in range(len(architectures))}
    for repeat in range(repeats):
        train_index, test_index = random_split(len(y_all), seed, repeat, train_fraction)
        n_train = len(train_index)
        split = Data(x_all[train_index], y_all[train_index], x_all[test_index], y_all[test_index],
                     data.dataset, data.source, data.class_names, data.classes)
        x_train, y_train = scale(split.x_train), one_hot(split.y_train, k)
        for i, hidden in enumerate(architectures):
            run_seed = int(np.random.SeedSequence([int(seed), repeat, i]).generate_state(1)[0] >> 1)
            keras.utils.set_random_seed(run_seed)
            started = time.perf_counter()
            model = build_model(hidden, split.x_train.shape[1:], k)
            model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
            accuracy = score(model, split)["test_accuracy"]
            record = {"hidden": list(hidden), "repeat": repeat + 1, "test_accuracy": accuracy,
                      "parameters": int(model.count_params()), "seconds": round(time.perf_counter() - started, 2)}
            runs[i].append(record)
            _call(hooks, "on_run_end", record)
    results = []
    for i, hidden in enumerate(architectures):
        accuracies = np.array([r["test_accuracy"] for r in runs[i]])
        results.append({
            "hidden": list(hidden), "parameters": runs[i][0]["parameters"],
            "accuracies": accuracies.tolist(), "mean": float(accuracies.mean()),
            "std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
            "min": float(accuracies.min()), "max": float(accuracies.max()),
            "seconds_per_run": round(float(np.mean([r["seconds"] for r in runs[i]])), 2),
        })
    return {"dataset": data.dataset, "source": data.source, "classes": data.classes,
            "class_names": data.class_names, "repeats": int(repeats), "epochs": int(epochs),
            "batch_size": int(batch_size), "seed": int(seed), "train_size": n_train,
            "test_size": len(y_all) - n_train, "results": results}


# ----------------------------------------------------------------------------- save / load


def model_dir(checkpoints_dir: str | Path) -> Path:
    return Path(checkpoints_dir) / "mnist"


def save(model, result: dict, checkpoints_dir: str | Path) -> Path:
    """Write `model.keras` and `mnist.json` into `<checkpoints_dir>/mnist/`; returns that directory.

    Both files are written atomically; the JSON, written last, records the model's SHA-256, so
    a crash between the two leaves a pair that refuses to load rather than one that silently
    mixes two runs.
    """
    keras = _keras()
    directory = model_dir(checkpoints_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / MODEL_FILE) as tmp:
        keras_name = tmp.with_name(tmp.name + ".keras")  # Keras saves only to names ending in .keras
        try:
            model.save(keras_name)
            os.replace(keras_name, tmp)
        finally:
            keras_name.unlink(missing_ok=True)
        digest = file_sha256(tmp)
    info = {**result, "model_file": MODEL_FILE, "model_sha256": digest, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": versions(backend=keras.backend.backend(), installed_only=True)}
    atomic_write_json(directory / METRICS_FILE, info)
    return directory


def load_saved(checkpoints_dir: str | Path):
    """(model, info) from `<checkpoints_dir>/mnist/`, checking that the two files belong together."""
    import json

    directory = model_dir(checkpoints_dir)
    metrics, model_path = directory / METRICS_FILE, directory / MODEL_FILE
    if not metrics.exists() and not model_path.exists():
        raise CheckpointError(f"No trained MNIST model in {str(directory)!r}. Train one first: textgen mnist")
    for path in (metrics, model_path):
        if not path.exists():
            raise CheckpointError(f"{str(directory)!r} is incomplete: {path.name} is missing. "
                                  "Train again with: textgen mnist")
    try:
        info = json.loads(metrics.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(metrics)!r} is not valid JSON ({e}).") from None
    if file_sha256(model_path) != info.get("model_sha256"):
        raise CheckpointError(f"{str(model_path)!r} does not match {METRICS_FILE} (SHA-256 differs): the two "
                              "files come from different runs. Train again with: textgen mnist")
    keras = _keras()
    try:
        model = keras.saving.load_model(model_path)
    except Exception as e:
        raise CheckpointError(f"Could not load {str(model_path)!r} ({' '.join(str(e).split())[:200]}).") from None
    return model, info


def data_for_saved(info: dict, data_path: str | Path | None = None, dataset: str | None = None) -> Data:
    """The test data a saved model was trained on (or `data_path`), restricted to its classes."""
    if data_path is None and not info["source"].startswith("keras."):
        data_path = info["source"]  # the file or directory it was trained from
    data = load(dataset or info["dataset"], data_path)
    if list(data.x_test.shape[1:]) != list(info["image_shape"]):
        raise CheckpointError(f"The saved model takes {info['image_shape'][0]}×{info['image_shape'][1]} images. "
                              f"Received: {data.x_test.shape[1]}×{data.x_test.shape[2]} images from {data.source!r}")
    if info["classes"] != list(range(10)):
        data = select_classes(data, info["classes"])
    return data
