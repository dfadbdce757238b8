"""SavedModel export: TF Serving layout, step / initial_state / metadata signatures, loads with
tf.saved_model.load and agrees with the numpy engine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import FORCED, PRIME, export, forced_log_probs, greedy_sample, run_engine, run_snippet

from textgen.generation.draw import log_softmax

pytestmark = pytest.mark.slow  # trains a run, starts subprocesses, imports TensorFlow


@pytest.fixture(scope="module")
def exported(two_layer_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("savedmodel") / "shakespeare_savedmodel"
    return path, export(two_layer_run, "--format", "savedmodel", "--output", path)


@pytest.fixture(scope="module")
def loaded(exported):
    import tensorflow as tf

    return tf, tf.saved_model.load(str(exported[0] / "1"))


def test_layout_is_tf_servings_with_metadata_in_assets_and_attributes(exported, loaded, two_layer_run):
    path, result = exported
    assert sorted(p.name for p in path.iterdir()) == ["1"]
    assert (path / "1" / "saved_model.pb").is_file() and (path / "1" / "variables").is_dir()
    asset = json.loads((path / "1" / "assets" / "textgen.json").read_text(encoding="utf-8"))
    vocab = two_layer_run.vocab
    assert asset["vocab"] == vocab and asset["run"] == "tiny" and asset["start_id"] == vocab.index("\n")
    tf, model = loaded
    assert json.loads(model.metadata_json.numpy()) == asset
    assert [c.decode("utf-8") for c in model.signatures["metadata"]()["vocab"].numpy()] == vocab
    assert {"serving_default", "step", "initial_state", "metadata"} <= set(model.signatures)
    assert result["serving_version"].endswith("/1") and result["check_max_abs_diff"] <= 1e-4


def test_signatures_follow_the_step_contract(loaded, two_layer_run):
    tf, model = loaded
    state = model.signatures["initial_state"](batch_size=tf.constant(3))["state"]
    assert state.shape == (2, 2, 3, 16) and float(tf.reduce_max(tf.abs(state))) == 0.0
    out = model.signatures["serving_default"](ids=tf.constant([0, 1, 2], tf.int64), state=state)
    assert out["logits"].shape == (3, len(two_layer_run.vocab)) and out["new_state"].shape == state.shape
    spec = model.signatures["step"].structured_input_signature[1]
    assert spec["ids"].dtype == tf.int64 and spec["state"].shape.as_list() == [2, 2, None, 16]


def test_teacher_forced_log_probs_match_the_engine(loaded, two_layer_run):
    tf, model = loaded
    vocab = two_layer_run.vocab
    state = model.initial_state(tf.constant(1))["state"]
    rows = []
    for ch in FORCED:
        out = model.step(tf.constant([vocab.index(ch)], tf.int64), state)
        rows.append(log_softmax(out["logits"].numpy())[0])
        state = out["new_state"]
    diff = np.abs(np.stack(rows) - forced_log_probs(run_engine(two_layer_run), vocab)).max()
    print(f"savedmodel: max |log p difference| over {len(FORCED)} characters: {diff:.3g}")
    assert diff <= 1e-4


def test_the_documented_loop_greedy_equals_textgen_sample(exported, two_layer_run, tmp_path):
    shutil.copytree(exported[0], tmp_path / "shakespeare_savedmodel")  # the name docs/export.md uses, in the cwd
    assert run_snippet("savedmodel", temperature=0.0) == PRIME + greedy_sample(two_layer_run)
