"""The one door to the compiled step (textgen/generation/_kernel.c): nothing else in textgen
calls into C.

Every array is checked (dtype, shape, C-contiguity, writeability) before its address
crosses, so a mistake is a Python exception and never a write into memory nobody owns. The
checks are made once, when buffers are bound (`CompiledModel`, `Runner`, `Draw`); a call
per step then passes only counts, which both sides check against the bound capacity. A steered
row's automaton is checked once in kernel_steer.py (`SteerTables`), its state per call.

Which library: setup.py builds the one source as several plain shared libraries,
`_kernel.<variant>.so` (on x86-64 the psABI levels x86-64, x86-64-v3: AVX2 + FMA, and
x86-64-v4: AVX-512; elsewhere one "generic" build). `load()` asks the baseline build which level
the CPU runs (CPUID) and loads the best variant it may; TEXTGEN_KERNEL_VARIANT=<variant> asks
for another (one the CPU lacks is refused). A build whose stamp (TG_SOURCE_HASH) is not the
hash of the _kernel.c beside it is stale and refused. `load()` gives the library or None (not
built, stale, refused, switched off with TEXTGEN_KERNEL=0); `status()` says which and why,
for `textgen info`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
BLOCK, PANEL = 8, 32  # units per block, columns per output panel (the layout of _kernel.c)
MAX_LAYERS = 16
SUFFIX = ".dll" if sys.platform == "win32" else ".so"
# The variants setup.py builds, best first: the x86-64 level (the psABI's) each needs, and what that level adds.
VARIANTS = {"x86-64-v4": (4, "AVX-512"), "x86-64-v3": (3, "AVX2 and FMA"), "x86-64": (1, "SSE2"),
            "generic": (0, "the compiler's default target")}
BASELINE = "x86-64"  # runs on every x86-64 CPU: its tg_cpu_level says which others may run
FORCE = "TEXTGEN_KERNEL_VARIANT"


def switched_off() -> bool:
    """TEXTGEN_KERNEL=0 (or false/no/off): use the numpy step even where the compiled one was built."""
    return os.environ.get("TEXTGEN_KERNEL", "1").strip().lower() in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Status:
    """Which step `sample` and `serve` run, and why."""

    kind: str  # "compiled" | "numpy"
    variant: str | None
    reason: str

    def record(self) -> dict:
        return {"kind": self.kind, "variant": self.variant, "note": f"{self.kind}: {self.reason}"}


def _declare(lib) -> None:
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.tg_model_create.restype = p
    lib.tg_model_create.argtypes = [i, i, i, i, i, p, p, p, p, p]
    lib.tg_model_destroy.argtypes = [p]
    lib.tg_runner_create.restype = p
    lib.tg_runner_create.argtypes = [p, i, i]
    lib.tg_runner_set.restype = i
    lib.tg_runner_set.argtypes = [p, i, p, p, p]
    lib.tg_runner_outputs.argtypes = [p, p, p]
    lib.tg_step.restype = i
    lib.tg_step.argtypes = [p, i]
    lib.tg_runner_destroy.argtypes = [p]
    lib.tg_sample.restype = i
    lib.tg_sample.argtypes = [p, i, i, p, p, i, p, p, p]
    lib.tg_run.restype = i
    lib.tg_run.argtypes = [p, i, i, p, p, i, p, p, p, p, p]


def source_hash(source: Path) -> str:
    """The stamp setup.py builds into every variant (TG_SOURCE_HASH): the first 16 hex digits of
    the SHA-256 of _kernel.c's bytes."""
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def library_path(variant: str, directory: Path = HERE) -> Path:
    return directory / f"_kernel.{variant}{SUFFIX}"


