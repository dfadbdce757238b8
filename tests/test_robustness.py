"""Nothing lost: kill -9, write failures, one writer per run, safe loading, fuzzed inputs."""

from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_TRAIN, run_cli, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from textgen import checkpoints
from textgen.cli import app

runner = CliRunner()


def start_training(corpus, run, *extra, preexec=None):
    args = [sys.executable, "-m", "textgen", "train", str(corpus), "--run", run, *TINY_TRAIN, *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def kill_during_a_checkpoint_write(proc, run_dir: Path, tries: int = 50) -> Path:
    """SIGKILL `proc` while it writes a checkpoint, provably: when its temporary directory appears,
    stop the process (SIGSTOP); if the temporary is still there, the process is frozen inside the
    write and dies there (else the write had finished: let it go on to its next checkpoint).
    Returns the temporary the kill left behind."""
    pattern = f".tmp-ckpt-*-{proc.pid}"
    for _ in range(tries):
        wait_until(lambda: list(run_dir.glob(pattern)), what=f"a checkpoint write to start ({pattern})",
                   timeout=60, interval=0.001, process=proc)
        proc.send_signal(signal.SIGSTOP)
        left = list(run_dir.glob(pattern))
        if left:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert left[0].is_dir(), "the temporary of the interrupted write is left behind"
            return left[0]
        proc.send_signal(signal.SIGCONT)
    raise AssertionError(f"no kill landed inside a checkpoint write in {tries} tries")


@pytest.mark.slow
def test_kill_9_three_times_then_everything_still_works(tiny_corpus):
    """SIGKILL a training process at random moments, one of them provably mid-checkpoint-write."""
    run_dir = Path("checkpoints") / "crash"
    rng = random.Random(1)
    reached = 0
    for attempt in range(3):
        extra = ["--epochs", "1000", "--eval-every", "5", "--eval-chars", "300"]
        proc = start_training(tiny_corpus, "crash", *(extra + (["--resume"] if attempt else [])))
        past = f"ckpt-{reached:08d}"
        wait_until(lambda: checkpoints.list_checkpoints(run_dir), lambda found, past=past: found and found[-1].name > past,
                   what=f"a checkpoint past {past}", timeout=120, process=proc)
        if attempt == 1:
            kill_during_a_checkpoint_write(proc, run_dir)
        else:
            time.sleep(rng.uniform(0.2, 2.0))  # the random moment of the kill (any moment must be safe)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        ckpt = checkpoints.latest(run_dir)  # loads and verifies every file
        assert ckpt.step >= reached, "a kill never loses a completed checkpoint"
        reached = ckpt.step
        sampled = run_cli("sample", "--run", "crash", "--length", "20", "--seed", "1", "--json")
        assert sampled.returncode == 0, sampled.stderr
        assert len(json.loads(sampled.stdout)["samples"][0]["text"]) == 20
    resumed = run_cli("train", tiny_corpus, "--run", "crash", "--resume", "--epochs", "1000",
                      "--time-limit", "1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["step"] > reached
    assert not list(run_dir.glob(".tmp-*")), "no leftover temporary directory"
    assert not (run_dir / "lock").exists()


@pytest.mark.slow
def test_one_writer_per_run_and_stale_lock_takeover(tiny_corpus):
    run_dir = Path("checkpoints") / "busy"
    proc = start_training(tiny_corpus, "busy", "--epochs", "1000", "--eval-every", "50")
    try:
        wait_until(lambda: (run_dir / "lock").exists() and (run_dir / "run.json").exists(), timeout=120, process=proc)
        second = runner.invoke(app, ["train", str(tiny_corpus), "--run", "busy", "--resume"])
        assert second.exit_code == 1
        assert f"being trained by process {proc.pid}" in second.stderr
        wait_until(lambda: checkpoints.list_checkpoints(run_dir), timeout=120, process=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert json.loads((run_dir / "lock").read_text())["pid"] == proc.pid  # stale lock left behind
    result = runner.invoke(app, ["train", str(tiny_corpus), "--run", "busy", "--resume", "--time-limit", "1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert not (run_dir / "lock").exists()


@pytest.mark.slow
def test_write_failure_keeps_the_previous_checkpoint(tiny_corpus):
    first = run_cli("train", tiny_corpus, "--run", "full", *TINY_TRAIN, "--epochs", "1", "--eval-every", "10",
                    "--json")
    assert first.returncode == 0, first.stderr
    run_dir = Path("checkpoints") / "full"
    before = checkpoints.latest(run_dir)
    files_before = {p.name: p.read_bytes() for p in before.path.iterdir()}
    size = max(p.stat().st_size for p in before.path.iterdir())

    def limit():  # every file written by the child is capped below a checkpoint's size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    proc = start_training(tiny_corpus, "full", "--resume", "--epochs", "2", "--json", preexec=limit)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "Could not write the checkpoint" in lines[0] and "File too large" in lines[0]
    assert f"{before.path.name} is intact" in lines[0]
    after = checkpoints.latest(run_dir)
    assert after.path == before.path
    assert {p.name: p.read_bytes() for p in after.path.iterdir()} == files_before
    assert not list(run_dir.glob(".tmp-*"))
    assert run_cli("sample", "--run", "full", "--length", "5").returncode == 0


@pytest.mark.slow
def test_checkpoints_hold_no_pickles(tiny_corpus):
    run_cli("train", tiny_corpus, "--run", "safe", *TINY_TRAIN, "--epochs", "1", "--eval-every", "10")
    run_dir = Path("checkpoints") / "safe"
    for npz in run_dir.rglob("*.npz"):
        with np.load(npz, allow_pickle=False) as data:  # raises if any entry needs pickle
            for key in data.files:
                assert data[key].dtype != object
    # A pickle smuggled into a checkpoint is refused, not executed.
    ckpt = checkpoints.latest(run_dir)
    np.savez(ckpt.path / "weights.npz", evil=np.array([{"x": 1}], dtype=object))
    result = runner.invoke(app, ["sample", "--run", "safe"])
    assert result.exit_code == 1 and "damaged" in result.stderr


@pytest.mark.slow
def test_damaged_newest_checkpoint_offers_the_previous_one(tiny_corpus):
    run_cli("train", tiny_corpus, "--run", "two", *TINY_TRAIN, "--epochs", "1", "--eval-every", "5")
    run_dir = Path("checkpoints") / "two"
    older, newest = checkpoints.list_checkpoints(run_dir)[-2:]
    (newest / "optimizer.npz").write_bytes(b"garbage")
    result = runner.invoke(app, ["sample", "--run", "two", "--length", "5"])
    assert result.exit_code == 1
    assert "optimizer.npz" in result.stderr and older.name in result.stderr and "--use-previous" in result.stderr
    result = runner.invoke(app, ["sample", "--run", "two", "--length", "5", "--use-previous", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"] == older.name
    assert "damaged" in result.stderr  # said, never silent
    result = runner.invoke(app, ["train", str(tiny_corpus), "--run", "two", "--resume", "--use-previous",
                                 "--time-limit", "1", "--json"])
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- fuzzing

def fuzz(max_examples):
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_clean(result, allowed=(0, 1, 2)):
    assert result.exit_code in allowed, result.output
    assert "Traceback" not in result.output, result.output
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)


@pytest.mark.slow
@fuzz(150)
@given(data=st.binary(min_size=0, max_size=600), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_fuzz_prepare_random_bytes(tmp_path, data, encoding):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    assert_clean(runner.invoke(app, ["prepare", str(path), "--encoding", encoding, "--json"]))


@pytest.mark.slow
@fuzz(12)
@given(data=st.binary(min_size=0, max_size=400))
def test_fuzz_train_random_bytes(tmp_path, data):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    result = runner.invoke(app, ["train", str(path), "--run", f"f{abs(hash(data))}", "--layers", "1", "--units", "4",
                                 "--embedding-dim", "2", "--seq-len", "4", "--batch-size", "2", "--epochs", "1",
                                 "--eval-chars", "50", "--json"])
    assert_clean(result)


@pytest.mark.slow
@fuzz(200)
@given(prime=st.text(max_size=40))
def test_fuzz_prime_text(tiny_run, prime):
    result = runner.invoke(app, ["sample", "--checkpoints", str(tiny_run.checkpoints), "--prime", prime, "--length", "3",
                                 "--seed", "1", "--json"])
    assert_clean(result)
    if result.exit_code == 0:
        assert json.loads(result.stdout)["prime"] == prime


option_value = st.one_of(st.integers(-5, 50).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                         st.text(max_size=6))


@pytest.mark.slow
@fuzz(200)
@given(temperature=option_value, top_k=option_value, top_p=option_value, length=option_value,
       num_samples=st.one_of(st.integers(-2, 4).map(str), st.text(max_size=3)))
def test_fuzz_sample_options(tiny_run, temperature, top_k, top_p, length, num_samples):
    result = runner.invoke(app, ["sample", "--checkpoints", str(tiny_run.checkpoints), "--temperature", temperature,
                                 "--top-k", top_k, "--top-p", top_p, "--length", length,
                                 "--num-samples", num_samples, "--json"])
    assert_clean(result)


@pytest.mark.slow
@fuzz(15)
@given(values=st.fixed_dictionaries({
    "--layers": st.sampled_from(["1", "0", "-1", "x", "1.5"]),
    "--units": st.sampled_from(["4", "0", "-3", "", "nan"]),
    "--seq-len": st.sampled_from(["4", "0", "100000", "abc"]),
    "--dropout": st.sampled_from(["0", "0.5", "1", "-0.1", "nan"]),
    "--learning-rate": st.sampled_from(["0.01", "0", "-1", "inf", "nan"]),
    "--val-fraction": st.sampled_from(["0.1", "0", "1", "2", "nan"]),
}))
def test_fuzz_train_options(tiny_corpus, values):
    args = ["train", str(tiny_corpus), "--embedding-dim", "2", "--batch-size", "2", "--epochs", "1",
            "--time-limit", "1", "--eval-chars", "50", "--json"]
    for key, value in values.items():
        args += [key, value]
    assert_clean(runner.invoke(app, args))


@pytest.mark.slow
def test_run_killed_before_its_first_checkpoint_can_resume(tiny_corpus):
    proc = start_training(tiny_corpus, "early", "--epochs", "1000", "--eval-every", "100000",
                          "--checkpoint-seconds", "3600")
    run_dir = Path("checkpoints") / "early"
    wait_until(lambda: (run_dir / "run.json").exists(), timeout=120, process=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not checkpoints.list_checkpoints(run_dir)
    result = runner.invoke(app, ["train", str(tiny_corpus), "--run", "early", "--resume", "--time-limit", "1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["step"] > 0 and checkpoints.latest(run_dir).step == summary["step"]


def test_best_is_replaced_atomically(tmp_path):
    weights = {"w": np.arange(3.0)}
    for step in (10, 20):
        checkpoints.save(tmp_path, step, weights, None, {"step": step, "history": []}, best=True)
    (tmp_path / ".tmp-best-00000030-999").mkdir()  # a write that died before its rename
    best = checkpoints.best(tmp_path)
    assert best.step == 20
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("best-")) == ["best-00000020"]
    checkpoints.clean_temporaries(tmp_path)
    assert not list(tmp_path.glob(".tmp-*")) and checkpoints.best(tmp_path).step == 20


def test_damaged_newest_checkpoint_message_is_two_sentences(tmp_path):
    weights = {"w": np.arange(4.0)}
    for step in (10, 20):
        checkpoints.save(tmp_path, step, weights, None, {"step": step, "history": []})
    newest = tmp_path / "ckpt-00000020"
    (newest / "weights.npz").write_bytes((newest / "weights.npz").read_bytes()[:-7])
    with pytest.raises(checkpoints.CheckpointError) as caught:
        checkpoints.latest(tmp_path)
    assert str(caught.value) == (
        f"Checkpoint {str(newest)!r} is damaged: weights.npz does not match its SHA-256 (truncated or modified). "
        "An older good checkpoint exists (ckpt-00000010); pass --use-previous to load it."
    )
    assert checkpoints.latest(tmp_path, use_previous=True).step == 10
