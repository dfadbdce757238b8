"""Scale check (issue 4, "Corpora far larger than RAM"): prepare and train on a 1 GB corpus.

Usage: python benchmarks/scale.py [--size-mb 1024] [--out /tmp/textgen-scale/big.txt]
                                  [--steps 200] [--pipeline-steps 60] [--keep] [--profile auto]

1. Generates a UTF-8 text file of --size-mb MiB, streamed to disk block by block: the lines
   of the Shakespeare corpus, shuffled, about a third of them perturbed (upper/lower case,
   reversed word order, two adjacent letters swapped) and 12% transliterated to Cyrillic.
2. Times `python -m textgen prepare BIG --json` in a subprocess: MB/s and peak RSS
   (`os.wait4` ru_maxrss). The file is in the page cache (it was just written and read);
   the disk's own cold sequential read speed is measured separately, for reference.
3. Trains the default model for --steps steps through `textgen.training.opening.open_run` in a worker
   subprocess, which stops the trainer from `TrainingCallbacks.on_step`; reports the time
   from process start to the first completed step (and how much of it is importing
   TensorFlow), the peak RSS next to a TensorFlow baseline process (import, build and
   compile the same model, one step on a tiny array), and chars/s.
4. Input pipeline: the same model's chars/s with batches from `StreamBatches` over the
   memmap vs the same batches pre-loaded into numpy arrays, steps measured alternately;
   once with ids.bin in the page cache and once after dropping it (POSIX_FADV_DONTNEED).
5. Prints one table with every figure and pass/fail per target. If prepare misses its target
   (or with --profile always) it also times each stage of prepare on one 16 MB chunk.

The generated file and its prepared cache entry are deleted at the end unless --keep.
Run it on an otherwise idle machine: every figure here is a wall-clock time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import TEXTGEN, environment, run_measured, training_model

ROOT = Path("/tmp/textgen-scale")
MB = 1024 * 1024

TARGET_PREPARE_MBS = 50.0
TARGET_FIRST_STEP_S = 10.0
TARGET_TRAIN_RSS_MB = 1536.0
TARGET_PIPELINE_RATIO = 0.95

# ----------------------------------------------------------------------------- the corpus

_LOWER = {"a": "а", "b": "б", "c": "ц", "d": "д", "e": "е", "f": "ф", "g": "г", "h": "х",
          "i": "и", "j": "й", "k": "к", "l": "л", "m": "м", "n": "н", "o": "о", "p": "п",
          "q": "я", "r": "р", "s": "с", "t": "т", "u": "у", "v": "в", "w": "ш", "x": "ж",
          "y": "ы", "z": "з"}
CYRILLIC = str.maketrans({**_LOWER, **{k.upper(): v.upper() for k, v in _LOWER.items()},
                          "'": "ь"})
#            original cyrillic upper lower reversed swapped
VARIANT_P = (0.66, 0.12, 0.04, 0.06, 0.06, 0.06)


def _swap_adjacent(lines: list[str], rng: np.random.Generator) -> list[str]:
    out = []
    positions = rng.random(len(lines))
    for line, u in zip(lines, positions):
        if len(line) < 2:
            out.append(line)
            continue
        i = int(u * (len(line) - 1))
        out.append(line[:i] + line[i + 1] + line[i] + line[i + 2:])
    return out


def generate(path: Path, size_mb: int, seed: int = 0) -> dict:
    """Write about `size_mb` MiB of perturbed, shuffled Shakespeare (with Cyrillic) to `path`."""
    from textgen.catalog import resolve

    source, _ = resolve("shakespeare")
    lines = source.read_text(encoding="utf-8").split("\n")
    rng = np.random.default_rng(seed)
    variants = [lines, [line.translate(CYRILLIC) for line in lines], [line.upper() for line in lines],
                [line.lower() for line in lines], [" ".join(reversed(line.split(" "))) for line in lines],
                _swap_adjacent(lines, rng)]
    target = size_mb * MB
    path.parent.mkdir(parents=True, exist_ok=True)
    written, passes = 0, 0
    start = time.perf_counter()
    with open(path, "wb") as f:
        while written < target:
            if passes and passes % 16 == 0:
                variants[5] = _swap_adjacent(lines, rng)  # fresh typos now and then
            order = rng.permutation(len(lines)).tolist()
            which = rng.choice(len(variants), size=len(lines), p=VARIANT_P).tolist()
            block = ("\n".join([variants[v][i] for v, i in zip(which, order)]) + "\n").encode("utf-8")
            if written + len(block) > target:  # end on a line boundary at or below the target
                block = block[: block.rfind(b"\n", 0, target - written) + 1]
                if not block:
                    break
            f.write(block)
            written += len(block)
            passes += 1
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": written, "seconds": time.perf_counter() - start, "passes": passes}


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's clean cached pages (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_read_mbs(path: Path) -> float:
    """Sequential read speed of `path` straight after dropping it from the page cache."""
    drop_page_cache(path)
    start = time.perf_counter()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(16 * MB):
            size += len(chunk)
    return size / MB / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- subprocesses


def worker(kind: str, corpus: Path, result: Path, **options) -> list[str]:
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--out", str(corpus),
            "--result", str(result)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def worker_baseline(a) -> dict:
    """TensorFlow's own footprint: import, build + compile the default model, one tiny step."""
    t0 = time.time()
    from textgen.backend import quiet_import_keras

    quiet_import_keras()
    t_import = time.time()
    vocab = json.loads(next((ROOT / "cache").glob(f"{a.out.stem[:40]}-*/meta.json")).read_text())["vocab"]
    model = training_model(len(vocab))
    x = np.zeros(tuple(model.inputs[0].shape), dtype=np.int32)
    model.train_on_batch(x, x)
    return {"import_s": t_import - t0, "total_s": time.time() - t0, "vocab_size": len(vocab)}