def _open(path: Path, stamp: str):
    """(library, None) or (None, why it cannot be used)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        return None, f"the compiled step at {path.name} could not be loaded: {error}"
    try:
        lib.tg_source_hash.restype = ctypes.c_char_p
        built = lib.tg_source_hash().decode("ascii", "replace")
    except AttributeError:
        built = "none"
    if built != stamp:
        return None, (f"the compiled step at {path.name} is stale: built from a _kernel.c with hash {built}, the "
                      f"source beside it has {stamp} (rebuild: pip install .)")
    return lib, None


def _numpy(reason: str) -> tuple:
    return None, Status("numpy", None, reason)


def _cpu_level(directory: Path, built: list, stamp: str) -> tuple:
    """(the x86-64 level this CPU runs, as the baseline build's CPUID check says; 0 for a
    "generic" build, which needs none), or (0, why the CPU cannot be checked)."""
    if not any(VARIANTS[name][0] for name in built):
        return 0, None
    if BASELINE not in built:
        return 0, f"{library_path(BASELINE, directory).name} is missing, so the CPU cannot be checked (rebuild: pip install .)"
    base, why = _open(library_path(BASELINE, directory), stamp)
    if base is None:
        return 0, why
    base.tg_cpu_level.restype = ctypes.c_int
    return base.tg_cpu_level(), None


def open_library(directory: Path = HERE, variant: str | None = None) -> tuple:
    """(library or None, Status) for the variants built in `directory` from the _kernel.c there:
    the best one this CPU runs, or `variant`. Not cached: `load()` is this for the installed
    package and TEXTGEN_KERNEL_VARIANT."""
    built = [name for name in VARIANTS if library_path(name, directory).is_file()]
    if not built:
        older = [directory / f"_kernel{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
        older = [path.name for path in older if path.is_file()]
        if older:
            return _numpy(f"the compiled step at {older[0]} was built by an older textgen (rebuild: pip install .)")
        return _numpy("the compiled step was not built (no C compiler at install)")
    try:
        stamp = source_hash(directory / "_kernel.c")
    except OSError:
        return _numpy(f"{directory / '_kernel.c'} is missing, so the compiled step's stamp cannot be checked "
                      "(reinstall textgen)")
    level, refusal = _cpu_level(directory, built, stamp)
    if refusal:
        return _numpy(refusal)
    runs = [name for name in built if VARIANTS[name][0] <= level]
    if variant is None:
        if not runs:
            return _numpy(f"none of the compiled step's variants ({', '.join(reversed(built))}) runs on this CPU")
        choice, why = runs[0], f"the best of {', '.join(reversed(built))} for this CPU"
    elif variant not in built:
        return _numpy(f"{FORCE}={variant} is not a variant built here ({', '.join(reversed(built))})")
    elif variant not in runs:
        best = f"; it runs {runs[0]}" if runs else ""
        return _numpy(f"{FORCE}={variant} needs {VARIANTS[variant][1]}, which this CPU lacks{best}")
    else:
        choice, why = variant, f"chosen by {FORCE}"
    lib, problem = _open(library_path(choice, directory), stamp)
    if lib is None:
        return _numpy(problem)
    lib.tg_variant.restype = ctypes.c_char_p
    if lib.tg_variant().decode("ascii", "replace") != choice:
        return _numpy(f"{library_path(choice, directory).name} is not a build of {choice} (rebuild: pip install .)")
    _declare(lib)
    return lib, Status("compiled", choice, f"variant {choice} ({VARIANTS[choice][1]}), {why} "
                                           "(textgen/generation/_kernel.c); TEXTGEN_KERNEL=0 selects numpy's, "
                                           f"{FORCE}=<variant> another")


@functools.cache
def _loaded() -> tuple:
    """(library or None, Status) for this process."""
    if switched_off():
        return _numpy("TEXTGEN_KERNEL=0 selects it")
    return open_library(HERE, os.environ.get(FORCE, "").strip() or None)


def load():
    """The compiled step's library, or None where it cannot be used (see `status`)."""
    return _loaded()[0]


def status() -> Status:
    return _loaded()[1]


def address(array: np.ndarray) -> int:
    """Where an array's data starts."""
    return array.__array_interface__["data"][0]


