"""ONNX export: built from the arrays, passes onnx.checker, runs in onnxruntime like the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FORCED, PRIME, SNIPPETS, export, forced_log_probs, greedy_sample, require, run_engine, run_snippet

from textgen.generation.draw import log_softmax

onnx = require("onnx")
onnxruntime = require("onnxruntime")

pytestmark = pytest.mark.slow  # trains a run and starts `textgen` subprocesses


@pytest.fixture(scope="module")
def exported(two_layer_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "shakespeare.onnx"
    result = export(two_layer_run, "--format", "onnx", "--output", path)
    return path, result


def test_model_passes_the_checker_and_states_its_opset_and_metadata(exported, two_layer_run):
    path, result = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert result["opset"] == 17 and [o.version for o in model.opset_import if o.domain == ""] == [17]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["vocab"]) == two_layer_run.vocab
    assert meta["run"] == "tiny" and meta["textgen_version"]
    assert int(meta["start_id"]) == two_layer_run.vocab.index("\n")
    assert result["bytes"] == path.stat().st_size and result["check_max_abs_diff"] <= 1e-4
    ops = {n.op_type for n in model.graph.node}
    assert ops <= {"Gather", "MatMul", "Add", "Mul", "Split", "Sigmoid", "Tanh", "Concat", "Unsqueeze"}, ops


def test_inputs_and_outputs_follow_the_step_contract(exported, two_layer_run):
    session = onnxruntime.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert inputs["ids"].type == "tensor(int64)" and inputs["ids"].shape == ["batch"]
    assert inputs["state"].shape == [2, 2, "batch", 16]
    state = np.zeros((2, 2, 3, 16), np.float32)
    logits, new_state = session.run(["logits", "new_state"], {"ids": np.array([1, 2, 3]), "state": state})
    assert logits.shape == (3, len(two_layer_run.vocab)) and new_state.shape == state.shape
    assert np.abs(new_state).max() > 0


def test_teacher_forced_log_probs_match_the_engine(exported, two_layer_run):
    session = onnxruntime.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    vocab = two_layer_run.vocab
    state = np.zeros((2, 2, 1, 16), np.float32)
    rows = []
    for ch in FORCED:
        logits, state = session.run(None, {"ids": np.array([vocab.index(ch)], np.int64), "state": state})
        rows.append(log_softmax(logits)[0])
    diff = np.abs(np.stack(rows) - forced_log_probs(run_engine(two_layer_run), vocab)).max()
    print(f"onnx: max |log p difference| over {len(FORCED)} characters: {diff:.3g}")
    assert diff <= 1e-4


def test_the_documented_loop_greedy_equals_textgen_sample(exported, two_layer_run, tmp_path):
    import shutil

    shutil.copy(exported[0], tmp_path / "shakespeare.onnx")  # the file name docs/export.md uses, in the cwd
    text = run_snippet("onnx", temperature=0.0)
    assert text == PRIME + greedy_sample(two_layer_run)
    sampled = run_snippet("onnx", temperature=0.8, length=50)
    assert len(sampled) == len(PRIME) + 50 and set(sampled) <= set(two_layer_run.vocab)


def test_the_export_page_prints_the_loops_the_tests_run():
    """Each format's loop on the documentation's Export page (docs/export.md) is, verbatim, the
    snippet file that the tests execute (docs/export-loops/), so the page cannot drift from what
    is tested."""
    page = (SNIPPETS.parent / "export.md").read_text(encoding="utf-8")
    snippets = {name: (SNIPPETS / f"{name}.py").read_text(encoding="utf-8").rstrip("\n")
                for name in ("onnx", "savedmodel", "tflite")}
    assert all(len(text.splitlines()) <= 24 for text in snippets.values())
    for name, text in snippets.items():
        assert f"```python\n{text}\n```" in page, f"docs/export.md's {name} loop differs from docs/export-loops/{name}.py"