def worker_train(a) -> dict:
    """open_run + Trainer.run on the big corpus, stopped after `a.steps` steps."""
    t_spawn = float(os.environ["SCALE_T0"])
    t_main = time.time()
    import textgen.training.opening as train  # imports TensorFlow / Keras
    from textgen.corpus import prepare

    t_import = time.time()
    corpus = prepare(a.out)  # a cache hit: `prepare` ran before this process
    t_prepared = time.time()
    step_times: list[float] = []

    class StopAfter(train.TrainingCallbacks):
        trainer = None

        def on_step(self, step, logs):
            step_times.append(time.time())
            if step >= a.steps:
                self.trainer.stop_reason = "steps"

    callbacks = StopAfter()
    run_name = f"scale-{os.getpid()}"
    trainer = train.open_run(corpus, a.out.name, ROOT / "checkpoints", run_name, model_options={},
                             train_options={"epochs": 1, "eval_chars": a.eval_chars},
                             resume=False, callbacks=callbacks)
    callbacks.trainer = trainer
    t_opened = time.time()
    summary = trainer.run()
    t_end = time.time()
    gaps = np.diff(step_times)
    steady = gaps[5:] if len(gaps) > 10 else gaps
    return {
        "steps": summary["step"], "stopped": summary["stopped"],
        "python_start_s": t_main - t_spawn, "import_s": t_import - t_main,
        "prepare_cached_s": t_prepared - t_import, "open_run_s": t_opened - t_prepared,
        "first_step_s": step_times[0] - t_opened, "start_to_first_step_s": step_times[0] - t_spawn,
        "chars_per_step": trainer.batches.chars_per_step,
        "trainer_chars_per_s": summary["chars_per_second"],
        "steady_chars_per_s": trainer.batches.chars_per_step / float(np.median(steady)),
        "final_eval_and_save_s": t_end - step_times[-1], "val_loss": summary["val_loss"],
        "run_dir": summary["run_dir"], "total_s": t_end - t_spawn,
        "model": trainer.model_config.to_dict(), "batch_size": trainer.config.batch_size,
        "seq_len": trainer.config.seq_len,
    }


