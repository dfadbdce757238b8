"""TFLite export: built-in ops only, metadata JSON beside it, runs in the ai-edge-litert
interpreter and agrees with the numpy engine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import FORCED, PRIME, export, forced_log_probs, greedy_sample, require, run_engine, run_snippet

from textgen.generation.draw import log_softmax

litert = require("ai_edge_litert.interpreter")
pytestmark = pytest.mark.slow  # trains a run, starts subprocesses, converts with TensorFlow


@pytest.fixture(scope="module")
def exported(two_layer_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "shakespeare.tflite"
    return path, export(two_layer_run, "--format", "tflite", "--output", path)


def runner(path):
    return litert.Interpreter(model_path=str(path)).get_signature_runner("serving_default")


def test_metadata_lives_beside_the_model_and_only_builtin_ops_are_used(exported, two_layer_run):
    path, result = exported
    meta = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    vocab = two_layer_run.vocab
    assert result["metadata"] == str(path) + ".json"
    assert meta["vocab"] == vocab and meta["run"] == "tiny" and meta["start_id"] == vocab.index("\n")
    assert (meta["num_layers"], meta["units"]) == (2, 16) and meta["textgen_version"]
    data = path.read_bytes()
    assert b"Flex" not in data and result["bytes"] == len(data)
    interpreter = litert.Interpreter(model_path=str(path))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not any(name.startswith("Flex") or name == "CUSTOM" for name in ops), ops


def test_signature_follows_the_step_contract(exported, two_layer_run):
    interpreter = litert.Interpreter(model_path=str(exported[0]))
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["ids", "state"], "outputs": ["logits", "new_state"]}}
    state = np.zeros((2, 2, 3, 16), np.float32)
    out = interpreter.get_signature_runner("serving_default")(ids=np.array([0, 1, 2], np.int64), state=state)
    assert out["logits"].shape == (3, len(two_layer_run.vocab)) and out["new_state"].shape == state.shape


def test_teacher_forced_log_probs_match_the_engine(exported, two_layer_run):
    step = runner(exported[0])
    vocab = two_layer_run.vocab
    state = np.zeros((2, 2, 1, 16), np.float32)
    rows = []
    for ch in FORCED:
        out = step(ids=np.array([vocab.index(ch)], np.int64), state=state)
        rows.append(log_softmax(out["logits"])[0])
        state = out["new_state"]
    diff = np.abs(np.stack(rows) - forced_log_probs(run_engine(two_layer_run), vocab)).max()
    print(f"tflite: max |log p difference| over {len(FORCED)} characters: {diff:.3g}")
    assert diff <= 1e-4


def test_the_documented_loop_greedy_equals_textgen_sample(exported, two_layer_run, tmp_path):
    for name in ("shakespeare.tflite", "shakespeare.tflite.json"):  # the names docs/export.md uses, in the cwd
        shutil.copy(exported[0].with_name(name), tmp_path / name)
    assert run_snippet("tflite", temperature=0.0) == PRIME + greedy_sample(two_layer_run)
