"""The exported page's speed in headless Chromium next to the numpy engine, page sizes per
precision, and what float16 / int8 cost in bits per character.

    python benchmarks/export.py [--run NAME] [--checkpoints DIR] [--sizes 2x256,2x512]
                                [--chars 5000] [--repeats 3] [--quick] [--json FILE]

1. Speed, per model size (LAYERSxUNITS, embedding 64, the run's vocabulary or 65 characters):
   a page is exported from weights drawn at random with Keras' initialiser scales (speed does
   not depend on the values, and on every precision the page computes in float32 weights /
   float64 sums, so one page per size is timed); it is opened from file:// in headless
   /usr/bin/chromium with every network request blocked and generates --chars characters
   at temperature 1 from its URL fragment; the page's own clock (window.textgen.stats, time
   spent computing, not painting) gives characters/second, the median of --repeats loads.
   Next to it: textgen's numpy engine writing one stream of the same length through
   textgen.generation.session (what `textgen sample` does), median of --repeats, with 1 and with 2
   stepping threads (`textgen sample` uses 2); the faster is the reference.
2. With --run: the run's page size for float32 / float16 / int8, and the bits per character
   of the run's validation text (its corpus' validation split) under each precision.

--quick runs the whole pipeline at toy sizes (2x32, 300 characters, one repeat) to check
that it works; its numbers mean nothing. Nothing here trains a model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts this checkout first on sys.path)
import numpy as np

from textgen.export import html
from textgen.export.model_arrays import PRECISIONS, ModelArrays

CHROMIUM = "/usr/bin/chromium"
DEFAULT_VOCAB = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # 65, like tiny Shakespeare


def synthetic(num_layers: int, units: int, vocab: list, embedding_dim: int = 64, seed: int = 0) -> ModelArrays:
    """Random weights of a run's shape (Glorot-uniform kernels, orthogonal-ish recurrent scale)."""
    rng = np.random.default_rng(seed)

    def glorot(rows, cols):
        limit = np.sqrt(6.0 / (rows + cols))
        return rng.uniform(-limit, limit, (rows, cols)).astype(np.float32)

    inputs = [embedding_dim] + [units] * (num_layers - 1)
    return ModelArrays(
        embedding=rng.uniform(-0.05, 0.05, (len(vocab), embedding_dim)).astype(np.float32),
        kernels=[glorot(n, 4 * units) for n in inputs],
        recurrents=[glorot(units, 4 * units) for _ in range(num_layers)],
        biases=[np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)]).astype(np.float32)
                for _ in range(num_layers)],
        out_kernel=glorot(units, len(vocab)), out_bias=np.zeros(len(vocab), np.float32),
        vocab=vocab, start_id=vocab.index("\n") if "\n" in vocab else 0, run=f"bench-{num_layers}x{units}",
        version="bench",
    )


def page_speed(browser, path: Path, chars: int, repeats: int) -> dict:
    """Median characters/second of the page writing `chars` characters, and its load time."""
    speeds, loads = [], []
    url = path.resolve().as_uri()
    for _ in range(repeats):
        page = browser.new_page()
        blocked = []

        def only_the_file(route, blocked=blocked):
            if route.request.url.split("#")[0] == url:
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_file)
        page.goto(f"{url}#prime=&temperature=1&length={chars}&seed=1&autorun=1")
        # A selector, not wait_for_function: the page's CSP forbids the eval a polled function needs.
        page.wait_for_selector("body[data-state=done]", state="attached", timeout=600_000)
        stats = page.evaluate("window.textgen.stats")
        loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
        assert stats["chars"] == chars and not blocked, (stats, blocked)
        speeds.append(stats["charsPerSecond"])
        page.close()
    return {"chars_per_second": statistics.median(speeds), "load_ms": statistics.median(loads)}


def engine_speed(arrays: ModelArrays, chars: int, repeats: int, threads: int) -> float:
    """Median characters/second of one stream through textgen's session (as `textgen sample`,
    which steps with 2 threads), with the engine stepping on `threads` threads."""
    from textgen.generation.engine import LSTMEngine
    from textgen.generation.session import SamplingSession, StreamSpec

    engine = LSTMEngine(arrays.keras_weights(), arrays.num_layers, threads=threads)
    speeds = []
    for _ in range(repeats):
        session = SamplingSession(engine, arrays.vocab, arrays.start_id, capacity=1)
        start = time.perf_counter()
        for _pieces in session.run([StreamSpec(length=chars, temperature=1.0, seed=1)]):
            pass
        speeds.append(chars / (time.perf_counter() - start))
        session.close()
    return statistics.median(speeds)


