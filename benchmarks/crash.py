"""Crash benchmark (issue 7): SIGKILL a training run at random moments, over and over.

    python benchmarks/crash.py [--kills 30] [--corpus PATH] [--workdir DIR] [--seed 0]

Starts `python -m textgen train CORPUS --run crash` with a tiny model (1x32 LSTM, embedding
16, --seq-len 32 --batch-size 8 --eval-every 10 --eval-chars 500) in a subprocess and kills
it with SIGKILL `--kills` times; every restart after the first uses `--resume`. Half of the
kills land at a random delay: some (`random-train`, and always the first) 0.2-3 s after the
process wrote its first checkpoint, i.e. anywhere in training, evaluation or a checkpoint
write; the others (`random-start`) at a random delay from process start (TensorFlow import,
set-up, restoring, the first steps); the other half are timed to land while a
checkpoint is being written (the script polls the run directory for the process's
`.tmp-ckpt-*` directory and kills as soon as it appears).

After every kill it checks that
  * `textgen.checkpoints.latest(run_dir)` loads and verifies (and its weights and optimizer
    arrays load),
  * `python -m textgen sample --run crash --length 50 --json` succeeds,
  * the latest checkpoint's step never goes backwards,
and, once the next `--resume` has written its first checkpoint, that
  * its step is greater than the step the kill left behind,
  * no `.tmp-*` / `.old-*` left by a killed process survives,
  * the killed process's stale `lock` has been taken over by the new process.
A last, graceful `--resume --time-limit 3` must exit 0 and leave no temporary and no lock.

Progress lost per kill: (kill time - `saved_at` of the newest checkpoint) x the training rate
(steps/s between consecutive checkpoints of the same process); for kills that landed
mid-write the exact figure is also known (the step in the `.tmp-ckpt-<step>-<pid>` name minus
the newest complete checkpoint's step). A process killed before it wrote any checkpoint
trained fewer than --eval-every steps since resuming from one; its loss is capped at that.

Prints a tally and exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import TEXTGEN, environment  # also puts the repository first on sys.path

from textgen import checkpoints  # numpy only; no TensorFlow in this process

TINY = ["--layers", "1", "--units", "32", "--embedding-dim", "16", "--seq-len", "32", "--batch-size", "8",
        "--eval-every", "10", "--eval-chars", "500"]
EVAL_EVERY = 10

WORDS = (
    "the and of to a in that is was he for it with as his on be at by i this had not are but from or "
    "have an they which one you were her all she there would their we him been has when who will more "
    "no if out so said what up its about into than them can only other new some could time these two "
    "may then do first any my now such like our over man me even most made after also did many before "
    "must through back years where much your way well down should because each just those people how "
    "too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since against "
    "go came right used take three thou thee thy lord love night sweet death heaven king crown sword"
).split()
NAMES = ["ROMEO", "JULIET", "HAMLET", "OPHELIA", "LEAR", "CORDELIA", "MACBETH", "PORTIA"]


def write_corpus(path: Path, chars: int = 50_000, seed: int = 0) -> Path:
    """About `chars` characters of play-like text (speaker lines of random words), deterministic."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < chars:
        block = [rng.choice(NAMES) + ":\n"]
        for _ in range(rng.randint(1, 4)):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 11)))
            block.append(words.capitalize() + rng.choice(".,?!;") + "\n")
        block.append("\n")
        text = "".join(block)
        parts.append(text)
        size += len(text)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def newest_state(run_dir: Path) -> tuple[str, dict] | None:
    """(name, state.json) of the newest complete checkpoint directory, or None."""
    found = checkpoints.list_checkpoints(run_dir)
    for path in reversed(found):
        try:
            return path.name, checkpoints.load_state(path)
        except (OSError, ValueError):
            continue  # pruned or renamed under our feet
    return None


def leftovers(run_dir: Path) -> list[str]:
    names = []
    for pattern in (".tmp-*", ".old-*", ".lock.stale-*"):
        names += [p.name for p in run_dir.glob(pattern)]
    return sorted(names)


