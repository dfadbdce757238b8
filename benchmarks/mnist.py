"""Fashion-MNIST accuracy and time per epoch for the two networks of the tutorials.

Reads Fashion-MNIST offline from Debian's dataset-fashion-mnist package
(`apt-get install dataset-fashion-mnist`, files in /usr/share/datasets/fashion-mnist/)
and trains, with the library's own `textgen.demos.mnist.train`:

  * the default network: Flatten → Dense(128, relu) → Dense(10, softmax), batch 32, 5 epochs
    (target: test accuracy >= 0.87);
  * the 800-unit network: Dense(800, relu), batch 200, a few epochs.

Usage: python benchmarks/mnist.py [--epochs-800 N] [--seed S]
Prints one Markdown table (test accuracy after each run, seconds per epoch of training,
seconds per test evaluation) and exits non-zero if the default network misses the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from textgen.demos import mnist, mnist_data
from textgen.files import package_version

TARGET = 0.87


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-128", type=int, default=5)
    parser.add_argument("--epochs-800", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not mnist_data.DEBIAN_FASHION_DIR.is_dir():
        print(f"{mnist_data.DEBIAN_FASHION_DIR} not found: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    started = time.perf_counter()
    data = mnist_data.load("fashion")
    load_seconds = time.perf_counter() - started
    keras = mnist._keras()
    print(f"Fashion-MNIST from {data.source}: {len(data.y_train):,} train / {len(data.y_test):,} test images "
          f"(loaded in {load_seconds:.1f}s)")
    print(f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
          f"Keras {keras.__version__} ({keras.backend.backend()} {package_version('tensorflow')}), seed {args.seed}")
    print()

    class Progress:
        def on_epoch_end(self, record):
            print(f"  epoch {record['epoch']}: loss {record['loss']:.4f}, accuracy {record['accuracy']:.4f}, "
                  f"test accuracy {record['test_accuracy']:.4f} ({record['seconds']:.1f}s)", file=sys.stderr, flush=True)

    rows = []
    for hidden, batch_size, epochs in ((128, 32, args.epochs_128), (800, 200, args.epochs_800)):
        print(f"hidden {hidden}, batch {batch_size}, {epochs} epochs", file=sys.stderr, flush=True)
        _, result = mnist.train(data, hidden=str(hidden), epochs=epochs, batch_size=batch_size,
                                seed=args.seed, hooks=Progress())
        history = result["history"]
        # The first epoch includes tracing the training step; report it apart from the rest.
        later = [r["seconds"] for r in history[1:]] or [history[0]["seconds"]]
        rows.append((hidden, result["parameters"], batch_size, epochs, result["test_accuracy"],
                     " ".join(f"{r['test_accuracy']:.4f}" for r in history), history[0]["seconds"],
                     sum(later) / len(later), sum(r["eval_seconds"] for r in history) / len(history)))

    print("| hidden | parameters | batch | epochs | test accuracy | test accuracy per epoch "
          "| s, epoch 1 | s per epoch (2+) | s per test pass |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for hidden, params, batch, epochs, accuracy, per_epoch, first, mean, evaluation in rows:
        print(f"| {hidden} | {params:,} | {batch} | {epochs} | {accuracy:.4f} | {per_epoch} "
              f"| {first:.1f} | {mean:.1f} | {evaluation:.2f} |")
    ok = rows[0][4] >= TARGET
    print()
    print(f"Default network test accuracy {rows[0][4]:.4f}: {'meets' if ok else 'MISSES'} the target >= {TARGET}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
