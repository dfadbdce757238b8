"""Defaults chosen from the corpus and the budget: a given option wins, the choice is recorded,
and a run without --epochs or --time-limit stops by itself on a plateau."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from helpers import TINY_SIZE, invoke

from textgen import checkpoints
from textgen.config import PRESETS, TrainConfig, defaults
from textgen.defaults import (
    MANY_PASSES,
    MANY_PASSES_MIN_DROPOUT,
    NO_BUDGET_PATIENCE,
    PASS_RULES,
    TIME_LIMIT_EPOCHS,
    choose_defaults,
    corpus_rule,
    passes_rule,
)


def test_without_a_budget_the_run_stops_on_a_plateau():
    model, train, chosen = choose_defaults({}, {"batch_size": 4, "seq_len": 10}, 10_000, None)
    assert train["patience"] == NO_BUDGET_PATIENCE and train["lr_schedule"] == "plateau"
    assert train["epochs"] == defaults(TrainConfig)["epochs"], "the epoch cap stays as a safety net"
    assert train["eval_every"] == 9_000 // 40, "one evaluation per pass over the 9,000 training characters"
    assert {"patience", "lr_schedule", "epochs", "eval_every", "dropout", "size"} <= set(chosen)
    assert all(chosen[name]["value"] == train[name] for name in ("patience", "lr_schedule", "epochs", "eval_every"))
    assert all(choice["reason"] for choice in chosen.values())
    assert {k: model[k] for k in PRESETS["medium"]} == PRESETS["medium"]
    assert model["dropout"] == chosen["dropout"]["value"] > 0, "a 10,000-character corpus is regularised"
    # A large corpus is checked every 2M characters, not once per (long) epoch, and needs no dropout.
    large, train, chosen = choose_defaults({}, {}, 100_000_000, None)
    assert train["eval_every"] * 128 * 25 <= 2_000_000 < (train["eval_every"] + 1) * 128 * 25
    assert large["dropout"] == 0.0 and "only slows learning" in chosen["dropout"]["reason"]


def test_dropout_falls_as_the_corpus_grows():
    sizes = [10_000, 100_000, 300_000, 1_000_000, 3_000_000, 5_000_000, 10**9]
    dropouts = [choose_defaults({}, {}, n, 300.0)[0]["dropout"] for n in sizes]
    assert dropouts == sorted(dropouts, reverse=True) and dropouts[0] > dropouts[-1] == 0.0
    # Every rule's reason names its span of sizes.
    assert "up to 300,000 characters" in corpus_rule(100_000)[2]
    assert "over 3,000,000 characters" in corpus_rule(10**9)[2]


def test_with_a_time_limit_dropout_follows_the_passes_the_budget_buys():
    chars, train_chars = 1_000_000, 900_000
    measured = []

    def speed_of(chars_per_second):
        def speed(model, train):
            measured.append((dict(model), dict(train)))
            return chars_per_second * 256 / model["units"]  # a wider model trains slower
        return speed

    def chosen_for(seconds, speed=speed_of(10_000.0), **kw):
        model, _, chosen = choose_defaults({}, {}, chars, seconds, cpu_only=True, speed=speed, **kw)
        return model["dropout"], chosen["dropout"]["reason"]

    # The same 1 MB text: a short budget sees it a few times, a long one many times over.
    for (limit, dropout), low in zip(PASS_RULES, (0.0,) + tuple(limit for limit, _ in PASS_RULES)):
        passes = (low + min(limit, low + 4)) / 2  # inside the rule's span
        got, why = chosen_for(passes * train_chars / 10_000.0)
        assert got == dropout == passes_rule(passes)[0], (passes, got)
        assert f"~{passes:.1f} passes" in why and "10,000 characters/s (measured on this machine)" in why
    dropouts = [chosen_for(seconds)[0] for seconds in (60, 300, 1800, 7200, 86400)]
    assert dropouts == sorted(dropouts) and dropouts[0] < dropouts[-1]
    # The speed is measured for the model and training options the run will have.
    measured.clear()
    chosen_for(300.0, cpu_bfloat16="AVX-512 BF16")
    (model, train), = measured
    assert {k: model[k] for k in PRESETS["medium"]} == PRESETS["medium"] and train["precision"] == "mixed_bfloat16"
    # A bigger model is slower: fewer passes in the same time, no more dropout.
    big, _, _ = choose_defaults({"units": 1024}, {}, chars, 1800.0, cpu_only=True, speed=speed_of(10_000.0))
    assert big["dropout"] <= chosen_for(1800.0)[0]
    # The user's dropout wins, and nothing is measured; without a CPU budget the corpus size decides.
    measured.clear()
    model, _, chosen = choose_defaults({"dropout": 0.05}, {}, chars, 86400.0, cpu_only=True, speed=speed_of(1e4))
    assert model["dropout"] == 0.05 and "dropout" not in chosen and not measured
    for kw, budget in (({"cpu_only": False, "speed": speed_of(1e4)}, 86400.0), ({"cpu_only": True}, 86400.0),
                       ({"cpu_only": True, "speed": speed_of(1e4)}, None)):
        model, _, chosen = choose_defaults({}, {}, chars, budget, **kw)
        assert (model["dropout"], chosen["dropout"]["reason"]) == corpus_rule(chars)[::2], kw
    assert not measured


def test_a_time_limit_that_buys_more_passes_than_the_text_needs_stops_on_a_plateau():
    def fast(model, train):
        return 25_000.0

    # 1800 s at 25,000 chars/s over 900,000 training characters: 50 passes, trained as without a budget.
    model, train, chosen = choose_defaults({}, {}, 1_000_000, 1800.0, cpu_only=True, speed=fast)
    assert model["dropout"] == max(corpus_rule(1_000_000)[0], MANY_PASSES_MIN_DROPOUT) == chosen["dropout"]["value"]
    assert "~50.0 passes" in chosen["dropout"]["reason"] and "more than the text needs" in chosen["dropout"]["reason"]
    assert train["patience"] == NO_BUDGET_PATIENCE and train["lr_schedule"] == "plateau"
    assert train["epochs"] == TIME_LIMIT_EPOCHS, "the time limit stays the cap"
    assert train["eval_every"] == 900_000 // (128 * 25), "an evaluation per pass, as without a budget"
    assert all(chosen[name]["value"] == train[name] and chosen[name]["reason"]
               for name in ("patience", "lr_schedule", "eval_every", "epochs"))
    assert "~50 passes" in chosen["patience"]["reason"]
    # A small text keeps its corpus-size dropout; a large one seen that often gets the minimum.
    assert choose_defaults({}, {}, 100_000, 300.0, cpu_only=True, speed=fast)[0]["dropout"] == corpus_rule(100_000)[0]
    huge, _, _ = choose_defaults({}, {}, 10_000_000, 86_400.0, cpu_only=True, speed=fast)
    assert corpus_rule(10_000_000)[0] == 0.0 and huge["dropout"] == MANY_PASSES_MIN_DROPOUT
    # At most MANY_PASSES: the cosine over the whole budget, no early stopping.
    seconds = MANY_PASSES * 900_000 / 25_000.0
    _, train, chosen = choose_defaults({}, {}, 1_000_000, seconds, cpu_only=True, speed=fast)
    assert "patience" not in train and "lr_schedule" not in train and "eval_every" not in train
    with pytest.raises(ValueError):
        passes_rule(MANY_PASSES + 1)
    # What the user gives wins: their schedule and patience (the dropout is still chosen).
    model, train, chosen = choose_defaults({}, {"patience": 9, "lr_schedule": "cosine"}, 1_000_000,
                                           1800.0, cpu_only=True, speed=fast)
    assert train["patience"] == 9 and train["lr_schedule"] == "cosine"
    assert not {"patience", "lr_schedule"} & set(chosen) and "more than the text needs" in chosen["dropout"]["reason"]


@pytest.mark.slow
def test_the_speed_probe_measures_the_model_the_run_trains():
    from textgen.config import ModelConfig
    from textgen.training.model import training_speed

    config = TrainConfig(batch_size=4, seq_len=10)
    small = training_speed(ModelConfig(vocab_size=20, units=8, num_layers=1, embedding_dim=4), config, seconds=0.2)
    large = training_speed(ModelConfig(vocab_size=20, units=256, num_layers=2, embedding_dim=4),
                           TrainConfig(batch_size=64, seq_len=10), seconds=0.2)
    assert 0 < large and 0 < small < 1e9
    # 64 streams of a 2x256 model cost more per step than 4 of an 8-unit one, but give more characters.
    assert large / 640 < small / 40


def test_a_given_option_wins_over_a_chosen_default():
    given_model = {"dropout": 0.25, "units": 32}
    given_train = {"patience": 2, "eval_every": 7, "lr_schedule": "cosine"}
    model, train, chosen = choose_defaults(given_model, given_train, 10_000, None)
    assert model["dropout"] == 0.25 and model["units"] == 32
    assert {k: train[k] for k in given_train} == given_train
    assert not {"dropout", "size", "patience", "eval_every", "lr_schedule"} & set(chosen)
    assert model["num_layers"] == PRESETS["medium"]["num_layers"], "the preset fills what is left open"
    # A warm-up asks for the cosine: plateau is not chosen over it.
    assert choose_defaults({}, {"warmup_steps": 5}, 10_000, None)[1].get("lr_schedule") is None


def test_epochs_or_a_time_limit_turn_early_stopping_off():
    _, train, chosen = choose_defaults({}, {"epochs": 3}, 10_000, None)
    assert train == {"epochs": 3} and "epochs" not in chosen
    _, train, chosen = choose_defaults({}, {"time_limit": 60.0}, 10_000, 60.0)
    assert train == {"time_limit": 60.0, "epochs": TIME_LIMIT_EPOCHS}, "the time is the budget: no epoch cap"
    assert "patience" not in train and chosen["epochs"]["value"] == TIME_LIMIT_EPOCHS


@pytest.mark.slow
def test_a_run_without_a_budget_stops_on_a_plateau_and_records_why(tmp_path):
    """Random characters: the validation loss cannot improve for long, so the run ends by itself."""
    rng = random.Random(0)
    corpus = tmp_path / "random.txt"
    corpus.write_text("".join(rng.choice("abcdefgh \n") for _ in range(4000)), encoding="utf-8")
    result = invoke("train", corpus, "--run", "plateau", *TINY_SIZE, "--seq-len", "16", "--batch-size", "4",
                    "--patience", "2", "--learning-rate", "0.05", "--eval-chars", "300", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    directory = checkpoints.run_dir(tmp_path / "checkpoints", "plateau")
    info = json.loads((directory / "run.json").read_text())
    # The given --patience wins; the cadence, schedule and cap were chosen and recorded with a reason.
    assert info["training"]["patience"] == 2 and "patience" not in info["chosen"]
    assert info["chosen"]["eval_every"]["value"] == info["training"]["eval_every"] == 3600 // 64
    assert info["chosen"]["lr_schedule"]["value"] == info["training"]["lr_schedule"] == "plateau"
    assert info["chosen"]["dropout"]["value"] == info["model"]["dropout"] == corpus_rule(4000)[0]
    assert info["chosen"]["dropout"]["reason"] == corpus_rule(4000)[2]
    # Stopped by early stopping, long before the 100-epoch cap, with the best weights as its result.
    assert summary["stopped"] == info["stopped"] == "early_stopping"
    assert summary["epoch"] < 20
    assert summary["stop_reason"] == info["stop_reason"]
    assert "has not improved for 2 evaluations" in info["stop_reason"] and "weights restored" in info["stop_reason"]
    assert summary["val_loss"] == summary["best_val_loss"]
    latest, best = checkpoints.latest(directory), checkpoints.best(directory)
    assert latest.state["stopped"] == "early_stopping" and latest.state["restored_best_from_step"] == best.step
    assert latest.state["stop_reason"] == info["stop_reason"]
    assert f"at step {best.step:,}" in info["stop_reason"]
    for key, value in checkpoints.load_arrays(best.path).items():
        if "seed_state" not in key and not key.endswith(("/h", "/c")):
            np.testing.assert_array_equal(checkpoints.load_arrays(latest.path)[key], value)


@pytest.mark.slow
def test_the_choices_are_printed_at_the_start(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be or not to be\n" * 200, encoding="utf-8")
    result = invoke("train", corpus, "--run", "shown", *TINY_SIZE, "--seq-len", "16", "--batch-size", "4",
                    "--epochs", "1", "--eval-chars", "200")
    assert result.exit_code == 0, result.output
    dropout, _, why = corpus_rule(len("to be or not to be\n" * 200))
    assert f"chosen: dropout = {dropout} ({why})" in " ".join(result.stderr.split())
    assert "stopped: epochs done: 1" in " ".join(result.stdout.split())


def test_bfloat16_is_chosen_only_where_the_cpu_computes_it():
    # Native units, training on the CPU, the default 256-unit model: mixed_bfloat16, the units named.
    _, train, chosen = choose_defaults({}, {}, 10**6, 300.0, cpu_only=True, cpu_bfloat16="AMX-BF16")
    assert train["precision"] == chosen["precision"]["value"] == "mixed_bfloat16"
    assert "AMX-BF16" in chosen["precision"]["reason"]
    # Emulated: float32, saying why.
    _, train, chosen = choose_defaults({}, {}, 10**6, 300.0, cpu_only=True, cpu_bfloat16=None)
    assert train["precision"] == "float32" and "no native bfloat16" in chosen["precision"]["reason"]
    # A small model gains nothing; on a GPU textgen does not choose; the user's precision wins.
    _, train, chosen = choose_defaults({"units": 32}, {}, 10**6, 300.0, cpu_only=True, cpu_bfloat16="AMX-BF16")
    assert train["precision"] == "float32" and "under 256 units" in chosen["precision"]["reason"]
    _, train, chosen = choose_defaults({}, {}, 10**6, 300.0, cpu_only=False)
    assert "precision" not in train and "precision" not in chosen
    _, train, chosen = choose_defaults({}, {"precision": "float32"}, 10**6, 300.0, cpu_only=True,
                                       cpu_bfloat16="AMX-BF16")
    assert train["precision"] == "float32" and "precision" not in chosen


@pytest.mark.slow
def test_the_precision_option_follows_this_cpu(tmp_path):
    from helpers import TINY_TRAIN, assert_one_line_error

    from textgen import devices

    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be or not to be\n" * 100, encoding="utf-8")
    result = invoke("train", corpus, "--run", "both", *TINY_TRAIN, "--epochs", "1", "--precision", "float32",
                    "--mixed-precision")
    assert_one_line_error(result, "--precision float32 contradicts --mixed-precision")
    result = invoke("train", corpus, "--run", "bf16", *TINY_TRAIN, "--epochs", "1", "--eval-chars", "100",
                    "--precision", "mixed_bfloat16")
    directory = checkpoints.run_dir(tmp_path / "checkpoints", "bf16")
    if devices.native_bfloat16() is None or devices.gpu_available():
        assert_one_line_error(result, "mixed_bfloat16", "Received: precision='mixed_bfloat16'")
        assert not directory.exists(), "a refused run leaves nothing behind"
    else:
        assert result.exit_code == 0, result.output
        assert json.loads((directory / "run.json").read_text())["training"]["precision"] == "mixed_bfloat16"