def pid_of(name: str) -> int | None:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def lock_pid(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / checkpoints.LOCK).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Watcher:
    """Polls the run directory for the checkpoints one training process writes."""

    def __init__(self, run_dir: Path, pid: int, started: float):
        self.run_dir, self.pid, self.started = run_dir, pid, started
        self.seen: dict[str, dict] = {}  # name -> state, for checkpoints saved by this process
        self.first_ckpt_time: float | None = None
        self.first_ckpt_step: int | None = None
        self.lock_pid_at_first: int | None = None
        self.leftovers_at_first: list[str] | None = None
        self._last_name = None

    def poll(self) -> None:
        newest = newest_state(self.run_dir)
        if newest is None or newest[0] == self._last_name:
            return
        name, state = newest
        self._last_name = name
        if state.get("saved_at", 0) >= self.started:
            self.seen[name] = state
            if self.first_ckpt_time is None:
                self.first_ckpt_time = time.time()
                self.first_ckpt_step = int(state["step"])
                self.lock_pid_at_first = lock_pid(self.run_dir)
                self.leftovers_at_first = leftovers(self.run_dir)

    def rate(self, state: dict | None) -> float | None:
        """Steps per second between the first and last evaluations (= checkpoints) of this process,
        from the metrics history of the newest checkpoint `state`."""
        own = [r for r in (state or {}).get("history", []) if r.get("time", 0) >= self.started]
        if len(own) < 2 or own[-1]["time"] <= own[0]["time"]:
            return None
        return (own[-1]["step"] - own[0]["step"]) / (own[-1]["time"] - own[0]["time"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--corpus", type=Path, default=None, help="default: ~50 KB of text written by the script")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="textgen-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "checkpoints" / "crash").exists():
        shutil.rmtree(workdir / "checkpoints" / "crash")
    (workdir / "logs").mkdir(exist_ok=True)
    corpus = args.corpus.resolve() if args.corpus else write_corpus(workdir / "corpus.txt")
    env = environment(workdir)
    run_dir = workdir / "checkpoints" / "crash"
    rng = random.Random(args.seed)
    kinds = ["random"] * (args.kills - args.kills // 2) + ["mid-write"] * (args.kills // 2)
    rng.shuffle(kinds)
    kinds[0] = "random"  # the first process always writes a checkpoint before it dies
    if args.kills > 1 and kinds.count("mid-write") < args.kills // 2:
        kinds[kinds.index("random", 1)] = "mid-write"

    print(f"# textgen crash benchmark: {args.kills} SIGKILLs, corpus {corpus} ({corpus.stat().st_size:,} bytes), "
          f"work dir {workdir}", flush=True)
    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start", flush=True)

    failures: list[str] = []
    records: list[dict] = []
    killed_pids: list[int] = []
    rates: list[float] = []
    startup_times: list[float] = []
    prev_step = -1
    pending: list[dict] = []  # kills whose next --resume (the next process that checkpoints) is unchecked
    t_begin = time.time()

    def fail(msg: str) -> None:
        failures.append(msg)
        print(f"  FAIL: {msg}", flush=True)

    def check_resume(watcher: Watcher, record: dict) -> None:
        """The process after a kill: first checkpoint beyond the kill's step, no leftovers, lock taken over."""
        record["resumed"] = watcher.first_ckpt_step is not None and watcher.first_ckpt_step > record["latest_step"]
        if not record["resumed"]:
            fail(f"kill {record['kill']}: the next --resume's first checkpoint is step {watcher.first_ckpt_step}, "
                 f"not > {record['latest_step']}")
        stale = [n for n in (watcher.leftovers_at_first or []) if pid_of(n) != watcher.pid]
        record["leftovers_after_resume"] = stale
        if stale:
            fail(f"kill {record['kill']}: temporaries of killed processes survived the resume: {stale}")
        record["lock_taken_over"] = watcher.lock_pid_at_first == watcher.pid
        if record["had_stale_lock"] and not record["lock_taken_over"]:
            fail(f"kill {record['kill']}: lock holds pid {watcher.lock_pid_at_first}, not the new process {watcher.pid}")

    for i in range(args.kills + 1):
        final = i == args.kills
        cmd = [*TEXTGEN, "train", str(corpus), "--run", "crash", *TINY, "--json"]
        cmd += ["--resume"] if i else []
        cmd += ["--epochs", "100000"] + (["--time-limit", "3"] if final else [])
        started = time.time()
        with open(workdir / "logs" / f"train-{i:02d}.out", "w") as out, \
                open(workdir / "logs" / f"train-{i:02d}.err", "w") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=workdir)
        watcher = Watcher(run_dir, proc.pid, started)

        if final:  # a graceful last run: must finish cleanly and leave nothing behind
            while proc.poll() is None:
                watcher.poll()
                time.sleep(0.01)
            for record in pending:
                check_resume(watcher, record)
            pending = []
            out_text = (workdir / "logs" / f"train-{i:02d}.out").read_text()
            final_ok = proc.returncode == 0
            try:
                summary = json.loads(out_text.strip().splitlines()[-1])
            except (ValueError, IndexError):
                summary, final_ok = {}, False
            if not final_ok or summary.get("step", -1) <= prev_step:
                fail(f"final --resume: exit {proc.returncode}, step {summary.get('step')} (previous {prev_step}); "
                     f"stderr: {(workdir / 'logs' / f'train-{i:02d}.err').read_text()[-500:]}")
            final_left = leftovers(run_dir)
            final_lock = (run_dir / checkpoints.LOCK).exists()
            if final_left or final_lock:
                fail(f"after the final graceful run: leftovers {final_left}, lock present: {final_lock}")
            break

        kind = kinds[i]
        tmp_seen: str | None = None
        if kind == "mid-write":
            # Kill during this process's n-th checkpoint write (n = 1..4): some land on the very
            # first write after a resume, some later.
            target = rng.randint(1, 4)
            suffix = f"-{proc.pid}"
            deadline = time.time() + 120
            last_poll = 0.0
            while time.time() < deadline and proc.poll() is None:
                hits = [e.name for e in os.scandir(run_dir) if e.name.startswith(".tmp-ckpt-")
                        and e.name.endswith(suffix)] if run_dir.is_dir() else []
                if hits and len(watcher.seen) >= target - 1:
                    tmp_seen = hits[0]
                    break
                if time.time() - last_poll > 0.02:
                    watcher.poll()
                    last_poll = time.time()
                time.sleep(0.0005)
            kill_at_delay = None
        else:
            # Random kills: half of them (and the first) at a random moment of training (0.2-3 s
            # after this process's first checkpoint), half at a random moment from process start
            # (TensorFlow import, set-up, restoring, the first steps, ...).
            in_training = i == 0 or rng.random() < 0.5
            if in_training:
                kind = "random-train"
                while watcher.first_ckpt_time is None and proc.poll() is None and time.time() - started < 300:
                    watcher.poll()
                    time.sleep(0.01)
                delay = time.time() - started + rng.uniform(0.2, 3.0)
            else:
                kind = "random-start"
                typical = statistics.median(startup_times) if startup_times else 6.0
                delay = rng.uniform(0.3, typical + 3.0)
            kill_at_delay = delay
            while time.time() - started < delay and proc.poll() is None:
                watcher.poll()
                time.sleep(0.01)
        kill_time = time.time()
        if proc.poll() is not None:
            fail(f"kill {i}: the training process had already exited with {proc.returncode} "
                 f"({(workdir / 'logs' / f'train-{i:02d}.err').read_text()[-300:]})")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        killed_pids.append(proc.pid)
        watcher.poll()
        if watcher.first_ckpt_time is not None:
            startup_times.append(watcher.first_ckpt_time - started)
        if watcher.first_ckpt_step is not None:
            for earlier in pending:
                check_resume(watcher, earlier)
            pending = []
        # else: this process died before its first checkpoint; the next one that writes one is checked

        record = {"kill": i, "kind": kind, "pid": proc.pid, "delay": kill_at_delay,
                  "since_start": kill_time - started, "tmp_seen": tmp_seen}
        left = leftovers(run_dir)
        record["tmp_left"] = [n for n in left if n.startswith(".tmp-ckpt-") and pid_of(n) == proc.pid]
        record["had_stale_lock"] = lock_pid(run_dir) == proc.pid
        # 1. the latest checkpoint loads and verifies
        try:
            ckpt = checkpoints.latest(run_dir)
            checkpoints.load_arrays(ckpt.path)
            checkpoints.load_arrays(ckpt.path, checkpoints.OPTIMIZER)
            record["load_ok"] = True
            record["latest_step"] = ckpt.step
            saved_at = float(ckpt.state["saved_at"])
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            record["load_ok"] = False
            record["latest_step"] = prev_step
            saved_at = None
            fail(f"kill {i}: latest checkpoint does not load: {e}")
        # 2. never backwards
        if record["latest_step"] < prev_step:
            fail(f"kill {i}: latest step went backwards: {record['latest_step']} < {prev_step}")
        # 3. sample
        sampled = subprocess.run([*TEXTGEN, "sample", "--run", "crash", "--length", "50", "--seed", str(i), "--json"],
                                 capture_output=True, text=True, env=env, cwd=workdir, timeout=300)
        try:
            sample = json.loads(sampled.stdout)
            record["sample_ok"] = (sampled.returncode == 0 and len(sample["samples"][0]["text"]) == 50
                                   and sample["step"] == record["latest_step"])
        except (ValueError, KeyError, IndexError):
            record["sample_ok"] = False
        if not record["sample_ok"]:
            fail(f"kill {i}: sample failed (exit {sampled.returncode}): {sampled.stderr.strip()[-300:]}")
        # 4. progress lost
        rate = watcher.rate(ckpt.state if record["load_ok"] else None)
        if rate:
            rates.append(rate)
        use_rate = rate or (statistics.median(rates) if rates else None)
        record["rate"] = use_rate
        if watcher.seen and saved_at is not None and use_rate:
            record["lost_est"] = max(0.0, (kill_time - saved_at) * use_rate)
        elif saved_at is not None and use_rate:
            # No checkpoint from this process: it trained < EVAL_EVERY steps since resuming.
            # (it can have done EVAL_EVERY steps if it died evaluating or writing its first one)
            record["lost_est"] = min(EVAL_EVERY, max(0.0, (kill_time - saved_at) * use_rate))
            record["lost_capped"] = True
        else:
            record["lost_est"] = None
        if tmp_seen and record["tmp_left"]:
            record["lost_exact"] = int(tmp_seen.split("-")[2]) - record["latest_step"]
        records.append(record)
        prev_step = max(prev_step, record["latest_step"])
        pending.append(record)
        where = (f"mid-write ({tmp_seen}{', left behind' if record['tmp_left'] else ', gone by the kill'})"
                 if kind == "mid-write" else f"{kind}, {record['since_start']:.2f} s after start")
        lost = "?" if record["lost_est"] is None else f"{record['lost_est']:.1f}"
        print(f"kill {i + 1:2d}/{args.kills}: {where}; latest ckpt step {record['latest_step']}, "
              f"load {'ok' if record['load_ok'] else 'FAIL'}, sample {'ok' if record['sample_ok'] else 'FAIL'}, "
              f"steps lost ~{lost}" + (f" (exact {record['lost_exact']})" if "lost_exact" in record else "")
              + (", checkpoint written by this process: none" if not watcher.seen else ""), flush=True)

    # ------------------------------------------------------------------ tally
    random_kills = sum(r["kind"].startswith("random") for r in records)
    random_train = sum(r["kind"] == "random-train" for r in records)
    mid = [r for r in records if r["kind"] == "mid-write"]
    mid_confirmed = sum(bool(r["tmp_left"]) for r in mid)
    lost = [r["lost_est"] for r in records if r["lost_est"] is not None]
    exact = [r["lost_exact"] for r in records if "lost_exact" in r]
    checked_resumes = [r for r in records if "resumed" in r]
    stale_locks = [r for r in records if r["had_stale_lock"]]
    taken_over = sum(1 for r in stale_locks if r.get("lock_taken_over"))
    leftover_after = sum(len(r.get("leftovers_after_resume", [])) for r in records)
    leftover_final = len(leftovers(run_dir))
    med_rate = statistics.median(rates) if rates else float("nan")
    print()
    print(f"# tally ({time.time() - t_begin:.0f} s, load average {os.getloadavg()[0]:.2f} at the end)")
    rows = [
        ("kills (SIGKILL)", f"{len(records)} ({random_kills} random / {len(mid)} mid-write)"),
        ("random kills during training / from process start", f"{random_train} / {random_kills - random_train}"),
        ("mid-write kills that left a .tmp-ckpt-* behind", f"{mid_confirmed} / {len(mid)}"),
        ("processes killed before writing a checkpoint", f"{sum(1 for r in records if r.get('lost_capped'))}"),
        ("successful loads (latest() + verify + arrays)", f"{sum(r['load_ok'] for r in records)} / {len(records)}"),
        ("successful samples (--length 50 --json)", f"{sum(r['sample_ok'] for r in records)} / {len(records)}"),
        ("successful resumes (first ckpt step > previous)",
         f"{sum(r['resumed'] for r in checked_resumes)} / {len(checked_resumes)}"),
        ("latest step never went backwards", "yes" if not any("backwards" in f for f in failures) else "NO"),
        ("final graceful --resume (exit 0, no temp, no lock)",
         "ok" if not any(f.startswith("final") or f.startswith("after the final") for f in failures) else "FAIL"),
        ("stale locks of killed processes taken over", f"{taken_over} / {len(stale_locks)}"),
        ("training rate (median, steps/s incl. evaluation)", f"{med_rate:.1f}"),
        ("steps lost per kill: max / median (estimated)",
         f"{max(lost):.1f} / {statistics.median(lost):.1f}" if lost else "n/a"),
        ("steps lost, mid-write kills: max / median (exact)",
         f"{max(exact)} / {statistics.median(exact):g}" if exact else "n/a"),
        ("checkpoint interval (--eval-every)", f"{EVAL_EVERY} steps"),
        ("leftover temporaries after a resume / at the end", f"{leftover_after} / {leftover_final}"),
        ("latest step reached", f"{prev_step}"),
        ("failed checks", f"{len(failures)}"),
    ]
    print_tally(rows, failures)
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def print_tally(rows: list, failures: list) -> None:
    """The table of (figure, value) rows, then any failed checks."""
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    if failures:
        print("\nFAILURES:")
        for f in failures:
            print(f"  - {f}")


if __name__ == "__main__":
    sys.exit(main())
