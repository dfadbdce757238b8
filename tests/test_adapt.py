"""`textgen evaluate --adapt`: dynamic evaluation on the tiny run — a separate figure, read as one
stream that learns as it goes, the run's files untouched, bad options one line each."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import assert_one_line_error, invoke

from textgen import checkpoints
from textgen.adapt import adapted_score
from textgen.config import ModelConfig
from textgen.corpus import Vocabulary
from textgen.errors import ConfigError
from textgen.generation.loading import load_run
from textgen.scoring import score_with_engine


def _files(directory) -> dict:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _text(tiny_run) -> str:
    """Words the tiny run never read, over its vocabulary, repeated: there is something to learn."""
    vocab = set(checkpoints.read_run_file(tiny_run.run)["vocab"])
    phrase = "".join(c for c in "Thou art a window, the sun is Romeo.\n" if c in vocab)
    return phrase * 12


def test_rate_zero_is_one_stream_from_the_start_and_learning_helps(tiny_run):
    info = checkpoints.read_run_file(tiny_run.run)
    arrays = checkpoints.load_arrays(checkpoints.latest(tiny_run.run).path)
    ids = Vocabulary(info["vocab"]).encode(_text(tiny_run))
    still = adapted_score(ModelConfig(**info["model"]), arrays, ids, rate=0.0, segment=50)
    _, _, engine = load_run(tiny_run.run, "latest")
    total, count = score_with_engine(engine, ids, streams=1, window=len(ids), burn_in=0)
    assert still["scored"] == count and still["nats_per_char"] == pytest.approx(total / count, abs=1e-4)
    learning = adapted_score(ModelConfig(**info["model"]), arrays, ids, rate=0.8, segment=50)
    assert learning["nats_per_char"] < still["nats_per_char"] - 0.05  # it learns the repeated phrase as it reads
    again = adapted_score(ModelConfig(**info["model"]), arrays, ids, rate=0.8, segment=50)
    assert again["nats_per_char"] == pytest.approx(learning["nats_per_char"], rel=1e-6)  # from the same weights


def test_evaluate_adapt_is_a_separate_figure_and_leaves_the_run(tiny_run, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text(_text(tiny_run), encoding="utf-8")
    before = _files(tiny_run.run)
    plain = json.loads(invoke("evaluate", text, "--checkpoints", tiny_run.checkpoints, "--json").stdout)
    result = invoke("evaluate", text, "--checkpoints", tiny_run.checkpoints, "--adapt", "--json")
    assert result.exit_code == 0, result.output
    adapted = json.loads(result.stdout)
    assert adapted["nats_per_char"] == plain["nats_per_char"]  # the usual figure is unchanged beside it
    assert adapted["adapted"]["learning_rate"] == 0.2 and adapted["adapted"]["nats_per_char"] < plain["nats_per_char"]
    assert _files(tiny_run.run) == before  # nothing of the run was written
    shown = invoke("evaluate", text, "--checkpoints", tiny_run.checkpoints, "--adapt", "--adapt-rate", 0.1)
    assert shown.exit_code == 0 and "adapted (dynamic evaluation" in shown.stdout and "0.1" in shown.stdout


@pytest.mark.parametrize(("args", "fragments"), [
    (["--adapt-rate", "0.5"], ["--adapt-rate goes with --adapt"]),
    (["--adapt", "--adapt-rate", "-1"], ["--adapt-rate must be a finite number >= 0", "adapt_rate=-1"]),
    (["--adapt", "--adapt-rate", "nan"], ["--adapt-rate must be a finite number >= 0"]),
])
def test_bad_adapt_options_are_one_line(tiny_run, tmp_path, args, fragments):
    text = tmp_path / "held.txt"
    text.write_text(_text(tiny_run), encoding="utf-8")
    assert_one_line_error(invoke("evaluate", text, "--checkpoints", tiny_run.checkpoints, *args), *fragments)


def test_the_python_api_scores_adapted_too(tiny_run):
    import textgen

    model = textgen.load("tiny", checkpoints=tiny_run.checkpoints)
    text = _text(tiny_run)
    plain = model.score(text)
    both = model.score(text, adapt=0.8)
    assert both["nats_per_char"] == plain["nats_per_char"] and "adapted" not in plain
    assert both["adapted"]["nats_per_char"] < plain["nats_per_char"]
    assert model.score(text) == plain  # the model it holds did not learn
    with pytest.raises(ConfigError, match="adapt_rate"):
        model.score(text, adapt="fast")
