"""Crafted runs benchmark (issue 30): 1,000 damaged or forged run directories, loaded.

    python benchmarks/crafted_runs.py [--runs 1000] [--cli-every 20] [--seed 0] [--workdir DIR]

Trains one tiny run (1x16, one epoch: what the tests use), then, for each of `--runs` seeds,
copies it, applies one to three mutations of tests/crafted.py chosen by `random.Random(seed)`
(the ones tests/test_crafted_runs.py draws with hypothesis: truncations, flipped bytes, wrong
shapes and dtypes, missing and NaN weights, zip bombs and lying npz headers, links out of the run
and to /dev/zero, FIFOs, manifests and JSON of the wrong types, huge sparse files, extra files,
nine-digit names) and loads it with `load_run` ("latest", "best" or a checkpoint by name, with or
without --use-previous), then steps every character through the engine it built.

The loads run in a worker subprocess fed one directory at a time, so that a signal (a crash in
C) or a hang is seen by this process: a worker that dies is a crash, one that does not answer
within --hang-seconds is a hang (killed, and a new worker started). Every `--cli-every`-th run is
also sampled by `textgen sample` in its own process: exit 0, or exit 1 with one `Error:` line on
stderr and nothing on stdout, is clean; a traceback, another exit status or a signal is a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import common

sys.path.insert(0, str(common.REPO / "tests"))

TINY = ["--layers", "1", "--units", "16", "--embedding-dim", "8", "--dropout", "0", "--seq-len", "10",
        "--batch-size", "4", "--epochs", "1", "--eval-every", "50"]


# ----------------------------------------------------------------------------- the worker


def worker() -> None:
    """Read {"run", "which", "use_previous"} lines on stdin; answer one JSON line each."""
    import numpy as np

    from textgen.errors import CheckpointError
    from textgen.generation.loading import load_run

    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        answer = {"outcome": "loaded"}
        try:
            info, _, engine = load_run(request["run"], request["which"], request["use_previous"], threads=1)
            state = engine.initial_state(2, threads=1)
            for i in range(len(info["vocab"])):
                engine.step(np.full(2, i), state)
            state.close()
        except CheckpointError as e:
            answer = {"outcome": "refused" if "\n" not in str(e) else "unclear", "message": str(e)}
        except BaseException as e:  # noqa: BLE001 — what the benchmark counts
            answer = {"outcome": "crash", "message": "".join(traceback.format_exception(e))[-2000:]}
        answer["seconds"] = time.perf_counter() - started
        print(json.dumps(answer), flush=True)


class Worker:
    def __init__(self, log: Path):
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=common.environment(), cwd=common.REPO)

    def load(self, request: dict, timeout: float) -> dict:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            return {"outcome": "hang", "seconds": timeout}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            return {"outcome": "crash", "message": f"the worker died (exit {code})", "seconds": 0.0}
        return json.loads(line)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        self.log.close()


# ----------------------------------------------------------------------------- the CLI


def sample_cli(run: Path, which: str, use_previous: bool, timeout: float) -> dict:
    args = ["sample", "--checkpoints", run.parent, "--run", run.name, "--checkpoint", which, "--length", "20",
            "--seed", "1", *(["--use-previous"] if use_previous else [])]
    started = time.perf_counter()
    try:
        result = common.textgen(*args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "seconds": timeout}
    seconds = time.perf_counter() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    traced = "Traceback" in result.stderr
    if result.returncode == 0 and not traced:
        outcome = "loaded"
    elif result.returncode == 1 and result.stdout == "" and len(lines) == 1 and lines[0].startswith("Error: "):
        outcome = "refused"
    else:
        outcome = "crash"
    return {"outcome": outcome, "traceback": traced, "seconds": seconds, "code": result.returncode,
            "stderr": result.stderr[-2000:]}


# ----------------------------------------------------------------------------- main


def train(workdir: Path) -> Path:
    from helpers import write_tiny_corpus

    corpus = write_tiny_corpus(workdir / "tiny.txt")
    result = common.textgen("train", corpus, "--run", "tiny", *TINY, "--json", env=common.environment(workdir))
    if result.returncode != 0:
        sys.exit(f"training the tiny run failed:\n{result.stderr}")
    return workdir / "checkpoints" / "tiny"


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--cli-every", type=int, default=20, help="sample every n-th run with `textgen sample` too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="a load (or CLI run) past this is a hang")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    import crafted

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crafted-runs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_begin = time.time()
    print(f"# textgen crafted-runs benchmark: {args.runs} runs, seed {args.seed}, work dir {workdir}")
    print(f"# machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start",
          flush=True)
    source = train(workdir)
    print(f"# trained {source} in {time.time() - t_begin:.0f} s", flush=True)
    log = workdir / "worker-stderr.log"
    loads, clis, by_mutation, problems = [], [], Counter(), []
    pool = Worker(log)
    for i in range(args.runs):
        rng = random.Random(args.seed * 1_000_003 + i)
        names = rng.sample(sorted(crafted.MUTATIONS), rng.randint(1, 3))
        home = workdir / "crafted" / str(i)
        shutil.rmtree(home, ignore_errors=True)
        run = home / "tiny"
        shutil.copytree(source, run)
        crafted.craft(run, rng, names)
        which = rng.choice(["latest", "latest", "best", "by name"])
        if which == "by name":
            found = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
            which = rng.choice(found) if found else "latest"
        use_previous = rng.random() < 0.3
        if not pool.alive:
            pool = Worker(log)
        answer = pool.load({"run": str(run), "which": which, "use_previous": use_previous}, args.hang_seconds)
        if not pool.alive:
            pool = Worker(log)
        loads.append(answer)
        for name in names:
            by_mutation[name, answer["outcome"]] += 1
        if answer["outcome"] not in ("loaded", "refused"):
            problems.append(f"run {i} {names} {which} use_previous={use_previous}: {answer}")
        if args.cli_every and i % args.cli_every == 0:
            result = sample_cli(run, which, use_previous, args.hang_seconds)
            clis.append(result)
            if result["outcome"] not in ("loaded", "refused") or result["traceback"]:
                problems.append(f"cli {i} {names} {which} use_previous={use_previous}: {result}")
        shutil.rmtree(home, ignore_errors=True)
        if (i + 1) % 100 == 0:
            print(f"# {i + 1} runs, {Counter(a['outcome'] for a in loads)}", flush=True)
    pool.close()
    worker_tracebacks = log.read_text(errors="replace").count("Traceback")
    outcomes, cli_outcomes = Counter(a["outcome"] for a in loads), Counter(c["outcome"] for c in clis)
    times = sorted(a["seconds"] for a in loads)
    cli_times = sorted(c["seconds"] for c in clis)
    print(f"# tally ({time.time() - t_begin:.0f} s, load average {os.getloadavg()[0]:.2f} at the end)")
    rows = [
        ("crafted runs loaded by load_run", len(loads)),
        ("  clean loads (engine stepped every character)", outcomes["loaded"]),
        ("  refused with one CheckpointError line", outcomes["refused"]),
        ("  crashes (other exceptions, worker signals)", outcomes["crash"]),
        ("  refusals of more than one line", outcomes["unclear"]),
        ("  hangs (no answer within --hang-seconds)", outcomes["hang"]),
        ("  tracebacks in the worker's stderr", worker_tracebacks),
        ("  load time: median / 99th percentile / max", f"{times[len(times) // 2] * 1000:.1f} ms / "
         f"{times[int(len(times) * 0.99)] * 1000:.1f} ms / {times[-1] * 1000:.1f} ms"),
        ("crafted runs sampled by `textgen sample`", len(clis)),
        ("  exit 0 / one-line error, exit 1", f"{cli_outcomes['loaded']} / {cli_outcomes['refused']}"),
        ("  crashes / tracebacks / hangs", f"{cli_outcomes['crash']} / {sum(c.get('traceback', False) for c in clis)}"
         f" / {cli_outcomes['hang']}"),
        ("  process time (start to exit): median / max", f"{cli_times[len(cli_times) // 2]:.2f} s / "
         f"{cli_times[-1]:.2f} s" if cli_times else "-"),
    ]
    for label, value in rows:
        print(f"| {label:<50} | {value} |")
    print("# per mutation (a run has 1-3): loaded / refused / other")
    for name in sorted(crafted.MUTATIONS):
        other = sum(n for (m, o), n in by_mutation.items() if m == name and o not in ("loaded", "refused"))
        print(f"|   {name:<16} | {by_mutation[name, 'loaded']:4d} / {by_mutation[name, 'refused']:4d} / {other} |")
    for problem in problems:
        print(f"PROBLEM {problem}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems or worker_tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
