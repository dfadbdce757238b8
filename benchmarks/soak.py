"""Soak benchmark (issue 7): many interrupt/resume cycles, and one very long streamed sample.

    python benchmarks/soak.py [--part a|b|all] [--cycles 50] [--length 10000000] [--workdir DIR]

(a) `--cycles` consecutive interrupt/resume cycles of a tiny run (1x32 LSTM, embedding 16,
    --seq-len 32 --batch-size 8 --eval-every 10 --eval-chars 500, ~50 KB corpus written by
    the script): each cycle starts `textgen train --run soak --resume` (the first without
    --resume), waits until that process has written its first checkpoint (so it is inside
    the training loop), waits a random 0-1.5 s more and sends SIGINT or SIGTERM (chosen at
    random). The process must exit 0 with `stopped: SIGINT|SIGTERM`. Its peak resident
    memory is the child's own `ru_maxrss` returned by `os.wait4` (Linux: the high-water
    mark of that one process). Peak memory of the first 5 and the last 5 cycles must agree
    (median of the last 5 <= median of the first 5 x 1.10).
    Then the run is finished exactly: it trained with --epochs 100000 so far; a last
    `--resume --epochs K` (K = the first whole epoch past the step reached) trains to
    K x steps-per-epoch and must report `stopped: finished`. A second run, `straight`,
    with the same seed and options and `--epochs K`, trains there without interruption.
    Every weight (and optimizer variable) of the two final checkpoints, read with
    `textgen.checkpoints.load_arrays`, must agree within 1e-5.
(b) `textgen sample --run soak --length N` streamed to /dev/null for N = 10,000 and
    N = --length (default 10,000,000), peak memory from `os.wait4` for each (and VmRSS
    polled from /proc every few seconds during the long one): the two peaks must be about
    equal (long <= short x 1.10 + 5 MB). If the work directory has no `soak` run (part b
    alone), a tiny one is trained first for 5 seconds.

Prints a table of figures; exits non-zero if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import TEXTGEN, environment, vm_rss_mb  # noqa: E402
from common import wait4 as wait4_usage  # noqa: E402
from crash import TINY, newest_state, print_tally, write_corpus  # noqa: E402

from textgen import checkpoints  # noqa: E402


def wait4(proc: subprocess.Popen) -> tuple[int, float]:
    """Reap `proc` with os.wait4: (exit code, its own peak RSS in MB)."""
    rc, peak, _ = wait4_usage(proc)
    return rc, peak


def running(proc: subprocess.Popen) -> bool:
    """Whether `proc` has not exited yet, without reaping it (Popen.poll would, and wait4 needs it)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


# Every option that defines the computation is given explicitly, so that a change of textgen's
# defaults between the interrupted and the uninterrupted run (it happened: the default
# learning rate went from 2e-3 to 3e-3 while this benchmark ran) cannot make them differ.
PINNED = ["--learning-rate", "0.002", "--clip-norm", "1.0", "--seed", "0", "--state-reset", "10",
          "--val-fraction", "0.1", "--lr-schedule", "constant", "--dropout", "0"]


def train_cmd(corpus: Path, run: str, *extra: str) -> list[str]:
    pinned = PINNED if "--resume" not in extra else []  # a resumed run keeps its recorded values
    return [*TEXTGEN, "train", str(corpus), "--run", run, *TINY, *pinned, "--json", *extra]


