"""MNIST demo: loaders (npz, IDX plain/gzip, Debian Fashion-MNIST), model, CLI, save/reload, comparison.

Everything runs on tiny synthetic images: class k is a bright 6×6 block at its own place
plus noise, so a small network learns it in a couple of epochs.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, invoke

from textgen.demos import mnist, mnist_data
from textgen.errors import CheckpointError, ConfigError, DataError, TextgenError


def make_images(count: int, seed: int, size: int = 28):
    """(images uint8 (count, size, size), labels int) with one learnable pattern per class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 60, (count, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        row, col = (k // 5) * (size // 2) + 4, (k % 5) * (size // 5) + 1
        images[i, row:row + 6, col:col + 6] = 255
    return images, labels.astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic + dims + array.astype(np.uint8).tobytes()


def write_idx_dir(directory: Path, compress: bool, train=300, test=100) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_images(train, 1)
    x_test, y_test = make_images(test, 2)
    for name, array in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                        ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)):
        data = idx_bytes(array)
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def write_npz(path: Path, train=300, test=100, **override) -> Path:
    x_train, y_train = make_images(train, 1)
    x_test, y_test = make_images(test, 2)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **override}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture
def npz(tmp_path) -> Path:
    return write_npz(tmp_path / "mnist.npz")


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_round_trip(tmp_path, compress):
    directory = write_idx_dir(tmp_path / "idx", compress)
    data = mnist_data.load("digits", directory)
    x_train, y_train = make_images(300, 1)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_train, y_train)
    assert data.x_test.shape == (100, 28, 28) and data.y_test.dtype == np.int64
    assert data.class_names == [str(d) for d in range(10)] and data.source == str(directory)


def test_npz_round_trip_equals_idx(tmp_path, npz):
    from_npz = mnist_data.load("digits", npz)
    from_idx = mnist_data.load("digits", write_idx_dir(tmp_path / "idx", True))
    for name in mnist_data.NPZ_KEYS:
        np.testing.assert_array_equal(getattr(from_npz, name), getattr(from_idx, name))


def test_wrong_magic_number(tmp_path):
    directory = write_idx_dir(tmp_path / "idx", False)
    path = directory / "train-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + path.read_bytes()[4:])  # says 3-D images, holds labels
    with pytest.raises(DataError, match="magic number 2049"):
        mnist_data.load("digits", directory)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_idx(tmp_path, compress):
    directory = write_idx_dir(tmp_path / "idx", compress)
    name = "t10k-images-idx3-ubyte" + (".gz" if compress else "")
    raw = (directory / name).read_bytes()
    (directory / name).write_bytes(raw[: len(raw) - 50])
    with pytest.raises(DataError, match="truncated"):
        mnist_data.load("digits", directory)


def test_truncated_header_and_trailing_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0]))
    with pytest.raises(DataError, match="header"):
        mnist_data.read_idx(path, 1)
    path.write_bytes(idx_bytes(np.arange(5)) + b"\x00")
    with pytest.raises(DataError, match="1 bytes after"):
        mnist_data.read_idx(path, 1)


def test_images_and_labels_count_mismatch(tmp_path):
    directory = write_idx_dir(tmp_path / "idx", False)
    (directory / "train-labels-idx1-ubyte").write_bytes(idx_bytes(make_images(299, 1)[1]))
    with pytest.raises(DataError, match="300 images but 299 labels"):
        mnist_data.load("digits", directory)


def test_missing_idx_file(tmp_path):
    directory = write_idx_dir(tmp_path / "idx", False)
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        mnist_data.load("digits", directory)


def test_npz_wrong_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="Received keys: images, labels"):
        mnist_data.load("digits", path)


def test_npz_shapes_disagree(tmp_path):
    path = write_npz(tmp_path / "small.npz", x_test=make_images(100, 2, size=20)[0])
    with pytest.raises(DataError, match="must agree"):
        mnist_data.load("digits", path)


def test_npz_bad_labels_and_values(tmp_path):
    labels = np.full(100, 10, np.uint8)
    with pytest.raises(DataError, match="labels 0..9"):
        mnist_data.load("digits", write_npz(tmp_path / "a.npz", y_test=labels))
    with pytest.raises(DataError, match=r"floats, which must lie in \[0, 1\]"):
        mnist_data.load("digits", write_npz(tmp_path / "b.npz", x_test=np.full((100, 28, 28), 2.0)))


def test_not_an_npz_or_missing(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="not an .npz archive"):
        mnist_data.load("digits", text)
    with pytest.raises(DataError, match="does not exist"):
        mnist_data.load("digits", tmp_path / "nowhere")


def test_fashion_from_debian_package_directory(tmp_path, monkeypatch):
    directory = write_idx_dir(tmp_path / "fashion-mnist", True)
    monkeypatch.setattr(mnist_data, "DEBIAN_FASHION_DIR", directory)
    data = mnist_data.load("fashion")
    assert data.source == str(directory)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_digits_default_uses_keras_datasets(monkeypatch):
    keras = mnist._keras()
    x_train, y_train = make_images(20, 1)
    x_test, y_test = make_images(10, 2)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: ((x_train, y_train), (x_test, y_test)))
    data = mnist_data.load("digits")
    assert data.source == "keras.datasets.mnist" and len(data.y_train) == 20

    def offline():
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="--data PATH"):
        mnist_data.load("digits")


