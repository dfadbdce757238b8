"""Training and sampling chars/s of the size presets, on whatever backend and device Keras sees.

Usage:
    python benchmarks/gpu.py [--sizes small,medium,large] [--steps 10] [--mixed-precision] [--jit/--no-jit]
    KERAS_BACKEND=jax python benchmarks/gpu.py --json

Training: `train_on_batch` on (batch, seq_len) blocks, compiled as `textgen train` compiles
(Adam with global clipnorm, sparse cross-entropy from logits, jit_compile "auto" unless
--jit/--no-jit); median step time after `--warmup` steps. The ids are random over a
65-character vocabulary: throughput does not depend on the text.
Sampling: textgen's numpy sampler (what `textgen sample` runs, on the CPU whatever the
backend), for 1 stream and for 64 streams.
Each line says the device, backend, precision, whether XLA compiled the step and whether
the LSTM layers take the fused cuDNN kernel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from textgen import devices
from textgen.backend import quiet_import_keras
from textgen.config import PRESETS, ModelConfig
from textgen.errors import ConfigError
from textgen.generation.engine import LSTMEngine
from textgen.generation.writers import generate
from textgen.training.model import build_training_model
from textgen.training.variables import trainable_arrays

keras = quiet_import_keras()
VOCAB = 65


def device_name() -> str:
    listed = devices.list_devices()
    gpus = [d for d in listed if d["type"] == "GPU"]
    if gpus:
        return f"{len(gpus)}x {gpus[0]['name']}"
    return f"CPU {listed[0]['name']} ({listed[0]['cores']} cores)"


def train_rate(model, batch: int, seq_len: int, steps: int, warmup: int, rng) -> tuple:
    """(median chars/s, first step seconds incl. compilation) of train_on_batch."""
    def block():
        ids = rng.integers(0, VOCAB, size=(batch, seq_len + 1), dtype=np.int32)
        return ids[:, :-1], ids[:, 1:]

    start = time.perf_counter()
    model.train_on_batch(*block())
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        model.train_on_batch(*block())
    times = []
    for _ in range(steps):
        x, y = block()
        start = time.perf_counter()
        logs = model.train_on_batch(x, y, return_dict=True)
        float(logs["loss"])  # wait for the device
        times.append(time.perf_counter() - start)
    return batch * seq_len / statistics.median(times), first


def sample_rate(engine, streams: int, length: int) -> float:
    start = time.perf_counter()
    for _ in generate(engine, [], length, temperature=1.0, num_samples=streams, seed=0):
        pass
    return streams * length / (time.perf_counter() - start)


def measure(size: str, args, precision: str, rng) -> dict:
    config = ModelConfig(vocab_size=VOCAB, **PRESETS[size])
    keras.utils.set_random_seed(0)
    model = build_training_model(config, batch_size=args.batch_size, seq_len=args.seq_len, learning_rate=2e-3,
                                 precision=precision, jit=args.jit)
    report = devices.cudnn.cudnn_report(model)
    train, first = train_rate(model, args.batch_size, args.seq_len, args.steps, args.warmup, rng)
    engine = LSTMEngine(trainable_arrays(model), config.num_layers)
    return {
        "size": size, "layers": config.num_layers, "units": config.units, "parameters": config.num_parameters(),
        "batch": args.batch_size, "seq_len": args.seq_len, "precision": precision,
        "jit": bool(model.jit_compile),
        "cudnn": all(r["eligible"] for r in report) and devices.cudnn.cudnn_available(),
        "train_chars_per_s": round(train), "first_step_s": round(first, 2),
        "sample_chars_per_s_1": round(sample_rate(engine, 1, args.sample_chars)),
        "sample_chars_per_s_64": round(sample_rate(engine, 64, args.sample_chars)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(PRESETS), help="comma-separated presets")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per preset")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--sample-chars", type=int, default=300, help="characters per stream when sampling")
    ap.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU only)")
    ap.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                    help="XLA on/off (default: Keras' auto choice)")
    ap.add_argument("--json", action="store_true", help="one JSON object per preset")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in PRESETS]
    if unknown:
        ap.error(f"unknown sizes {unknown}; presets are {list(PRESETS)}")
    if args.mixed_precision:
        try:
            devices.precision.check_mixed_precision()
        except ConfigError as error:
            raise SystemExit(f"Error: {error}") from None
    precision = "mixed_float16" if args.mixed_precision else "float32"
    versions = devices.versions()
    header = {"device": device_name(), "backend": versions["backend"], "keras": versions["keras"],
              "framework": versions.get(versions["backend"]) or versions.get("jaxlib")}
    rng = np.random.default_rng(0)
    if not args.json:
        print(f"device: {header['device']} · backend: {header['backend']} {header['framework']} · "
              f"keras {header['keras']} · batch {args.batch_size} × seq {args.seq_len}")
        print(f"{'size':<8}{'model':>8}{'params':>11}{'precision':>15}{'jit':>5}{'cuDNN':>7}"
              f"{'train c/s':>11}{'1st step s':>11}{'sample 1':>10}{'sample 64':>11}")
    for size in sizes:
        r = measure(size, args, precision, rng)
        if args.json:
            print(json.dumps({**header, **r}), flush=True)
        else:
            print(f"{r['size']:<8}{r['layers']:>4}x{r['units']:<3}{r['parameters']:>11,}{r['precision']:>15}"
                  f"{'yes' if r['jit'] else 'no':>5}{'yes' if r['cudnn'] else 'no':>7}"
                  f"{r['train_chars_per_s']:>11,}{r['first_step_s']:>11}"
                  f"{r['sample_chars_per_s_1']:>10,}{r['sample_chars_per_s_64']:>11,}", flush=True)


if __name__ == "__main__":
    main()