def part_a(workdir: Path, env: dict, corpus: Path, cycles: int, rng: random.Random, fail) -> list[tuple[str, str]]:
    run_dir = workdir / "checkpoints" / "soak"
    logs = workdir / "logs"
    rows: list[tuple[str, str]] = []
    peaks, steps, signals_sent = [], [], []
    t0 = time.time()
    prev_step = 0
    for c in range(cycles):
        cmd = train_cmd(corpus, "soak", "--epochs", "100000", *(["--resume"] if c else []))
        started = time.time()
        with open(logs / f"soak-{c:02d}.out", "w") as out, open(logs / f"soak-{c:02d}.err", "w") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=workdir)
        # Inside the training loop once this process has written a checkpoint of its own.
        while running(proc) and time.time() - started < 300:
            newest = newest_state(run_dir)
            if newest and newest[1].get("saved_at", 0) >= started and newest[1]["step"] > prev_step:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        if running(proc):
            proc.send_signal(sig)
        code, peak = wait4(proc)
        try:
            summary = json.loads((logs / f"soak-{c:02d}.out").read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            summary = {}
        if code != 0 or summary.get("stopped") != sig.name:
            fail(f"cycle {c}: exit {code}, stopped={summary.get('stopped')!r} (sent {sig.name}); "
                 f"stderr: {(logs / f'soak-{c:02d}.err').read_text()[-300:]}")
        step = int(summary.get("step", prev_step))
        if step <= prev_step:
            fail(f"cycle {c}: step {step} did not advance past {prev_step}")
        latest = checkpoints.latest(run_dir)
        if latest.step != step:
            fail(f"cycle {c}: the process reported step {step}, the latest checkpoint is {latest.step}")
        prev_step = step
        peaks.append(peak)
        steps.append(step)
        signals_sent.append(sig.name)
        print(f"cycle {c + 1:2d}/{cycles}: {sig.name:7s} after {time.time() - started:5.1f} s -> step {step:5d}, "
              f"peak RSS {peak:6.1f} MB", flush=True)
    cycle_seconds = time.time() - t0
    first, last = peaks[:5], peaks[-5:]
    grew = statistics.median(last) > statistics.median(first) * 1.10
    if grew:
        fail(f"peak memory grew: first 5 cycles {first}, last 5 {last}")

    # Finish the interrupted run exactly at a whole number of epochs, then train straight there.
    spe = int(checkpoints.load_state(checkpoints.latest(run_dir).path)["steps_per_epoch"])
    epochs = prev_step // spe + 1
    target = epochs * spe
    t1 = time.time()
    fin = subprocess.run(train_cmd(corpus, "soak", "--resume", "--epochs", str(epochs)), capture_output=True,
                         text=True, env=env, cwd=workdir)
    fin_summary = json.loads(fin.stdout.strip().splitlines()[-1]) if fin.returncode == 0 else {}
    if fin_summary.get("stopped") != "finished" or fin_summary.get("step") != target:
        fail(f"finishing --resume --epochs {epochs}: exit {fin.returncode}, {fin_summary}, {fin.stderr[-300:]}")
    finish_seconds = time.time() - t1
    t2 = time.time()
    straight = subprocess.run(train_cmd(corpus, "straight", "--epochs", str(epochs)), capture_output=True,
                              text=True, env=env, cwd=workdir)
    straight_summary = json.loads(straight.stdout.strip().splitlines()[-1]) if straight.returncode == 0 else {}
    if straight_summary.get("stopped") != "finished" or straight_summary.get("step") != target:
        fail(f"uninterrupted run: exit {straight.returncode}, {straight_summary}, {straight.stderr[-300:]}")
    straight_seconds = time.time() - t2
    a_ckpt = checkpoints.latest(run_dir)
    b_ckpt = checkpoints.latest(workdir / "checkpoints" / "straight")
    diffs = {}
    for name in (checkpoints.WEIGHTS, checkpoints.OPTIMIZER):
        wa, wb = checkpoints.load_arrays(a_ckpt.path, name), checkpoints.load_arrays(b_ckpt.path, name)
        if sorted(wa) != sorted(wb):
            fail(f"{name}: the two runs hold different variables")
            continue
        diffs[name] = max(float(np.max(np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64))))
                          if wa[k].size else 0.0 for k in wa)
    if diffs.get(checkpoints.WEIGHTS, 1.0) > 1e-5:
        fail(f"interrupted vs uninterrupted weights differ: max abs {diffs.get(checkpoints.WEIGHTS)}")
    trainable_diff = None
    wa, wb = checkpoints.load_arrays(a_ckpt.path), checkpoints.load_arrays(b_ckpt.path)
    trainable = [k for k in wa if not k.startswith("seed_state") and not k.endswith(("/h", "/c"))]
    if trainable:
        trainable_diff = max(float(np.max(np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64))))
                             for k in trainable)

    rows += [
        ("(a) interrupt/resume cycles", f"{cycles} ({signals_sent.count('SIGINT')} SIGINT, "
                                        f"{signals_sent.count('SIGTERM')} SIGTERM), {cycle_seconds:.0f} s"),
        ("(a) steps reached after the cycles", f"{prev_step} (steps per epoch {spe})"),
        ("(a) peak RSS per training process, first 5 cycles (MB)", ", ".join(f"{p:.1f}" for p in first)),
        ("(a) peak RSS per training process, last 5 cycles (MB)", ", ".join(f"{p:.1f}" for p in last)),
        ("(a) peak RSS median first 5 / last 5 (MB)",
         f"{statistics.median(first):.1f} / {statistics.median(last):.1f} ({'GREW' if grew else 'no growth'})"),
        ("(a) peak RSS over all cycles: min / median / max (MB)",
         f"{min(peaks):.1f} / {statistics.median(peaks):.1f} / {max(peaks):.1f}"),
        ("(a) finish: --resume --epochs K", f"K = {epochs}, stopped {fin_summary.get('stopped')!r} at step "
                                             f"{fin_summary.get('step')} ({finish_seconds:.0f} s)"),
        ("(a) uninterrupted run, same seed/options, --epochs K", f"stopped {straight_summary.get('stopped')!r} at step "
                                                                 f"{straight_summary.get('step')} ({straight_seconds:.0f} s)"),
        ("(a) max |interrupted - uninterrupted|, weights.npz (all variables)",
         f"{diffs.get(checkpoints.WEIGHTS, float('nan')):.3g} (limit 1e-5)"),
        ("(a)   trainable weights only", f"{trainable_diff:.3g}" if trainable_diff is not None else "n/a"),
        ("(a) max |interrupted - uninterrupted|, optimizer.npz",
         f"{diffs.get(checkpoints.OPTIMIZER, float('nan')):.3g}"),
    ]
    return rows


