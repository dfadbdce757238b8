"""Crafted run directories crash nothing: a clean load or one CheckpointError line, never a
traceback, a hang or a signal (issue 30, must have 3).

A real tiny run (conftest's `tiny_run`) is copied and damaged by the mutations of
tests/crafted.py — truncations, flipped bytes, wrong shapes and dtypes, missing weights, NaN,
zip bombs and lying npz headers, links out of the run and to /dev/zero, FIFOs, manifests and
run.json / state.json of the wrong types, huge sparse files — then loaded by `load_run` (what the
CLI and the server both use) and, for fixed cases, by `textgen sample` in a subprocess.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
from pathlib import Path

import crafted
import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textgen import checkpoints
from textgen.errors import CheckpointError
from textgen.generation.loading import load_run

LOAD_SECONDS = 10  # far above the target (< 2 s each): a load that takes this long is a hang


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"load_run did not return within {LOAD_SECONDS} s")


def load_within(run: Path, which: str = "latest", use_previous: bool = False) -> None:
    """`load_run` under a timer (a hang fails the test), then every id stepped through the engine."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, LOAD_SECONDS)
    try:
        info, ckpt, engine = load_run(run, which, use_previous=use_previous, threads=1)
        state = engine.initial_state(2, threads=1)
        for i in range(len(info["vocab"])):
            logits = engine.step(np.full(2, i), state)
        state.close()
        assert logits.shape == (2, len(info["vocab"])) and np.isfinite(logits).all()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_or_refuse(run: Path, which: str = "latest", use_previous: bool = False) -> str:
    """"loaded" or "refused" (one CheckpointError line); anything else fails the test."""
    try:
        load_within(run, which, use_previous)
        return "loaded"
    except CheckpointError as e:
        message = str(e)
        assert message and "\n" not in message, message
        return "refused"


def fresh_run(source: Path, parent: Path) -> Path:
    """A copy of the trained run in a new directory under `parent` (its ./tiny)."""
    run = Path(tempfile.mkdtemp(dir=parent)) / "tiny"
    shutil.copytree(source, run, symlinks=True)
    return run


def newest_resealed() -> random.Random:
    """A Random whose mutations damage the newest checkpoint and always re-seal it: the deeper checks are reached."""
    rng = random.Random(0)
    rng.random = lambda: 0.0
    return rng


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return fresh_run(tiny_run.run, tmp_path)


# ----------------------------------------------------------------------------- property test


@pytest.mark.slow
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=st.lists(st.sampled_from(sorted(crafted.MUTATIONS)), min_size=1, max_size=3),
       rng=st.randoms(use_true_random=False), which=st.sampled_from(["latest", "best", "by name"]),
       use_previous=st.booleans())
def test_any_crafted_run_loads_cleanly_or_is_refused_in_one_line(tiny_run, tmp_path, names, rng, which,
                                                                  use_previous):
    run = fresh_run(tiny_run.run, tmp_path)
    try:
        crafted.craft(run, rng, names)
        if which == "by name":
            found = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
            which = rng.choice(found) if found else "latest"
        event(load_or_refuse(run, which, use_previous))
    finally:
        shutil.rmtree(run.parent, ignore_errors=True)


# ----------------------------------------------------------------------------- fixed cases, in process

REFUSED = [  # (mutation, its arguments, a fragment of the one-line message)
    ("weight_shape", {"key": "embedding/embeddings", "shape": (1, 8)}, "'embedding/embeddings' must be a float array"),
    ("weight_shape", {"key": "logits/bias", "shape": (0,)}, "'logits/bias' must be a float array of shape (36,)"),
    ("weight_dtype", {"dtype": "object"}, "must hold numbers"),
    ("weight_dtype", {"dtype": "int32"}, "must be a float array"),
    ("weight_dtype", {"dtype": "U4"}, "must hold numbers"),
    ("npz_crafted", {"kind": "bomb"}, "zip bomb"),
    ("npz_crafted", {"kind": "declared_size"}, "is stored but declares"),
    ("npz_crafted", {"kind": "huge_shape"}, "declares shape (1000000000000, 1000000000000)"),
    ("npz_crafted", {"kind": "deep_header"}, "weights.npz"),
    ("npz_crafted", {"kind": "many_members"}, "more than the 4,096 allowed"),
    ("npz_crafted", {"kind": "encrypted"}, "is encrypted"),
    ("npz_crafted", {"kind": "lzma"}, "compression method 14"),
    ("npz_crafted", {"kind": "data_short"}, "but its member holds"),
    ("npz_crafted", {"kind": "twice"}, "appears twice"),
    ("npz_crafted", {"kind": "not_npy"}, "'../../evil.sh' is not an array"),
    ("special_file", {"name": "weights.npz", "kind": "/dev/zero"}, "weights.npz: it is a symbolic link"),
    ("special_file", {"name": "weights.npz", "kind": "fifo"}, "weights.npz: it is a FIFO"),
    ("special_file", {"name": "state.json", "kind": "outside"}, "state.json: it is a symbolic link"),
    ("special_file", {"name": "manifest.json", "kind": "fifo"}, "manifest.json is unreadable: it is a FIFO"),
    ("special_file", {"name": "run.json", "kind": "/dev/zero"}, "run.json' is damaged"),
    ("special_file", {"name": "run.json", "kind": "fifo"}, "it is a FIFO, not a regular file"),
    ("manifest_json", {"value": {"files": {}}}, "must name at least weights.npz and state.json"),
    ("manifest_json", {"value": {"files": []}}, "must name at least weights.npz and state.json"),
    ("manifest_json", {"value": {"files": {"/dev/zero": "0" * 64, "weights.npz": "0" * 64, "state.json": "0" * 64}}},
     "names '/dev/zero'"),
    ("manifest_json", {"value": {"files": {"../run.json": "0" * 64, "weights.npz": "0" * 64,
                                           "state.json": "0" * 64}}}, "names '../run.json'"),
    ("run_json", {"change": "vocab_dict"}, "'vocab' must be a list"),
    ("run_json", {"change": "vocab_multi"}, "must be one character. Received: 'ab'"),
    ("run_json", {"change": "vocab_duplicate"}, "more than once"),
    ("run_json", {"change": "model_size"}, "run.json"),
    ("run_json", {"change": "vocab_longer"}, "must be a float array of shape (37, 8) (from run.json)"),
]