def test_select_classes_renumbers(npz):
    data = mnist_data.select_classes(mnist_data.load("digits", npz), [7, 3])
    assert data.classes == [7, 3] and data.class_names == ["7", "3"]
    assert set(data.y_train.tolist()) == {0, 1}
    full = mnist_data.load("digits", npz)
    assert (data.y_train == 0).sum() == (full.y_train == 7).sum()
    with pytest.raises(ConfigError):
        mnist_data.select_classes(full, [3, 3])
    with pytest.raises(ConfigError):
        mnist_data.select_classes(full, [3, 12])


def test_scale_and_one_hot():
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    scaled = mnist_data.scale(x)
    assert scaled.dtype == np.float32 and scaled.min() == 0 and scaled.max() == 1
    np.testing.assert_allclose(scaled[0, 1], [0.2, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(mnist_data.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


def test_parse_hidden():
    assert mnist.parse_hidden("800") == (800,)
    assert mnist.parse_hidden("10, 10") == (10, 10)
    for bad in ("", "0", "10,-1", "ten", "10,,10"):
        with pytest.raises(ConfigError):
            mnist.parse_hidden(bad)


# ----------------------------------------------------------------------------- model and training


def test_model_shape_and_parameter_count():
    model = mnist.build_model((10, 10), (28, 28), 10)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in dense] == [10, 10, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    assert model.count_params() == (784 * 10 + 10) + (10 * 10 + 10) + (10 * 10 + 10)
    assert mnist.build_model((128,), (28, 28), 10).count_params() == 784 * 128 + 128 + 128 * 10 + 10


@pytest.mark.slow
def test_training_learns_and_callback_agrees_with_numpy_scoring(npz):
    data = mnist_data.load("digits", npz)
    epochs_seen = []

    class Hooks:
        def on_epoch_end(self, record):
            epochs_seen.append(record["epoch"])

    model, result = mnist.train(data, hidden="32", epochs=3, batch_size=16, seed=0, hooks=Hooks())
    assert epochs_seen == [1, 2, 3] and len(result["history"]) == 3
    last = result["history"][-1]
    # Keras' own evaluate (in the callback) and the numpy scorer must agree on the final model.
    assert last["test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert last["test_loss"] == pytest.approx(result["test_loss"], rel=1e-4)
    assert result["test_accuracy"] > 0.9
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == 100 and np.trace(matrix) == round(result["test_accuracy"] * 100)


def test_confusion_matrix_counts():
    matrix = mnist.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory):
    """(CLI result, npz file, checkpoints directory) of one `textgen mnist --json` run per session:
    hidden 16, two epochs, batches of 16. Copy it with `saved_model`; never modify it."""
    root = tmp_path_factory.mktemp("mnist")
    npz = write_npz(root / "mnist.npz")
    result = invoke("mnist", "--data", npz, "--hidden", "16", "--epochs", "2", "--batch-size", "16",
                    "--checkpoints", root / "checkpoints", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    return result, npz, root / "checkpoints"


@pytest.fixture
def saved_model(trained_once, isolated):
    """The session's trained model copied into this test's ./checkpoints/mnist; returns its result."""
    result, npz, checkpoints = trained_once
    shutil.copytree(checkpoints / "mnist", isolated / "checkpoints" / "mnist")
    return result, npz


@pytest.mark.slow
def test_cli_train_json_saves_and_evaluate_reloads(saved_model, isolated):
    result, npz = saved_model
    trained = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert result.stdout.count("\n") == 1
    assert trained["mode"] == "train" and trained["hidden"] == [16] and len(trained["history"]) == 2
    saved = isolated / "checkpoints" / "mnist"
    assert sorted(p.name for p in saved.iterdir()) == ["mnist.json", "model.keras"], "no temporaries left"
    info = json.loads((saved / "mnist.json").read_text())
    assert info["epochs"] == 2 and info["batch_size"] == 16 and info["source"] == str(npz)

    evaluated = invoke("mnist", "--evaluate", "--json")
    assert evaluated.exit_code == 0, evaluated.stdout + evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["mode"] == "evaluate"
    assert scores["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-9)
    assert scores["confusion_matrix"] == trained["confusion_matrix"]


@pytest.mark.slow
def test_cli_human_output_with_show(npz):
    result = invoke("mnist", "--data", npz, "--hidden", "16", "--epochs", "1", "--show", "3")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Test accuracy" in result.stdout and "Confusion matrix" in result.stdout
    assert "█" in result.stdout
    assert result.stdout.count("✓") + result.stdout.count("✗") == 3
    assert "epoch 1: loss" in result.stderr  # progress goes to stderr

    shown = json.loads(invoke("mnist", "--evaluate", "--show", "4", "--json").stdout)["shown"]
    assert [s["index"] for s in shown] == [0, 1, 2, 3]
    x_test, y_test = make_images(100, 2)
    assert [s["true"] for s in shown] == [str(v) for v in y_test[:4]]


@pytest.mark.slow
def test_cli_two_class_mode(npz):
    result = invoke("mnist", "--data", npz, "--digits", "3", "7", "--hidden", "8", "--epochs", "2", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["classes"] == [3, 7] and out["class_names"] == ["3", "7"]
    assert np.array(out["confusion_matrix"]).shape == (2, 2)
    full = mnist_data.load("digits", npz)
    assert out["test_size"] == int(np.isin(full.y_test, [3, 7]).sum())
    again = json.loads(invoke("mnist", "--evaluate", "--json").stdout)
    assert again["classes"] == [3, 7] and again["test_accuracy"] == pytest.approx(out["test_accuracy"])
    assert_one_line_error(invoke("mnist", "--evaluate", "--digits", "1", "2"), "classes [3, 7]")


@pytest.mark.slow  # five models trained one after the other
def test_cli_compare_repeats(npz):
    result = invoke("mnist", "--data", npz, "--compare", "8", "--compare", "4,4", "--repeats", "2",
                    "--epochs", "1", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["mode"] == "compare" and out["repeats"] == 2
    assert out["train_size"] == 320 and out["test_size"] == 80  # 80/20 of all 400 images
    assert [r["hidden"] for r in out["results"]] == [[8], [4, 4]]
    assert out["results"][0]["parameters"] == 784 * 8 + 8 + 8 * 10 + 10
    for r in out["results"]:
        assert len(r["accuracies"]) == 2
        assert r["min"] <= r["mean"] <= r["max"]
        assert r["std"] == pytest.approx(np.std(r["accuracies"], ddof=1))
    table = invoke("mnist", "--data", npz, "--compare", "4", "--repeats", "1", "--epochs", "1")
    assert table.exit_code == 0, table.stdout + table.stderr
    assert "mean ± std" in table.stdout and "parameters" in table.stdout


def test_random_split_is_a_fresh_partition_per_repeat():
    first_train, first_test = mnist.random_split(400, seed=3, repeat=0)
    second_train, _ = mnist.random_split(400, seed=3, repeat=1)
    assert len(first_train) == 320 and len(first_test) == 80
    assert sorted(np.concatenate([first_train, first_test]).tolist()) == list(range(400))
    assert set(first_train.tolist()) != set(second_train.tolist())
    np.testing.assert_array_equal(mnist.random_split(400, seed=3, repeat=0)[0], first_train)
    with pytest.raises(ConfigError):
        mnist.random_split(1, seed=0, repeat=0)


@pytest.mark.slow  # four models trained one after the other
def test_compare_reports_every_run(npz):
    data = mnist_data.load("digits", npz)
    seen = []

    class Hooks:
        def on_run_end(self, record):
            seen.append((record["hidden"], record["repeat"]))

    result = mnist.compare(data, ["4", "2"], repeats=2, epochs=1, batch_size=64, seed=3, hooks=Hooks())
    assert seen == [([4], 1), ([2], 1), ([4], 2), ([2], 2)]
    assert result["train_size"] + result["test_size"] == 400


def test_cli_errors_are_one_line(tmp_path, npz):
    directory = write_idx_dir(tmp_path / "idx", True)
    raw = (directory / "train-images-idx3-ubyte.gz").read_bytes()
    (directory / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    assert_one_line_error(invoke("mnist", "--data", directory), "truncated")
    assert_one_line_error(invoke("mnist", "--evaluate"), "No trained MNIST model", "textgen mnist")
    assert_one_line_error(invoke("mnist", "--data", npz, "--hidden", "10,x"), "Received: hidden='10,x'")
    assert_one_line_error(invoke("mnist", "--data", npz, "--epochs", "0"), "Received: epochs=0")
    assert_one_line_error(invoke("mnist", "--evaluate", "--epochs", "3"), "Received: --epochs")
    assert_one_line_error(invoke("mnist", "--data", npz, "--show", "-1"), "Received: show=-1")
    assert_one_line_error(invoke("mnist", "--data", npz, "--seed", "-1"), "Received: seed=-1")
    assert_one_line_error(invoke("mnist", "--data", npz, "--compare", "4", "--show", "2"), "--compare")
    assert_one_line_error(invoke("mnist", "--dataset", "letters"), code=2)


def test_evaluate_refuses_a_model_from_another_run(saved_model, isolated):
    model_file = isolated / "checkpoints" / "mnist" / "model.keras"
    model_file.write_bytes(model_file.read_bytes() + b"\x00")
    with pytest.raises(CheckpointError, match="SHA-256"):
        mnist.load_saved(isolated / "checkpoints")
    assert_one_line_error(invoke("mnist", "--evaluate"), "different runs")


def test_render_image_uses_shades():
    image = np.zeros((4, 3), np.uint8)
    image[0:2, 0] = 255
    image[2, 2] = 255
    assert len(mnist_data.DATASETS) == 2
    from textgen.cli.demos import render_image

    assert render_image(image) == ["█  ", "  ▒"]


def test_help_has_examples():
    for command in ("mnist", "perceptron"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout


def test_errors_are_textgen_errors():
    assert issubclass(DataError, TextgenError)