def check(name: str, array, dtype, shape: tuple, writeable: bool = False) -> np.ndarray:
    """`array` exactly as C will read it: an ndarray of `dtype` and `shape`, C-contiguous
    (and writeable when C writes it); anything else is a ValueError naming the argument."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array. Received: {type(array).__name__}")
    if array.dtype != np.dtype(dtype):
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}. Received: {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}. Received: {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return array


def _count(name: str, value: int, low: int, high: int) -> int:
    if not (isinstance(value, (int, np.integer)) and low <= value <= high):
        raise ValueError(f"{name} must be an integer in [{low}, {high}]. Received: {name}={value!r}")
    return int(value)


class CompiledModel:
    """A model's weights packed for _kernel.c (see its layout comment); owns the C-side model,
    which points into these arrays.

    `table` is the first layer's (vocab, 4*units) input table (embedding @ kernel + bias),
    `recurrent` its recurrent kernel; `stacked[i]` and `bias[i]` the later layers' [kernel;
    recurrent] and bias; all in gate order (input, forget, output, candidate).
    """

    def __init__(self, lib, table, recurrent, stacked, biases, out_kernel, out_bias):
        vocab, width = table.shape
        units = width // 4
        layers = 1 + len(stacked)
        _count("layers", layers, 1, MAX_LAYERS)
        if width != 4 * units or units < 1:
            raise ValueError(f"table must have 4*units columns. Received: shape {table.shape}")
        check("recurrent", recurrent, np.float32, (units, 4 * units))
        for i, (kernel, bias) in enumerate(zip(stacked, biases)):
            check(f"stacked[{i}]", kernel, np.float32, (2 * units, 4 * units))
            check(f"bias[{i}]", bias, np.float32, (4 * units,))
        check("out_kernel", out_kernel, np.float32, (units, vocab))
        check("out_bias", out_bias, np.float32, (vocab,))
        padded = -(-units // BLOCK) * BLOCK
        blocks = padded // BLOCK

        def gates(m: np.ndarray) -> np.ndarray:  # (K, 4u) -> (K, blocks, 32), units padded with zeros
            out = np.zeros((m.shape[0], 4, padded), np.float32)
            out[:, :, :units] = m.reshape(m.shape[0], 4, units)
            return out.reshape(m.shape[0], 4, blocks, BLOCK).transpose(0, 2, 1, 3).reshape(m.shape[0], blocks, 32)

        def rows(m: np.ndarray) -> np.ndarray:  # pad the input dimension (rows) from u to `padded`
            out = np.zeros((padded, m.shape[1]), np.float32)
            out[:units] = m
            return out

        def panels(m: np.ndarray) -> np.ndarray:  # (K, 4u) -> (blocks, K, 32): one contiguous panel per block
            return np.ascontiguousarray(gates(m).transpose(1, 0, 2))

        self.units, self.padded, self.blocks, self.vocab, self.layers = units, padded, blocks, vocab, layers
        self.table = np.ascontiguousarray(gates(np.asarray(table, np.float32)))
        self.weights = [panels(rows(recurrent))]
        self.bias = [np.zeros((blocks, 32), np.float32)]
        for kernel, bias in zip(stacked, biases):
            self.weights.append(panels(np.concatenate([rows(kernel[:units]), rows(kernel[units:])])))
            self.bias.append(np.ascontiguousarray(gates(bias[None, :])[0]))
        self.out_panels = -(-vocab // PANEL)
        out = np.zeros((padded, self.out_panels * PANEL), np.float32)
        out[:units, :vocab] = out_kernel
        self.out = np.ascontiguousarray(out.reshape(padded, self.out_panels, PANEL).transpose(1, 0, 2))
        self.out_bias = np.zeros(self.out_panels * PANEL, np.float32)
        self.out_bias[:vocab] = out_bias
        self._weight_ptrs = (ctypes.c_void_p * layers)(*[address(w) for w in self.weights])
        self._bias_ptrs = (ctypes.c_void_p * layers)(*[address(b) for b in self.bias])
        self.lib = lib
        self.handle = lib.tg_model_create(layers, units, padded, vocab, self.out_panels, address(self.table),
                                          ctypes.addressof(self._weight_ptrs), ctypes.addressof(self._bias_ptrs),
                                          address(self.out), address(self.out_bias))
        if not self.handle:
            raise MemoryError("textgen's compiled step could not be set up")
        weakref.finalize(self, lib.tg_model_destroy, self.handle)


def _destroy_runner(model: CompiledModel, handle: int) -> None:
    model.lib.tg_runner_destroy(handle)


class Runner:
    """A batch of up to `capacity` streams stepped by the compiled model: h, c and the new h of
    every layer (`padded` wide; the padding stays 0), the ids a step reads and the logits it
    writes. `threaded` adds the step's worker thread."""

    def __init__(self, model: CompiledModel, capacity: int, threaded: bool):
        _count("capacity", capacity, 1, 2**31 - 1)
        self.model, self.capacity = model, capacity
        shape = (capacity, model.padded)
        self.h = [np.zeros(shape, np.float32) for _ in range(model.layers)]
        self.c = [np.zeros(shape, np.float32) for _ in range(model.layers)]
        self.fresh = [np.zeros(shape, np.float32) for _ in range(model.layers)]
        self.logits = np.zeros((capacity, model.vocab), np.float32)
        self.ids = np.zeros(capacity, np.int64)
        self.handle = None
        self.start(threaded)

    def start(self, threaded: bool) -> None:
        """(Re)create the C runner over this object's buffers, with or without its worker thread."""
        if self.handle is not None:
            self._finalizer()
        lib = self.model.lib
        handle = lib.tg_runner_create(self.model.handle, self.capacity, int(threaded))
        if not handle:
            raise MemoryError("textgen's compiled step could not be set up")
        for layer, (h, c, fresh) in enumerate(zip(self.h, self.c, self.fresh)):
            if lib.tg_runner_set(handle, layer, address(h), address(c), address(fresh)):
                lib.tg_runner_destroy(handle)
                raise ValueError(f"layer must be in [0, {self.model.layers}). Received: layer={layer}")
        lib.tg_runner_outputs(handle, address(self.logits), address(self.ids))
        self.handle, self.threaded = handle, threaded
        # The finalizer holds the model, so the C model outlives every runner that points at it.
        self._finalizer = weakref.finalize(self, _destroy_runner, self.model, handle)

    def close(self) -> None:
        """Stop the worker thread (the runner can still step, on the caller's thread)."""
        if self.threaded:
            self.start(threaded=False)

    def step(self, rows: int) -> None:
        """Advance rows [0, rows) by `self.ids[:rows]`; the new logits are in `self.logits`."""
        _count("rows", rows, 0, self.capacity)
        if self.model.lib.tg_step(self.handle, rows):
            raise ValueError(f"ids must be in [0, {self.model.vocab}) for {rows} <= {self.capacity} rows")

    def run(self, rows: int, steps: int, draw: Draw, ids_out: np.ndarray, interrupt: np.ndarray,
            steer: np.ndarray | None = None) -> int:
        """Up to `steps` draw-then-step rounds for rows [0, rows), drawing from `draw`'s buffers
        (bound to this runner's logits); `steer`: `steer_rows`' records, moved in place. Returns
        the steps done (see tg_run)."""
        if draw.logits is not self.logits:
            raise ValueError("draw must be bound to the runner's logits")
        _count("rows", rows, 1, min(self.capacity, draw.capacity))
        _count("steps", steps, 1, 2**31 - 1)
        if not (ids_out.dtype == np.int64 and ids_out.flags.c_contiguous and ids_out.flags.writeable
                and ids_out.size >= rows * steps):
            raise ValueError(f"ids_out must be a writeable contiguous int64 array of at least {rows * steps} ids")
        check("interrupt", interrupt, np.int32, (1,))
        if steer is not None:
            check("steer", steer, STEER, (rows,), writeable=True)  # made by steer_rows
        done = self.model.lib.tg_run(self.handle, rows, steps, draw.pointers[1], draw.pointers[2], draw.block,
                                     draw.pointers[3], draw.pointers[4], address(ids_out), address(interrupt),
                                     None if steer is None else address(steer))
        if done < 1:
            raise MemoryError("The compiled sampling step failed (out of memory, or a steered row left its automaton).")
        return done