def worker_pipeline(a) -> dict:
    """chars/s with batches read from the memmap vs the same batches already in memory."""
    from textgen.config import TrainConfig
    from textgen.corpus import prepare, split_point
    from textgen.training.batches import StreamBatches

    cfg = TrainConfig()
    corpus = prepare(a.out)
    split = split_point(corpus.num_chars, cfg.val_fraction)
    stream = StreamBatches(corpus.ids(), 0, split, cfg.batch_size, cfg.seq_len, seed=cfg.seed)
    warm, n = 3, a.pipeline_steps
    # The in-memory copies are read through a second, separate memory map, so the training
    # map still takes its own page faults, as it does in a real run.
    shadow_ids = np.memmap(corpus.ids_path, dtype=corpus.dtype, mode="r", shape=(corpus.num_chars,))
    shadow = StreamBatches(shadow_ids, 0, split, cfg.batch_size, cfg.seq_len, seed=cfg.seed)
    memory = [tuple(np.array(t) for t in shadow.batch(0, k)) for k in range(2 * (warm + n))]
    shadow_ids._mmap.close()
    del shadow, shadow_ids
    model = training_model(len(corpus.vocab))
    rounds = {}
    for name, first in (("warm", 0), ("cold", warm + n)):
        if name == "cold":  # steps never touched by `stream`; drop ids.bin from the page cache
            drop_page_cache(corpus.ids_path)
        for k in range(first, first + warm):
            model.train_on_batch(*stream.batch(0, k))
            model.train_on_batch(*memory[k])
        t_stream, t_memory, t_fetch = [], [], []
        for i, k in enumerate(range(first + warm, first + warm + n)):
            for source in (("stream", "memory") if i % 2 == 0 else ("memory", "stream")):
                if source == "stream":
                    t = time.perf_counter()
                    x, y = stream.batch(0, k)
                    t_fetch.append(time.perf_counter() - t)
                    model.train_on_batch(x, y)
                    t_stream.append(time.perf_counter() - t)
                else:
                    x, y = memory[k]
                    t = time.perf_counter()
                    model.train_on_batch(x, y)
                    t_memory.append(time.perf_counter() - t)
        chars = stream.chars_per_step * n
        rounds[name] = {"stream_chars_per_s": chars / sum(t_stream),
                        "memory_chars_per_s": chars / sum(t_memory),
                        "ratio": sum(t_memory) / sum(t_stream),
                        "median_ratio": statistics.median(t_memory) / statistics.median(t_stream),
                        "fetch_ms_mean": 1000 * statistics.mean(t_fetch),
                        "fetch_ms_max": 1000 * max(t_fetch),
                        "step_ms_median": 1000 * statistics.median(t_memory)}
    return {"steps": n, "warmup": warm, **rounds}


# ----------------------------------------------------------------------------- prepare profile


def profile_prepare(path: Path, prepared_dir: Path, repeats: int = 3) -> list[tuple]:
    """Time each stage of `corpus.prepare` on the file's first 16 MB chunk (best of `repeats`)."""
    import codecs

    from textgen.corpus import CHUNK_BYTES

    meta = json.loads((prepared_dir / "meta.json").read_text(encoding="utf-8"))
    code_points = np.array([ord(c) for c in meta["vocab"]])
    lookup = np.zeros(int(code_points[-1]) + 1, dtype=meta["dtype"])
    lookup[code_points] = np.arange(len(code_points), dtype=meta["dtype"])
    sink = ROOT / "profile-ids.bin"
    state: dict = {}

    def read():
        with open(path, "rb") as f:
            state["raw"] = f.read(CHUNK_BYTES)

    def decode():
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        len(decoder.getstate()[0])
        state["text"] = decoder.decode(state["raw"], final=False)

    def write(key, target):
        def go():
            with open(target, "wb") as out:
                state[key].tofile(out)
        return go

    def code_points():  # corpus._code_points on BMP text: UTF-16 units plus the surrogate check
        units = np.frombuffer(state["text"].encode("utf-16-le", "surrogatepass"), dtype=np.uint16)
        units.max()
        state["cps"] = units

    def read_back():
        state["cps"] = np.fromfile(cps_sink, dtype=np.uint16)

    def take():
        state["ids"] = np.empty(len(state["cps"]), dtype=lookup.dtype)
        np.take(lookup, state["cps"], out=state["ids"])

    cps_sink = ROOT / "profile-codepoints.bin"
    stages = [  # name, function; each runs once per chunk (corpus.prepare decodes the file once)
        ("read 16 MB", read),
        ("sha256", lambda: hashlib.sha256().update(state["raw"])),
        ("utf-8 decode", decode),
        ("CR check", lambda: "\r" in state["text"]),
        ("utf-16 code points", code_points),
        ("bincount", lambda: np.bincount(state["cps"])),
        ("code points to temp file", write("cps", cps_sink)),
        ("temp file read back", read_back),
        ("lookup (np.take)", take),
        ("ids tofile", write("ids", sink)),
    ]
    rows = []
    for name, fn in stages:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        rows.append((name, min(times), 1))
    sink.unlink(missing_ok=True)
    cps_sink.unlink(missing_ok=True)
    return rows


