"""A run's weights as plain arrays, in the step contract's layout, and their quantised forms.

`ModelArrays` holds the arrays under their meaning (embedding, per-layer kernel / recurrent
kernel / bias in Keras' gate order input, forget, cell, output; the logits layer) plus what
travels with every export (vocabulary, start id, run name, textgen version). Every exporter
builds its graph from these arrays; none traces a TensorFlow model.

Quantisation (for the page): float16 stores every matrix as IEEE half floats; int8 stores
every matrix as int8 with one float32 scale per row (scale = max |row| / 127). Biases stay
float32 in every precision (they are a few thousand numbers). `dequantised()` gives the
arrays a quantised file really holds, so the reference engine can be checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from textgen.errors import ConfigError

PRECISIONS = ("float32", "float16", "int8")


@dataclass
class ModelArrays:
    """One run's arrays (float32) and the metadata every export carries."""

    embedding: np.ndarray                       # (vocab, embedding_dim)
    kernels: list = field(default_factory=list)  # layer i: (inputs_i, 4 * units), gates i, f, c, o
    recurrents: list = field(default_factory=list)  # layer i: (units, 4 * units)
    biases: list = field(default_factory=list)  # layer i: (4 * units,)
    out_kernel: np.ndarray = None               # (units, vocab)
    out_bias: np.ndarray = None                 # (vocab,)
    vocab: list = field(default_factory=list)
    start_id: int = 0
    run: str = ""
    version: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.kernels)

    @property
    def units(self) -> int:
        return int(self.recurrents[0].shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.out_bias.shape[0])

    def metadata(self) -> dict:
        """What travels with every exported file (ONNX metadata_props, SavedModel asset, ...)."""
        return {"vocab": list(self.vocab), "start_id": int(self.start_id), "run": self.run,
                "textgen_version": self.version, "num_layers": self.num_layers, "units": self.units}

    def keras_weights(self) -> dict:
        """The arrays under the run's Keras variable paths (what the numpy engine reads)."""
        weights = {"embedding/embeddings": self.embedding, "logits/kernel": self.out_kernel,
                   "logits/bias": self.out_bias}
        for i in range(self.num_layers):
            prefix = f"lstm_{i}/lstm/lstm_cell/"
            weights[prefix + "kernel"] = self.kernels[i]
            weights[prefix + "recurrent_kernel"] = self.recurrents[i]
            weights[prefix + "bias"] = self.biases[i]
        return weights

    def first_layer_table(self) -> np.ndarray:
        """(vocab, 4*units) float32: embedding @ kernel_0 + bias_0, folded in float64 as the
        numpy engine folds it, so layer 0's input is one row lookup."""
        table = self.embedding.astype(np.float64) @ self.kernels[0].astype(np.float64)
        return (table + self.biases[0].astype(np.float64)).astype(np.float32)

    def matrices(self) -> dict:
        """Name -> matrix for every array that quantisation touches (2-D), in a fixed order."""
        named = {"embedding": self.embedding}
        for i in range(self.num_layers):
            named[f"kernel_{i}"] = self.kernels[i]
            named[f"recurrent_{i}"] = self.recurrents[i]
        named["out_kernel"] = self.out_kernel
        return named

    def with_matrices(self, named: dict) -> ModelArrays:
        return replace(self, embedding=named["embedding"],
                       kernels=[named[f"kernel_{i}"] for i in range(self.num_layers)],
                       recurrents=[named[f"recurrent_{i}"] for i in range(self.num_layers)],
                       out_kernel=named["out_kernel"])


def from_weights(weights: dict, info: dict, run: str) -> ModelArrays:
    """ModelArrays from a checkpoint's `weights.npz` arrays and the run's `run.json`."""
    from textgen import __version__
    from textgen.errors import CheckpointError
    from textgen.generation.loading import start_id

    def get(name):
        if name not in weights:
            raise CheckpointError(f"Checkpoint weights lack {name!r}; was it written by textgen?")
        return np.asarray(weights[name], dtype=np.float32)

    num_layers = int(info["model"]["num_layers"])
    prefixes = [f"lstm_{i}/lstm/lstm_cell/" for i in range(num_layers)]
    vocab = list(info["vocab"])
    return ModelArrays(
        embedding=get("embedding/embeddings"),
        kernels=[get(p + "kernel") for p in prefixes],
        recurrents=[get(p + "recurrent_kernel") for p in prefixes],
        biases=[get(p + "bias") for p in prefixes],
        out_kernel=get("logits/kernel"), out_bias=get("logits/bias"),
        vocab=vocab, start_id=start_id(vocab),
        run=run, version=__version__,
    )


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}")
    return precision


@dataclass
class Quantised:
    """One matrix as stored: `data` (float32, float16 or int8) and, for int8, a scale per row."""

    data: np.ndarray
    scales: np.ndarray | None = None

    def dequantised(self) -> np.ndarray:
        if self.scales is None:
            return self.data.astype(np.float32)
        return (self.data.astype(np.float32) * self.scales[:, None]).astype(np.float32)


def quantise_matrix(matrix: np.ndarray, precision: str) -> Quantised:
    matrix = np.asarray(matrix, dtype=np.float32)
    if precision == "float32":
        return Quantised(matrix)
    if precision == "float16":
        return Quantised(matrix.astype(np.float16))
    peak = np.abs(matrix).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    data = np.clip(np.rint(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return Quantised(data, scales)


def quantise(arrays: ModelArrays, precision: str) -> tuple[dict, ModelArrays]:
    """(name -> Quantised for every matrix, the ModelArrays those stored values stand for)."""
    check_precision(precision)
    stored = {name: quantise_matrix(m, precision) for name, m in arrays.matrices().items()}
    return stored, arrays.with_matrices({name: q.dequantised() for name, q in stored.items()})


def reference_engine(arrays: ModelArrays):
    """textgen's numpy engine over exactly these arrays (e.g. dequantised ones)."""
    from textgen.generation.engine import LSTMEngine

    return LSTMEngine(arrays.keras_weights(), arrays.num_layers, threads=1)


def load(run_dir: Path, which: str = "latest", use_previous: bool = False):
    """(run info, checkpoint, ModelArrays) of a run, checked as `textgen sample` checks it."""
    from textgen import checkpoints
    from textgen.generation.loading import load_run

    run_dir = Path(run_dir)
    info, ckpt, _engine = load_run(run_dir, which, use_previous=use_previous, threads=1)
    arrays = from_weights(checkpoints.load_arrays(ckpt.path), info, run_dir.name)
    return info, ckpt, arrays