# _kernel.c's Steer: a row's automaton (its arrays' addresses, kernel_steer.SteerTables; 0: not steered), where it stands.
STEER = np.dtype([("table", np.uint64), ("distance", np.uint64), ("nearest", np.uint64), ("accepting", np.uint64),
                  ("states", np.int64), ("end", np.int64), ("state", np.int64), ("left", np.int64),
                  ("finished", np.int64)])


class Draw:
    """The compiled draw (tg_sample) bound to a batch's buffers: per row its logits, temperature,
    a block of `block` uniforms and how many of them were used; it writes the uniform it used
    and the id it drew."""

    def __init__(self, lib, logits, temps, uniforms, used, drawn, ids):
        capacity, vocab = logits.shape
        block = uniforms.shape[1] if uniforms.ndim == 2 else 0
        check("logits", logits, np.float32, (capacity, vocab))
        check("temps", temps, np.float64, (capacity,))
        check("uniforms", uniforms, np.float64, (capacity, block))
        check("used", used, np.int64, (capacity,), writeable=True)
        check("drawn", drawn, np.float64, (capacity,), writeable=True)
        check("ids", ids, np.int64, (capacity,), writeable=True)
        _count("block", block, 1, 2**31 - 1)
        self.lib, self.capacity, self.vocab, self.block = lib, capacity, vocab, block
        self.logits = logits
        self._arrays = (logits, temps, uniforms, used, drawn, ids)  # kept alive while bound
        self.pointers = [address(a) for a in self._arrays]

    def __call__(self, rows: int) -> int:
        """Draw an id for rows [0, rows); returns how many rows used their last uniform."""
        _count("rows", rows, 0, self.capacity)
        logits, temps, uniforms, used, drawn, ids = self.pointers
        empty = self.lib.tg_sample(logits, rows, self.vocab, temps, uniforms, self.block, used, drawn, ids)
        if empty < 0:
            raise MemoryError("The compiled draw could not allocate its buffer.")
        return empty