@pytest.mark.parametrize("mutation, arguments, fragment", REFUSED,
                         ids=[f"{m}-{'-'.join(map(str, a.values()))}"[:60] for m, a, _ in REFUSED])
def test_a_crafted_run_is_refused_with_a_clear_line(run, mutation, arguments, fragment):
    crafted.MUTATIONS[mutation](run, newest_resealed(), **arguments)
    with pytest.raises(CheckpointError) as caught:
        load_within(run)
    message = str(caught.value)
    assert fragment in message and "\n" not in message, message


def test_valid_variants_of_the_npz_format_still_load(run):
    for kind in ("fortran", "big_endian", "compressed"):
        crafted.npz_crafted(run, newest_resealed(), kind=kind)
        assert load_or_refuse(run) == "loaded", kind


def test_refusals_reach_the_caller_as_checkpoint_errors(run):
    """`load_or_refuse` returns "refused" for a CheckpointError: the check the property test relies on."""
    (run / "run.json").write_text('{"model": 3}', encoding="utf-8")
    assert load_or_refuse(run) == "refused"
    with pytest.raises(CheckpointError, match="'model' must be an object. Received: 3"):
        load_run(run)


# ----------------------------------------------------------------------------- checkpoint names


def test_checkpoints_past_step_99_999_999_are_found_in_step_order(tmp_path):
    weights = {"w": np.arange(3.0)}
    for step in (99_999_999, 100_000_000, 100_000_001):
        checkpoints.save(tmp_path, step, weights, None, {"step": step, "history": []}, best=True)
    # Pruning keeps the newest two by step (sorted by name, it would have kept ckpt-99999999).
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["ckpt-100000000", "ckpt-100000001"]
    assert checkpoints.latest(tmp_path).step == 100_000_001
    assert checkpoints.best(tmp_path).step == 100_000_001
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("best-")) == ["best-100000001"]


def test_old_eight_digit_names_and_manifests_without_sizes_still_load(run):
    newest = checkpoints.list_checkpoints(run)[-1]
    assert len(newest.name) == len("ckpt-") + 8
    manifest = crafted.json.loads((newest / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("bytes", None)  # written before sizes were recorded
    (newest / "manifest.json").write_text(crafted.json.dumps(manifest), encoding="utf-8")
    assert load_or_refuse(run) == "loaded"
    renamed = newest.rename(run / "ckpt-123456789")
    info, ckpt, engine = load_run(run)
    assert ckpt.path == renamed


# ----------------------------------------------------------------------------- the CLI


CLI_CASES = [
    ("special_file", {"name": "weights.npz", "kind": "fifo"}, "FIFO"),
    ("special_file", {"name": "weights.npz", "kind": "/dev/zero"}, "symbolic link"),
    ("special_file", {"name": "run.json", "kind": "/dev/zero"}, "run.json"),
    ("npz_crafted", {"kind": "bomb"}, "zip bomb"),
    ("weight_shape", {"key": "embedding/embeddings", "shape": (1, 8)}, "embedding/embeddings"),
    ("manifest_json", {"value": {"files": []}}, "manifest.json"),
    ("run_json", {"change": "vocab_ints"}, "vocab[0]"),
]


@pytest.mark.slow
@pytest.mark.parametrize("mutation, arguments, fragment", CLI_CASES,
                         ids=[f"{m}-{'-'.join(map(str, a.values()))}"[:60] for m, a, _ in CLI_CASES])
def test_textgen_sample_refuses_a_crafted_run_in_one_line(run, mutation, arguments, fragment):
    crafted.MUTATIONS[mutation](run, newest_resealed(), **arguments)
    result = run_cli("sample", "--checkpoints", run.parent, "--run", "tiny", "--length", "5", timeout=60)
    assert_one_line_error(result, fragment)