def run_figures(run_dir: Path, directory: Path) -> dict:
    """The run's page size and validation bits per character for every precision."""
    from textgen.export import model_arrays as arrays_lib
    from textgen.export.quality import bits_per_char, validation_ids

    info, ckpt, arrays = arrays_lib.load(run_dir)
    ids, why = validation_ids(info)
    rows = {}
    for precision in PRECISIONS:
        path = directory / f"{run_dir.name}-{precision}.html"
        path.write_text(html.page(arrays, precision, ckpt.step), encoding="utf-8")
        row = {"page_bytes": path.stat().st_size}
        if ids is not None:
            row["bpc"] = bits_per_char(arrays_lib.quantise(arrays, precision)[1], ids)
        rows[precision] = row
    if ids is not None:
        for precision in PRECISIONS:
            rows[precision]["bpc_change"] = rows[precision]["bpc"] - rows["float32"]["bpc"]
    return {"run": run_dir.name, "checkpoint": ckpt.path.name, "validation_chars": None if ids is None else len(ids),
            "bpc_skipped": why, "precisions": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained run: its page sizes and bpc per precision")
    parser.add_argument("--checkpoints", default=None, help="directory holding the runs (default: TEXTGEN_CHECKPOINTS or checkpoints)")
    parser.add_argument("--sizes", default="2x256,2x512", help="model sizes to time, LAYERSxUNITS, comma-separated")
    parser.add_argument("--chars", type=int, default=5000, help="characters each timed sample writes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="toy sizes, to check the script runs (numbers mean nothing)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.chars, args.repeats = "2x32", 300, 1
    from playwright.sync_api import sync_playwright

    from textgen import checkpoints

    run_dir = None
    vocab = DEFAULT_VOCAB
    if args.run:
        root = Path(args.checkpoints) if args.checkpoints else checkpoints.default_checkpoints_dir()
        run_dir = checkpoints.find_run(root, args.run)
        vocab = checkpoints.read_run_file(run_dir)["vocab"]
    results = {"chars": args.chars, "repeats": args.repeats, "sizes": [], "run": None}
    with tempfile.TemporaryDirectory(prefix="textgen-export-bench-") as scratch, sync_playwright() as playwright:
        scratch = Path(scratch)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        for size in args.sizes.split(","):
            num_layers, units = (int(x) for x in size.lower().split("x"))
            arrays = synthetic(num_layers, units, vocab)
            path = scratch / f"{size}.html"
            path.write_text(html.page(arrays, "float32"), encoding="utf-8")
            by_threads = {t: engine_speed(arrays, args.chars, args.repeats, t) for t in (1, 2)}
            row = {"size": size, **page_speed(browser, path, args.chars, args.repeats),
                   "numpy_chars_per_second": max(by_threads.values()),  # the engine at its best for one stream
                   "numpy_by_threads": by_threads,
                   "page_bytes": {p: len(html.page(arrays, p).encode("utf-8")) for p in PRECISIONS}}
            row["page_share_of_numpy"] = row["chars_per_second"] / row["numpy_chars_per_second"]
            results["sizes"].append(row)
            print(f"{size}: page {row['chars_per_second']:,.0f} chars/s (load {row['load_ms']:.0f} ms), numpy engine "
                  f"{by_threads[1]:,.0f} chars/s on 1 thread, {by_threads[2]:,.0f} on 2 -> page "
                  f"{row['page_share_of_numpy']:.0%} of the faster; page bytes "
                  + ", ".join(f"{p} {b:,}" for p, b in row["page_bytes"].items()), flush=True)
        browser.close()
        if run_dir is not None:
            results["run"] = run_figures(run_dir, scratch)
    print()
    print("| model | page chars/s | numpy engine chars/s | page / numpy | page load ms |")
    print("|---|---:|---:|---:|---:|")
    for row in results["sizes"]:
        print(f"| {row['size']} | {row['chars_per_second']:,.0f} | {row['numpy_chars_per_second']:,.0f} | "
              f"{row['page_share_of_numpy']:.0%} | {row['load_ms']:.0f} |")
    if results["run"]:
        run = results["run"]
        print(f"\nRun {run['run']} ({run['checkpoint']}), validation characters: {run['validation_chars']}"
              + (f" ({run['bpc_skipped']})" if run["bpc_skipped"] else ""))
        print("| precision | page bytes | bpc | change vs float32 |")
        print("|---|---:|---:|---:|")
        for precision, row in run["precisions"].items():
            bpc = f"{row['bpc']:.4f}" if "bpc" in row else "-"
            change = f"{row['bpc_change']:+.4f}" if "bpc_change" in row else "-"
            print(f"| {precision} | {row['page_bytes']:,} | {bpc} | {change} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
