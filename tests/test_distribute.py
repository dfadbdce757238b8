"""`--strategy`: tf.distribute trains the same model as one device, and only the chief writes.

Mirrored runs on two logical CPU devices (TEXTGEN_CPU_REPLICAS=2) and multi-worker on two real
worker processes talking gRPC on 127.0.0.1; each is a `python -m textgen train` subprocess
(a strategy must be created before TensorFlow starts). Their validation losses must match a
one-device run with the same global batch (no dropout, so the arithmetic is the same up to the
order of the all-reduce), and resume must continue exactly under every strategy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import TINY_TEXT, free_port, ok, run_cli

from textgen import checkpoints

MODEL = ["--layers", "2", "--units", "16", "--embedding-dim", "8", "--dropout", "0"]  # explicit: a small corpus would get dropout
# Constant rate: these runs are resumed with more --epochs, which would stretch a cosine schedule.
TRAIN = ["--seq-len", "16", "--batch-size", "8", "--eval-chars", "200", "--learning-rate", "0.01",
         "--eval-every", "5", "--lr-schedule", "constant"]
TWO_CPUS = {"TEXTGEN_CPU_REPLICAS": "2"}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT * 12, encoding="utf-8")
    return path


def summary_of(result) -> dict:
    """The JSON summary a successful `textgen train --json` ends its stdout with."""
    return json.loads(ok(result).stdout.strip().splitlines()[-1])


def curve(root, run):
    state = checkpoints.latest(root / run).state
    return [(r["step"], r["val_loss"]) for r in state["history"]]


def assert_same_curve(a, b, tol=1e-5):
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 3
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= tol, (a, b)
    assert a[-1][1] < a[0][1], "the model learns"


def train_two_workers(corpus, roots, *extra, timeout=240):
    """Start worker 0 (chief) and worker 1 of one cluster; return both JSON summaries."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index, root in enumerate(roots):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TEXTGEN_CHECKPOINTS=str(root))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "textgen", "train", str(corpus), "--run", "mw", "--strategy", "multi-worker",
             *MODEL, *TRAIN, "--json", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(summary_of(subprocess.CompletedProcess(p.args, p.returncode, out, err)))
    finally:
        for p in procs:
            p.kill()
    return results


@pytest.mark.slow
def test_mirrored_on_two_devices_matches_one_device_and_resumes_across_strategies(corpus, tmp_path):
    root = tmp_path / "checkpoints"
    one = summary_of(run_cli("train", corpus, "--run", "one", "--strategy", "one-device", *MODEL, *TRAIN, "--epochs", "2", "--json"))
    assert one["strategy"] == "one device"
    mirrored = summary_of(run_cli("train", corpus, "--run", "mirrored", "--strategy", "mirrored", *MODEL, *TRAIN,
                          "--epochs", "2", "--json", env=TWO_CPUS))
    assert mirrored["strategy"] == "mirrored, 2 replicas" and mirrored["step"] == one["step"]
    assert_same_curve(curve(root, "one"), curve(root, "mirrored"))
    # The checkpoint format does not depend on the strategy: continue the one-device run mirrored.
    summary_of(run_cli("train", corpus, "--run", "one", "--resume", "--strategy", "mirrored", "--epochs", "3", "--json", env=TWO_CPUS))
    straight = summary_of(run_cli("train", corpus, "--run", "straight", "--strategy", "one-device", *MODEL, *TRAIN,
                          "--epochs", "3", "--json"))
    assert straight["step"] == 3 * one["step"] // 2
    assert_same_curve(curve(root, "straight"), curve(root, "one"))


@pytest.mark.slow
def test_multi_worker_two_processes_match_one_process_only_chief_writes_and_resume(corpus, tmp_path):
    shared, private = tmp_path / "shared", tmp_path / "worker1"
    chief, worker = train_two_workers(corpus, [shared, private], "--epochs", "2")
    assert chief["chief"] and not worker["chief"] and worker["strategy"].endswith("(worker 1)")
    assert chief["val_loss"] == pytest.approx(worker["val_loss"], abs=1e-9), "workers hold the same model"
    assert not private.exists(), "only the chief writes"
    assert checkpoints.list_checkpoints(shared / "mw")
    single = tmp_path / "single"
    summary_of(run_cli("train", corpus, "--run", "mw", "--strategy", "one-device", *MODEL, *TRAIN, "--epochs", "2",
               "--json", env={"TEXTGEN_CHECKPOINTS": str(single)}))
    assert_same_curve(curve(single, "mw"), curve(shared, "mw"))
    # Resume: both workers read the chief's checkpoint from the shared directory.
    chief, worker = train_two_workers(corpus, [shared, shared], "--resume", "--epochs", "3")
    summary_of(run_cli("train", corpus, "--run", "mw", "--resume", "--epochs", "3", "--json",
               env={"TEXTGEN_CHECKPOINTS": str(single)}))
    assert chief["step"] == worker["step"] == checkpoints.latest(single / "mw").state["step"]
    assert_same_curve(curve(single, "mw"), curve(shared, "mw"))


@pytest.mark.slow
def test_multi_worker_fits_one_schedule_to_the_time_limit(corpus, tmp_path):
    # Each worker measures its own speed; they must agree on one schedule, or their weights part.
    root = tmp_path / "shared"
    # 20 s: the time limit counts the multi-worker step's compilation, which alone took 8 s on a
    # loaded 2-core machine (the run then made 1 step and proved nothing).
    chief, worker = train_two_workers(corpus, [root, root], "--lr-schedule", "cosine", "--time-limit", "20",
                                      "--epochs", "10000")
    # The worker whose clock runs out first stops both; the other reports "another worker stopped".
    assert "time_limit" in (chief["stopped"], worker["stopped"]) and chief["step"] == worker["step"]
    assert {chief["stopped"], worker["stopped"]} <= {"time_limit", "another worker stopped"}
    assert chief["learning_rate"] == worker["learning_rate"] < 0.01 * 0.5, (chief, worker)
    assert chief["val_loss"] == pytest.approx(worker["val_loss"], abs=1e-9)
    # The decay was fitted to the steps the time limit allowed (however few a loaded machine makes),
    # not left at the 10,000 epochs: the run ended within a factor of 2 of the fitted length.
    fitted = checkpoints.latest(root / "mw").state["fitted_decay_steps"]
    assert fitted is not None and chief["step"] / 2 <= fitted <= 2 * chief["step"], (fitted, chief["step"])


@pytest.mark.slow
@pytest.mark.parametrize("args, env, message", [
    (["--strategy", "sideways"], {}, "--strategy must be one of"),
    (["--strategy", "mirrored", "--batch-size", "7"], TWO_CPUS, "multiple of the 2 replicas"),
    (["--strategy", "multi-worker"], {"TF_CONFIG": ""}, "TF_CONFIG"),
    (["--strategy", "multi-worker"], {"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid"),
    (["--strategy", "mirrored"], {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, "needs KERAS_BACKEND=tensorflow"),
    (["--strategy", "mirrored"], {"TEXTGEN_CPU_REPLICAS": "two"}, "TEXTGEN_CPU_REPLICAS"),
])
def test_strategy_errors_are_one_line_and_leave_no_run(corpus, tmp_path, args, env, message):
    result = run_cli("train", corpus, "--run", "bad", *MODEL, "--seq-len", "16", "--eval-chars", "200", *args, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error:"), result.stderr[-2000:]
    assert message in lines[0]
    assert not (tmp_path / "checkpoints" / "bad").exists()
