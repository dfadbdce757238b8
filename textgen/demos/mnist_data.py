"""MNIST-style image data: read Keras `mnist.npz` files, IDX files (gzipped or not), `keras.datasets`
or Debian's `dataset-fashion-mnist`; check them; pick classes; scale and one-hot encode.

Images stay uint8 until training, then become float32 in [0, 1]. Every problem with a file is a
`DataError` that names the file, what was expected and what was found.
"""

from __future__ import annotations

import contextlib
import gzip
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from textgen.errors import ConfigError, DataError

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGIT_NAMES = [str(d) for d in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DATASETS = {"digits": DIGIT_NAMES, "fashion": FASHION_NAMES}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {  # split → (images, labels) base names, as distributed by LeCun and Zalando
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes (third magic byte) → big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Data:
    """Images (N, H, W) as stored (uint8 or float in [0, 1]) and integer labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    dataset: str
    source: str
    class_names: list
    classes: list  # original label of each class index (all ten, or a --digits subset)


# ----------------------------------------------------------------------------- reading files


def _open_maybe_gzip(path: Path) -> bytes:
    """The bytes of `path`, gunzipped when the file starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{str(path)!r} is a damaged or truncated gzip file ({e}).") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX array (gzipped or not); `ndim` is 3 for images and 1 for labels.

    The magic number is 0x00 0x00, a type code and the number of dimensions (2051 for
    uint8 images, 2049 for uint8 labels); then one big-endian uint32 per dimension; then
    the data. A wrong magic, a short file or trailing bytes is an error.
    """
    path = Path(path)
    data = _open_maybe_gzip(path)
    expected = (0x08 << 8) | ndim
    if len(data) < 4:
        raise DataError(f"{str(path)!r} is too short to be an IDX file (no magic number). "
                        f"Received: {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] != ndim:
        raise DataError(f"{str(path)!r} is not an IDX file with {ndim} dimension(s): expected magic "
                        f"number {expected} (0x{expected:08x}). Received: {magic} (0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{str(path)!r} is truncated inside its header: expected {header} bytes. "
                        f"Received: {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    needed = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < needed:
        raise DataError(f"{str(path)!r} is truncated: its header announces shape {shape}, which needs "
                        f"{needed:,} bytes. Received: {len(data):,} bytes")
    if len(data) > needed:
        raise DataError(f"{str(path)!r} has {len(data) - needed:,} bytes after the data its header "
                        f"announces (shape {shape}); the file is not a valid IDX file.")
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, base: str) -> Path:
    for name in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{str(directory)!r} has no {base} (or {base}.gz). An IDX directory needs "
                    f"{', '.join(n for pair in IDX_FILES.values() for n in pair)}.")


def load_idx_dir(directory: Path) -> tuple:
    """(x_train, y_train, x_test, y_test) from a directory holding the four IDX files."""
    directory = Path(directory)
    arrays = []
    for split in ("train", "test"):
        images_name, labels_name = IDX_FILES[split]
        arrays.append(read_idx(_find_idx(directory, images_name), 3))
        arrays.append(read_idx(_find_idx(directory, labels_name), 1))
    return tuple(arrays)


def load_npz(path: Path) -> tuple:
    """(x_train, y_train, x_test, y_test) from a Keras-style `mnist.npz`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{str(path)!r} lacks {', '.join(missing)}: a Keras-style mnist.npz holds "
                                f"{', '.join(NPZ_KEYS)}. Received keys: {', '.join(npz.files) or 'none'}")
            return tuple(npz[k] for k in NPZ_KEYS)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(f"{str(path)!r} is not a readable .npz file ({e}).") from None


def check_arrays(x_train, y_train, x_test, y_test, source: str, num_classes: int = 10) -> tuple:
    """Validate shapes, counts and value ranges; labels come back as int64."""
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim != 3:
            raise DataError(f"{name} in {source} must have shape (count, height, width). "
                            f"Received: shape {x.shape}")
        if x.shape[0] == 0:
            raise DataError(f"{name} in {source} holds no images. Received: shape {x.shape}")
        if np.issubdtype(x.dtype, np.integer):
            if x.min() < 0 or x.max() > 255:
                raise DataError(f"{name} in {source} must hold pixel values 0..255. "
                                f"Received: values from {x.min()} to {x.max()}")
        elif np.issubdtype(x.dtype, np.floating):
            if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
                raise DataError(f"{name} in {source} holds floats, which must lie in [0, 1]. "
                                f"Received: values from {x.min()} to {x.max()}")
        else:
            raise DataError(f"{name} in {source} must hold numbers. Received: dtype {x.dtype}")
    for name, y, x in (("y_train", y_train, x_train), ("y_test", y_test, x_test)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name} in {source} must be a 1-D array of integer labels. "
                            f"Received: shape {y.shape}, dtype {y.dtype}")
        if len(y) != len(x):
            raise DataError(f"{source}: {len(x):,} images but {len(y):,} labels in {name}; "
                            "they must be the same count.")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{name} in {source} must hold labels 0..{num_classes - 1}. "
                            f"Received: labels from {y.min()} to {y.max()}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{source}: training images are {x_train.shape[1]}×{x_train.shape[2]} but test "
                        f"images are {x_test.shape[1]}×{x_test.shape[2]}; they must agree.")
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _from_keras(dataset: str) -> tuple:
    from textgen.backend import quiet_import_keras

    keras = quiet_import_keras()
    module = keras.datasets.mnist if dataset == "digits" else keras.datasets.fashion_mnist
    try:  # Keras reports the download on stdout, which belongs to --json: send it to stderr
        with contextlib.redirect_stdout(sys.stderr):
            (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError, ...)
        hint = " or install Debian's dataset-fashion-mnist package" if dataset == "fashion" else ""
        raise DataError(f"Could not download the {dataset} data set through keras.datasets "
                        f"({' '.join(str(e).split())[:200]}). Give a local copy with --data PATH (a mnist.npz "
                        f"or a directory of the four IDX files){hint}.") from None
    return x_train, y_train, x_test, y_test


