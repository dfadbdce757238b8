"""Crafted checkpoints arriving by hot reload (issue 30): a served run is handed forged ones.

    python benchmarks/crafted_reload.py [--checkpoints 200] [--seed 0] [--workdir DIR]

Trains the tiny run of benchmarks/crafted_runs.py and serves it (`textgen serve
--reload-seconds 0.1`). Then, for each seed: a copy of the run is damaged by one to three
mutations of tests/crafted.py (as crafted_runs.py draws them), its newest checkpoint directory is
renamed into the served run as the next `ckpt-<step>` (what a trainer or a download would do),
and the benchmark waits for the server to say what it did with it ("now serving" or "Not
loading"; nothing within --hang-seconds is a hang). After each one, a completion must answer 200
and /health must stay 200. Mutations of run.json do not travel (only the checkpoint does).

At the end: the server still running, no traceback in its log, every request answered 200.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import common
import httpx
from crafted_runs import cpu_model, train
from serve_common import ServerProcess

sys.path.insert(0, str(common.REPO / "tests"))


def newest_checkpoint(run: Path) -> Path | None:
    """The crafted copy's newest checkpoint directory (a real directory, not a link), if any."""
    if not run.is_dir() or run.is_symlink():
        return None
    found = sorted(p for p in run.iterdir() if p.name.startswith("ckpt-") and p.is_dir() and not p.is_symlink())
    return found[-1] if found else None


def wait_verdict(log: Path, name: str, timeout: float) -> str:
    """'served', 'refused' or 'hang': what the server's log says of checkpoint `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(rf"now serving {re.escape(name)}\b", text) or re.search(rf"Loaded \S+: {re.escape(name)}\b", text):
            return "served"
        if f"Not loading tiny/{name}" in text:
            return "refused"
        time.sleep(0.02)
    return "hang"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    import crafted

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crafted-reload-"))
    workdir.mkdir(parents=True, exist_ok=True)
    begin = time.time()
    print(f"# textgen crafted checkpoints by hot reload: {args.checkpoints}, seed {args.seed}, work dir {workdir}")
    print(f"# machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start",
          flush=True)
    source = train(workdir)
    pristine = workdir / "pristine"
    shutil.copytree(source, pristine)
    log = workdir / "server.log"
    server = ServerProcess(source.parent, "tiny", ["--reload-seconds", "0.1"], log=log)
    verdicts, answers, health, problems, seconds = Counter(), Counter(), Counter(), [], []
    try:
        for i in range(args.checkpoints):
            rng = random.Random(args.seed * 1_000_003 + i)
            names = rng.sample(sorted(crafted.MUTATIONS), rng.randint(1, 3))
            home = workdir / "crafted" / str(i)
            shutil.rmtree(home, ignore_errors=True)
            run = home / "tiny"
            shutil.copytree(pristine, run)
            crafted.craft(run, rng, names)
            ckpt = newest_checkpoint(run)
            if ckpt is None:
                verdicts["no checkpoint left to send"] += 1
                shutil.rmtree(home, ignore_errors=True)
                continue
            name = f"ckpt-{10_000 + i:08d}"
            started = time.monotonic()
            os.rename(ckpt, source / name)
            verdict = wait_verdict(log, name, args.hang_seconds)
            seconds.append(time.monotonic() - started)
            verdicts[verdict] += 1
            if verdict == "hang":
                problems.append(f"checkpoint {i} {names}: no verdict within {args.hang_seconds} s")
            answer = httpx.post(server.url + "/v1/completions", timeout=30,
                                json={"model": "tiny", "prompt": "O", "max_tokens": 20, "seed": i})
            answers[answer.status_code] += 1
            status = httpx.get(server.url + "/health", timeout=10).status_code
            health[status] += 1
            if answer.status_code != 200 or status != 200:
                problems.append(f"checkpoint {i} {names} ({verdict}): completion {answer.status_code}, "
                                f"health {status}: {answer.text[:300]}")
            if server.process.poll() is not None:
                problems.append(f"checkpoint {i} {names}: the server exited with {server.process.returncode}")
                break
            if verdict == "refused":
                shutil.rmtree(source / name, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
            if (i + 1) % 50 == 0:
                print(f"# {i + 1} checkpoints, {dict(verdicts)}", flush=True)
    finally:
        code = server.stop()
    text = log.read_text(errors="replace")
    tracebacks = text.count("Traceback")
    seconds.sort()
    print(f"# tally ({time.time() - begin:.0f} s, load average {os.getloadavg()[0]:.2f} at the end)")
    rows = [
        ("crafted checkpoints sent by hot reload", sum(verdicts.values())),
        ("  served (loaded cleanly)", verdicts["served"]),
        ("  refused with one log line", verdicts["refused"]),
        ("  no checkpoint left after the mutations", verdicts["no checkpoint left to send"]),
        ("  hangs (no verdict within --hang-seconds)", verdicts["hang"]),
        ("  verdict time: median / max", f"{seconds[len(seconds) // 2]:.2f} s / {seconds[-1]:.2f} s" if seconds else "-"),
        ("completions after each: 200 / other", f"{answers[200]} / {sum(answers.values()) - answers[200]}"),
        ("/health after each: 200 / other", f"{health[200]} / {sum(health.values()) - health[200]}"),
        ("tracebacks in the server's log", tracebacks),
        ("server's exit status (SIGTERM at the end)", code),
    ]
    for label, value in rows:
        print(f"| {label:<45} | {value} |")
    for problem in problems:
        print(f"PROBLEM {problem}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems or tracebacks or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