def part_b(workdir: Path, env: dict, corpus: Path, length: int, fail) -> list[tuple[str, str]]:
    if not (workdir / "checkpoints" / "soak" / "run.json").exists():
        subprocess.run(train_cmd(corpus, "soak", "--time-limit", "5"), check=True, env=env, cwd=workdir,
                       stdout=subprocess.DEVNULL)
    # Let Python buffer stdout as usual: with PYTHONUNBUFFERED=1 (set on the project VM) every
    # character becomes a write(2) call (textgen flushes every 20 ms by itself anyway).
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    results = {}
    trace: list[tuple[float, float]] = []
    for n in (10_000, length):
        t0 = time.time()
        proc = subprocess.Popen([*TEXTGEN, "sample", "--run", "soak", "--length", str(n), "--seed", "7"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=workdir)
        if n == length:
            next_print = t0 + 60
            while running(proc):
                rss = vm_rss_mb(proc.pid)
                if rss is not None:
                    trace.append((time.time() - t0, rss))
                if time.time() >= next_print:
                    print(f"  long sample: {time.time() - t0:.0f} s, VmRSS {rss} MB", flush=True)
                    next_print += 60
                time.sleep(2.0)
        code, peak = wait4(proc)
        seconds = time.time() - t0
        stderr = proc.stderr.read().decode(errors="replace")
        if code != 0:
            fail(f"sample --length {n}: exit {code}: {stderr[-300:]}")
        results[n] = (peak, seconds)
        print(f"sample --length {n:,}: peak RSS {peak:.1f} MB, {seconds:.1f} s ({n / seconds:,.0f} chars/s)",
              flush=True)
    short, long = results[10_000][0], results[length][0]
    if long > short * 1.10 + 5:
        fail(f"peak memory grows with --length: {short:.1f} MB at 10,000 vs {long:.1f} MB at {length:,}")
    rows = [
        ("(b) sample --length 10,000: peak RSS (wait4), time",
         f"{short:.1f} MB, {results[10_000][1]:.1f} s"),
        (f"(b) sample --length {length:,}: peak RSS (wait4), time",
         f"{long:.1f} MB, {results[length][1]:.0f} s ({length / results[length][1]:,.0f} chars/s)"),
        ("(b) peak RSS long / short", f"{long / short:.3f} ({'about equal' if long <= short * 1.10 + 5 else 'GREW'})"),
    ]
    if trace:
        k = max(1, len(trace) // 6)
        rows.append(("(b) VmRSS during the long sample (s: MB)",
                     ", ".join(f"{t:.0f}: {m:.1f}" for t, m in trace[::k])))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--length", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="textgen-soak-"))
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    for run in ("soak", "straight") if args.part != "b" else ():
        if (workdir / "checkpoints" / run).exists():
            raise SystemExit(f"{workdir / 'checkpoints' / run} exists: use a fresh --workdir")
    corpus = write_corpus(workdir / "corpus.txt")
    env = environment(workdir)
    rng = random.Random(args.seed)
    failures: list[str] = []

    def fail(msg: str) -> None:
        failures.append(msg)
        print(f"  FAIL: {msg}", flush=True)

    print(f"# textgen soak benchmark, part {args.part}: work dir {workdir}, corpus {corpus.stat().st_size:,} bytes", flush=True)
    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    t0 = time.time()
    rows: list[tuple[str, str]] = []
    if args.part in ("a", "all"):
        rows += part_a(workdir, env, corpus, args.cycles, rng, fail)
    if args.part in ("b", "all"):
        rows += part_b(workdir, env, corpus, args.length, fail)
    rows.append(("failed checks", str(len(failures))))
    print()
    print(f"# figures ({time.time() - t0:.0f} s, load average {os.getloadavg()[0]:.2f} at the end)")
    print_tally(rows, failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