def print_profile(rows: list[tuple], file_bytes: int) -> None:
    chunks = file_bytes / (16 * MB)
    total = sum(t * passes for _, t, passes in rows) * chunks
    print(f"\nprepare, stage by stage on one 16 MB chunk (best of 3), extrapolated to "
          f"{file_bytes / MB:,.0f} MB ({chunks:.0f} chunks):")
    print(f"{'stage':<26}{'ms/chunk':>10}{'MB/s':>9}{'est. s':>8}{'share':>7}")
    for name, t, passes in rows:
        est = t * passes * chunks
        print(f"{name:<26}{1000 * t:>10.1f}{16 / t:>9,.0f}{est:>8.1f}{est / total:>7.0%}")
    print(f"{'sum of stages':<26}{'':>10}{file_bytes / MB / total:>9,.0f}{total:>8.1f}{1:>7.0%}")


# ----------------------------------------------------------------------------- main


def _row(rows, name, value, target="", ok=None):
    rows.append((name, value, target, "" if ok is None else ("PASS" if ok else "FAIL")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the generated corpus in MiB")
    ap.add_argument("--out", type=Path, default=ROOT / "big.txt", help="where to write the corpus")
    ap.add_argument("--steps", type=int, default=200, help="training steps")
    ap.add_argument("--eval-chars", type=int, default=20000, help="validation characters scored at the end")
    ap.add_argument("--pipeline-steps", type=int, default=60, help="measured steps per source and round (60 steps of the default model: about 5 s each)")
    ap.add_argument("--reuse", action="store_true", help="re-use an existing --out file of the right size")
    ap.add_argument("--keep", action="store_true", help="keep the corpus and its cache entry")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="profile prepare's stages (auto: when it misses its target)")
    ap.add_argument("--worker", choices=("baseline", "train", "pipeline"), help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ["TEXTGEN_CACHE_DIR"] = str(ROOT / "cache")
    if a.worker:
        result = {"baseline": worker_baseline, "train": worker_train, "pipeline": worker_pipeline}[a.worker](a)
        a.result.write_text(json.dumps(result))
        return

    ROOT.mkdir(parents=True, exist_ok=True)
    env = environment(TEXTGEN_CACHE_DIR=str(ROOT / "cache"))
    cache = ROOT / "cache"

    def say(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        if a.reuse and a.out.exists() and abs(a.out.stat().st_size - a.size_mb * MB) < MB:
            gen = {"bytes": a.out.stat().st_size, "seconds": float("nan"), "passes": 0}
            say(f"re-using {a.out}")
        else:
            say(f"generating {a.size_mb} MiB in {a.out}")
            gen = generate(a.out, a.size_mb)
        size = a.out.stat().st_size
        say(f"  {size / MB:,.0f} MiB in {gen['seconds']:.1f} s; cold sequential read")
        disk_mbs = cold_read_mbs(a.out)  # also leaves the file in the page cache for prepare
        for stale in cache.glob(f"{a.out.stem[:40]}-*"):
            shutil.rmtree(stale)  # prepare must really run, not hit an earlier cache entry

        say("prepare")
        prep = run_measured([*TEXTGEN, "prepare", str(a.out), "--json"], env,
                            ROOT / "prepare.log")
        stats = json.loads(Path(prep["log"]).read_text().strip().splitlines()[-1])
        prepared_dir = Path(stats["cache"])
        prep_mbs = size / MB / prep["seconds"]
        say(f"  {prep['seconds']:.1f} s, {prep_mbs:.1f} MB/s, {prep['max_rss_mb']:.0f} MiB peak RSS")

        say("TensorFlow baseline")
        base = run_measured(worker("baseline", a.out, ROOT / "baseline.json"), env, ROOT / "baseline.log")
        base.update(json.loads((ROOT / "baseline.json").read_text()))

        say(f"training {a.steps} steps")
        env_train = {**env, "SCALE_T0": repr(time.time())}
        tr = run_measured(worker("train", a.out, ROOT / "train.json", steps=a.steps, eval_chars=a.eval_chars),
                          env_train, ROOT / "train.log")
        tr.update(json.loads((ROOT / "train.json").read_text()))
        shutil.rmtree(tr["run_dir"], ignore_errors=True)

        say("input pipeline: memmap vs in-memory")
        pipe = run_measured(worker("pipeline", a.out, ROOT / "pipeline.json", pipeline_steps=a.pipeline_steps),
                            env, ROOT / "pipeline.log")
        pipe.update(json.loads((ROOT / "pipeline.json").read_text()))

        profile = None
        if a.profile == "always" or (a.profile == "auto" and prep_mbs < TARGET_PREPARE_MBS):
            say("profiling prepare's stages")
            profile = profile_prepare(a.out, prepared_dir)
    finally:
        if not a.keep:
            a.out.unlink(missing_ok=True)
            for stale in cache.glob(f"{a.out.stem[:40]}-*"):
                shutil.rmtree(stale, ignore_errors=True)

    rows: list = []
    _row(rows, "corpus", f"{size / MB:,.0f} MiB UTF-8, {stats['characters']:,} chars, "
                         f"vocab {stats['vocab_size']} ({stats['ids_dtype']})")
    m = tr["model"]
    _row(rows, "model (defaults)", f"{m['num_layers']}x{m['units']} LSTM, emb {m['embedding_dim']}, "
                               f"batch {tr['batch_size']} x seq {tr['seq_len']}")
    _row(rows, "disk: cold sequential read", f"{disk_mbs:,.0f} MB/s")
    _row(rows, "prepare: wall time", f"{prep['seconds']:.1f} s (CPU {prep['cpu_seconds']:.1f} s)")
    _row(rows, "prepare: throughput", f"{prep_mbs:.1f} MB/s", f">= {TARGET_PREPARE_MBS:.0f} MB/s",
         prep_mbs >= TARGET_PREPARE_MBS)
    _row(rows, "prepare: peak RSS", f"{prep['max_rss_mb']:,.0f} MiB")
    _row(rows, "train: process start -> step 1 done", f"{tr['start_to_first_step_s']:.1f} s",
         f"<= {TARGET_FIRST_STEP_S:.0f} s", tr["start_to_first_step_s"] <= TARGET_FIRST_STEP_S)
    _row(rows, "  python start-up", f"{tr['python_start_s']:.1f} s")
    _row(rows, "  import textgen.training.opening (TF/Keras)", f"{tr['import_s']:.1f} s")
    _row(rows, "  prepare (cache hit)", f"{tr['prepare_cached_s']:.2f} s")
    _row(rows, "  open_run (build+compile)", f"{tr['open_run_s']:.1f} s")
    _row(rows, "  first train_on_batch (trace)", f"{tr['first_step_s']:.1f} s")
    _row(rows, "train: peak RSS", f"{tr['max_rss_mb']:,.0f} MiB", f"<= {TARGET_TRAIN_RSS_MB:,.0f} MiB",
         tr["max_rss_mb"] <= TARGET_TRAIN_RSS_MB)
    _row(rows, "TF baseline: peak RSS", f"{base['max_rss_mb']:,.0f} MiB "
                                        f"(textgen +{tr['max_rss_mb'] - base['max_rss_mb']:,.0f} MiB)")
    _row(rows, f"train: chars/s ({tr['steps']} steps)", f"{tr['trainer_chars_per_s']:,.0f} "
                                                        f"(steady {tr['steady_chars_per_s']:,.0f})")
    _row(rows, "train: final eval + checkpoint", f"{tr['final_eval_and_save_s']:.1f} s")
    for name in ("warm", "cold"):
        r = pipe[name]
        label = "page cache" if name == "warm" else "ids.bin dropped from cache"
        _row(rows, f"pipeline ({label}): memmap", f"{r['stream_chars_per_s']:,.0f} chars/s "
                                                  f"(fetch {r['fetch_ms_mean']:.2f} ms/step, max {r['fetch_ms_max']:.1f})")
        _row(rows, f"pipeline ({label}): in memory", f"{r['memory_chars_per_s']:,.0f} chars/s "
                                                     f"(step {r['step_ms_median']:.0f} ms median)")
        _row(rows, f"pipeline ({label}): ratio", f"{r['ratio']:.1%} (medians {r['median_ratio']:.1%})",
             f">= {TARGET_PIPELINE_RATIO:.0%}", r["ratio"] >= TARGET_PIPELINE_RATIO)
        implied = r["step_ms_median"] / (r["step_ms_median"] + r["fetch_ms_mean"])
        _row(rows, f"pipeline ({label}): step/(step+fetch)", f"{implied:.2%} (noise-free estimate)",
             f">= {TARGET_PIPELINE_RATIO:.0%}", implied >= TARGET_PIPELINE_RATIO)
    w = [max(len(str(r[i])) for r in rows + [("measure", "value", "target", "result")]) for i in range(4)]
    header = ("measure", "value", "target", "result")
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(header)).rstrip())
    print("  ".join("-" * w[i] for i in range(4)))
    for r in rows:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())
    if profile is not None:
        print_profile(profile, size)
    (ROOT / "scale-results.json").write_text(json.dumps(
        {"generate": gen, "disk_mbs": disk_mbs, "prepare": {**prep, "mbs": prep_mbs, "stats": stats},
         "baseline": base, "train": tr, "pipeline": pipe,
         "profile": profile}, indent=2, default=str))


if __name__ == "__main__":
    main()
