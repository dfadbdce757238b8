"""`textgen mnist` and `textgen perceptron`: the demos apart from the language model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from textgen.cli.common import JsonOption, emit_json, err, out
from textgen.demos import mnist as mnist_lib
from textgen.demos import mnist_data
from textgen.demos import perceptron as perceptron_lib
from textgen.errors import ConfigError, positive_int

DEFAULTS = mnist_lib.DEFAULTS

SHADES = " ░▒▓█"


class DatasetName(str, Enum):
    digits = "digits"
    fashion = "fashion"


CheckpointsOption = Annotated[
    Path, typer.Option("--checkpoints", help="Directory holding the runs; the model goes in its mnist/.",
                       envvar="TEXTGEN_CHECKPOINTS")
]


# ----------------------------------------------------------------------------- rendering


class EpochProgress:
    """Rich progress on stderr: a bar per epoch, then one line with its scores."""

    def __init__(self, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 console=err, disable=not (enabled and err.is_terminal), transient=True)
        self.task = None

    def on_train_begin(self, info):
        if self.enabled:
            err.print(f"[dim]{info['parameters']:,} parameters · hidden {info['hidden']} · "
                      f"{info['train_size']:,} training / {info['test_size']:,} test images · "
                      f"{info['steps_per_epoch']:,} steps per epoch[/]")

    def on_epoch_begin(self, epoch, epochs, steps):
        self.progress.start()
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, status="")

    def on_batch(self, step, logs):
        if step % 20 == 0 or step == self.progress.tasks[-1].total:
            self.progress.update(self.task, completed=step,
                                 status=f"loss {logs.get('loss', 0):.4f} · accuracy {logs.get('accuracy', 0):.4f}")

    def on_epoch_end(self, record):
        self.progress.stop()
        if self.task is not None:
            self.progress.remove_task(self.task)
        if self.enabled:
            err.print(f"epoch {record['epoch']}: loss {record['loss']:.4f} · accuracy {record['accuracy']:.4f} · "
                      f"[bold]test accuracy {record['test_accuracy']:.4f}[/] · test loss {record['test_loss']:.4f} "
                      f"[dim]({record['seconds']:.1f}s train, {record['eval_seconds']:.1f}s test)[/]")

    def on_run_end(self, record):
        if self.enabled:
            err.print(f"hidden {','.join(map(str, record['hidden']))} · repeat {record['repeat']}: "
                      f"test accuracy {record['test_accuracy']:.4f} [dim]({record['seconds']:.1f}s)[/]")


def render_image(image: np.ndarray) -> list:
    """Lines of shade characters; each character covers one column and two rows of pixels."""
    x = image.astype(np.float32)
    x = x / 255.0 if np.issubdtype(image.dtype, np.integer) else x
    if x.shape[0] % 2:
        x = np.vstack([x, np.zeros((1, x.shape[1]), np.float32)])
    cells = (x[0::2] + x[1::2]) / 2
    index = np.clip(np.rint(cells * (len(SHADES) - 1)), 0, len(SHADES) - 1).astype(int)
    return ["".join(SHADES[i] for i in row) for row in index]


def show_images(data, predicted: np.ndarray, count: int) -> list:
    """Print the first `count` test images with predicted and true labels; returns what was shown."""
    shown = []
    count = min(count, len(data.y_test))
    width = data.x_test.shape[2]
    per_row = max(1, (out.width + 2) // (width + 2))
    for start in range(0, count, per_row):
        picks = range(start, min(start + per_row, count))
        blocks = [render_image(data.x_test[i]) for i in picks]
        for line in zip(*blocks, strict=True):
            out.print("  ".join(line), markup=False, highlight=False)
        captions = []
        for i in picks:
            ok = predicted[i] == data.y_test[i]
            name, true = data.class_names[predicted[i]], data.class_names[data.y_test[i]]
            text = f"✓ {name}" if ok else f"✗ {name} (true {true})"
            captions.append(f"[{'green' if ok else 'bold red'}]{text[:width].ljust(width)}[/]")
            shown.append({"index": i, "predicted": name, "true": true, "correct": bool(ok)})
        out.print("  ".join(captions))
        out.print()
    return shown


def confusion_table(matrix, class_names, classes) -> Table:
    """Rows: true class; columns: predicted class, headed by the original label numbers."""
    from rich import box

    table = Table(title="Confusion matrix", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False)
    table.add_column("true \\ predicted", style="bold", no_wrap=True)
    for label in classes:
        table.add_column(str(label), justify="right")
    table.add_column("recall", justify="right")
    for i, (label, name, row) in enumerate(zip(classes, class_names, matrix, strict=True)):
        cells = [f"[bold green]{n}[/]" if i == j else (f"[red]{n}[/]" if n else "[dim]0[/]")
                 for j, n in enumerate(row)]
        recall = row[i] / sum(row) if sum(row) else 0.0
        table.add_row(name if name == str(label) else f"{label} {name}", *cells, f"{recall:.3f}")
    return table


# ----------------------------------------------------------------------------- mnist


def mnist(
    data: Annotated[Optional[Path], typer.Option(help="A Keras-style mnist.npz, or a directory with the four IDX files (gzipped or not). [default: download through keras.datasets]")] = None,
    dataset: Annotated[Optional[DatasetName], typer.Option(help="digits (MNIST) or fashion (Fashion-MNIST; offline from Debian's dataset-fashion-mnist when installed). [default: digits]")] = None,
    hidden: Annotated[Optional[str], typer.Option(help=f"Hidden layer sizes, comma-separated: 800, or 10,10 for two layers. [default: {','.join(map(str, DEFAULTS['hidden']))}]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help=f"Passes over the training images. [default: {DEFAULTS['epochs']}]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Images per gradient step. [default: {DEFAULTS['batch_size']}]")] = None,
    seed: Annotated[Optional[int], typer.Option(help=f"Random seed (weights, shuffling, splits). [default: {DEFAULTS['seed']}]")] = None,
    digits: Annotated[Optional[tuple[int, int]], typer.Option(help="Two-class mode: train and test on these two classes only, e.g. --digits 3 7.")] = None,
    show: Annotated[int, typer.Option(help="Draw this many test images in the terminal with predicted and true labels.")] = 0,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Reload the saved model and score it on the test set, without training.")] = False,
    compare: Annotated[Optional[list[str]], typer.Option(help="Compare architectures (repeat the option): --compare 800 --compare 10,10. Trains on fresh 80/20 splits of all images; saves nothing.")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="With --compare (or alone, for --hidden): random 80/20 re-splits, one fresh model each. [default: 1]")] = None,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """Train a small Dense classifier on MNIST digits or Fashion-MNIST, and see how it learns.

    Example: [bold]textgen mnist --dataset fashion --show 8[/]

    Compare architectures: [bold]textgen mnist --compare 800 --compare 10,10 --repeats 5[/]
    """
    if show < 0:
        raise ConfigError(f"--show must be zero or a positive integer. Received: show={show}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("repeats", repeats)):
        positive_int(name, value, allow_none=True, option=True)  # before the (slow) data loading
    name = dataset.value if dataset else None
    if evaluate:
        given = [f"--{n}" for n, v in (("hidden", hidden), ("epochs", epochs), ("seed", seed),
                                        ("compare", compare), ("repeats", repeats)) if v not in (None, [])]
        if given:
            raise ConfigError(f"--evaluate scores the saved model without training, so training options do not "
                              f"apply. Received: {', '.join(given)}")
        return _evaluate(checkpoints_dir, data, name, digits, batch_size, show, as_json)

    # Check every value before the (slow) data loading and Keras import.
    if seed is not None:
        mnist_lib.check_seed(seed)
    for sizes in [hidden, *(compare or [])]:
        if sizes is not None:
            mnist_lib.parse_hidden(sizes)
    if show and (compare or repeats):
        raise ConfigError("--show draws the saved model's predictions; it does not apply to --compare/--repeats.")
    dataset_value = mnist_data.load(name or "digits", data)
    if digits:
        dataset_value = mnist_data.select_classes(dataset_value, digits)
    settings = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed)) if v is not None}
    progress = EpochProgress(enabled=not as_json)
    if compare or repeats:
        architectures = compare or [hidden or DEFAULTS["hidden"]]
        result = mnist_lib.compare(dataset_value, architectures, repeats or 1, hooks=progress, **settings)
        if as_json:
            return emit_json({"mode": "compare", **result})
        return _print_comparison(result)

    model, result = mnist_lib.train(dataset_value, hidden=hidden or DEFAULTS["hidden"], hooks=progress, **settings)
    directory = mnist_lib.save(model, result, checkpoints_dir)
    shown = _print_scores(model, dataset_value, result, show, as_json)
    if as_json:
        return emit_json({"mode": "train", **result, "saved": str(directory), "shown": shown})
    out.print(f"Saved in {directory}/ ({mnist_lib.MODEL_FILE}, {mnist_lib.METRICS_FILE}); "
              "score it again with: textgen mnist --evaluate")


def _evaluate(checkpoints_dir, data_path, dataset, digits, batch_size, show, as_json):
    model, info = mnist_lib.load_saved(checkpoints_dir)
    if digits and list(digits) != info["classes"]:
        raise ConfigError(f"The saved model was trained on classes {info['classes']}. Received: digits={list(digits)}")
    data = mnist_lib.data_for_saved(info, data_path, dataset)
    scores = mnist_lib.score(model, data, batch_size or 1024)
    result = {"dataset": data.dataset, "source": data.source, "classes": data.classes,
              "class_names": data.class_names, "test_size": len(data.y_test),
              "test_loss": scores["test_loss"], "test_accuracy": scores["test_accuracy"],
              "confusion_matrix": scores["confusion_matrix"].tolist(),
              "trained": {k: info.get(k) for k in ("hidden", "parameters", "epochs", "batch_size", "seed",
                                                   "test_accuracy", "saved_at")},
              "model": str(mnist_lib.model_dir(checkpoints_dir) / mnist_lib.MODEL_FILE)}
    shown = _print_scores(model, data, result, show, as_json, predicted=scores["predicted"])
    if as_json:
        emit_json({"mode": "evaluate", **result, "shown": shown})


def _print_scores(model, data, result, show, as_json, predicted=None):
    """Human summary (accuracy, confusion matrix, images); returns the shown images' labels."""
    shown = []
    if show and predicted is None:
        predicted = mnist_lib.predict(model, data.x_test[:show]).argmax(axis=1)
    if as_json:
        if show:
            shown = [{"index": i, "predicted": data.class_names[predicted[i]], "true": data.class_names[data.y_test[i]],
                      "correct": bool(predicted[i] == data.y_test[i])} for i in range(min(show, len(data.y_test)))]
        return shown
    out.print(f"[bold]Test accuracy {result['test_accuracy']:.4f}[/] (loss {result['test_loss']:.4f}) on "
              f"{result['test_size']:,} test images of {data.dataset} from {data.source}")
    out.print(confusion_table(result["confusion_matrix"], data.class_names, data.classes))
    if show:
        shown = show_images(data, predicted, show)
    return shown