def load(dataset: str = "digits", path: str | Path | None = None) -> Data:
    """The data set `dataset` ('digits' or 'fashion'), read from `path` when given."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}. Received: dataset={dataset!r}")
    if path is not None:
        path = Path(path)
        if path.is_dir():
            arrays, source = load_idx_dir(path), str(path)
        elif path.is_file():
            with open(path, "rb") as f:
                is_zip = f.read(4) == b"PK\x03\x04"
            if not is_zip:
                raise DataError(f"--data must be a Keras-style .npz file or a directory of IDX files. "
                                f"Received: {str(path)!r} (not an .npz archive)")
            arrays, source = load_npz(path), str(path)
        else:
            raise DataError(f"--data path does not exist. Received: {str(path)!r}")
    elif dataset == "fashion" and DEBIAN_FASHION_DIR.is_dir():
        arrays, source = load_idx_dir(DEBIAN_FASHION_DIR), str(DEBIAN_FASHION_DIR)
    else:
        arrays, source = _from_keras(dataset), f"keras.datasets.{'mnist' if dataset == 'digits' else 'fashion_mnist'}"
    arrays = check_arrays(*arrays, source=repr(source))
    return Data(*arrays, dataset=dataset, source=source, class_names=list(DATASETS[dataset]),
                classes=list(range(10)))


def select_classes(data: Data, classes: Sequence[int]) -> Data:
    """Keep only the given labels, renumbered 0..k-1 in the order given (e.g. 3, 7 → 0, 1)."""
    classes = [int(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"--digits needs at least two different classes. Received: digits={classes}")
    bad = [c for c in classes if c not in data.classes]
    if bad:
        raise ConfigError(f"--digits must be labels 0..9. Received: digits={classes}")
    lookup = np.full(10, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))

    def pick(x, y):
        keep = np.isin(y, classes)
        return x[keep], lookup[y[keep]]

    x_train, y_train = pick(data.x_train, data.y_train)
    x_test, y_test = pick(data.x_test, data.y_test)
    if len(y_train) == 0 or len(y_test) == 0:
        raise DataError(f"{data.source!r} has no training or no test images of classes {classes}.")
    names = [DATASETS[data.dataset][c] for c in classes]
    return replace(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   class_names=names, classes=classes)


def scale(x: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] (uint8 / 255; floats are already in range)."""
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(255)
    return x.astype(np.float32)


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[y]