def _print_comparison(result):
    table = Table(title=f"Test accuracy over {result['repeats']} random 80/20 split(s) of {result['train_size'] + result['test_size']:,} "
                        f"images ({result['dataset']}, {result['epochs']} epoch{'s' * (result['epochs'] != 1)}, "
                        f"batch {result['batch_size']})",
                  title_justify="left")
    for column in ("hidden", "parameters", "mean ± std", "min", "max", "seconds per run"):
        table.add_column(column, justify="left" if column == "hidden" else "right")
    for r in result["results"]:
        table.add_row(",".join(map(str, r["hidden"])), f"{r['parameters']:,}", f"{r['mean']:.4f} ± {r['std']:.4f}",
                      f"{r['min']:.4f}", f"{r['max']:.4f}", f"{r['seconds_per_run']:.1f}")
    out.print(table)


# ----------------------------------------------------------------------------- perceptron


def perceptron(
    iterations: Annotated[int, typer.Option(help="Back-propagation updates over the four training examples.")] = perceptron_lib.DEFAULT_ITERATIONS,
    seed: Annotated[int, typer.Option(help="Seed for the initial weights (1 reproduces the article).")] = perceptron_lib.DEFAULT_SEED,
    as_json: JsonOption = False,
):
    """Train a single sigmoid neuron with three inputs in numpy, and ask it about (1, 0, 0).

    Example: [bold]textgen perceptron --iterations 10000 --seed 1[/]
    """
    result = perceptron_lib.train(iterations, seed)
    if as_json:
        return emit_json(result)
    weights = ", ".join(f"{w:+.4f}" for w in result["initial_weights"])
    out.print(f"Random starting weights: [{weights}]  (seed {seed})")
    table = Table(title=f"After {iterations:,} iterations", title_justify="left")
    for column in ("inputs", "target", "output"):
        table.add_column(column, justify="right")
    for row in result["training"]:
        table.add_row(" ".join(map(str, row["inputs"])), str(row["target"]), f"{row['output']:.4f}")
    out.print(table)
    out.print("Squared error: " + " → ".join(f"{h['squared_error']:.4g} (it. {h['iteration']:,})" for h in result["history"]))
    weights = ", ".join(f"{w:+.4f}" for w in result["weights"])
    out.print(f"Learned weights: [{weights}]")
    out.print(f"New situation (1, 0, 0) → [bold]{result['prediction']:.8f}[/] "
              f"(before training: {result['prediction_before_training']:.4f})")


def register(app: typer.Typer) -> None:
    """Add the MNIST and perceptron commands to `app`."""
    app.command("mnist")(mnist)
    app.command("perceptron")(perceptron)
