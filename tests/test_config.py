"""The configs, presets and resume rules of textgen.config: pure Python, no Keras needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from textgen.config import (
    DEFAULT_PRESET,
    FIXED_ON_RESUME,
    PRESETS,
    ModelConfig,
    TrainConfig,
    defaults,
    parameter_count,
    preset,
    resumed_configs,
)
from textgen.errors import CheckpointError, ConfigError


@pytest.mark.slow
def test_config_imports_neither_keras_nor_tensorflow():
    code = ("import sys, textgen.config, textgen.files, textgen.summary, textgen.training.schedule; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_default_model_is_the_default_preset():
    model = defaults(ModelConfig)
    assert {k: model[k] for k in PRESETS[DEFAULT_PRESET]} == PRESETS[DEFAULT_PRESET]
    assert "vocab_size" not in model  # it comes from the corpus


def test_defaults_are_the_dataclass_defaults():
    train = defaults(TrainConfig)
    assert train["seq_len"] == TrainConfig().seq_len == 25
    assert train["time_limit"] is None and train["lr_schedule"] == "cosine"
    assert set(train) == set(TrainConfig().__dict__)


def test_preset_is_a_copy_and_unknown_sizes_name_the_choices():
    chosen = preset("small")
    chosen["units"] = 1
    assert PRESETS["small"]["units"] == 256
    with pytest.raises(ConfigError, match=r"small, medium, large. Received: size='huge'"):
        preset("huge")


@pytest.mark.slow
def test_parameter_count_matches_keras():
    from textgen.training.model import build_model

    for options in [*PRESETS.values(), dict(num_layers=3, units=8, embedding_dim=4)]:
        config = ModelConfig(vocab_size=11, **options)
        model = build_model(config, batch_size=1, seq_len=None)
        trainable = sum(int(v.numpy().size) for v in model.trainable_variables)
        assert parameter_count(config) == trainable == config.num_parameters()
        assert parameter_count(options, vocab_size=11) == trainable
        assert parameter_count(config.to_dict()) == trainable


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("units", -3), ("num_layers", 1.5),
                                         ("vocab_size", True)])
def test_model_config_rejects_non_positive_integers(field, value):
    options = {"vocab_size": 10, field: value}
    with pytest.raises(ConfigError, match=rf"{field} must be a positive integer. Received: {field}={value!r}"):
        ModelConfig(**options).validate()


def test_model_config_other_checks():
    with pytest.raises(ConfigError, match="one-character vocabulary"):
        ModelConfig(vocab_size=1).validate()
    with pytest.raises(ConfigError, match="Received: dropout=1.0"):
        ModelConfig(vocab_size=5, dropout=1.0).validate()


@pytest.mark.parametrize("field,value,message", [
    ("seq_len", 0, "seq_len must be a positive integer. Received: seq_len=0"),
    ("decay_steps", -1, "decay_steps must be a positive integer. Received: decay_steps=-1"),
    ("learning_rate", float("nan"), "learning_rate must be a positive number. Received: learning_rate=nan"),
    ("clip_norm", 0.0, "clip_norm must be a positive number. Received: clip_norm=0.0"),
    ("checkpoint_seconds", float("inf"), "checkpoint_seconds must be a positive number"),
    ("time_limit", -5.0, "time_limit must be a positive number of seconds. Received: time_limit=-5.0"),
    ("val_fraction", 1.0, "val_fraction must be in (0, 1). Received: val_fraction=1.0"),
    ("precision", "bfloat16", "precision must be one of float32, mixed_float16, mixed_bfloat16. Received: precision='bfloat16'"),
    ("min_lr_fraction", 2.0, "min_lr_fraction must be in [0, 1]. Received: min_lr_fraction=2.0"),
])
def test_train_config_checks(field, value, message):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{field: value}).validate()
    assert message in str(caught.value)


def test_train_config_accepts_its_defaults_and_optional_nones():
    assert TrainConfig(clip_norm=None, eval_every=None, patience=None).validate().clip_norm is None


def run_info(**training):
    return {"vocab": list("abc"), "model": ModelConfig(vocab_size=3, units=8).to_dict(),
            "training": {**TrainConfig(seq_len=10).__dict__, **training}}


def test_resume_may_change_the_free_options():
    model, train = resumed_configs("r", run_info(), list("abc"), {"units": 8},
                                   {"epochs": 3, "learning_rate": 0.1, "seq_len": 10, "strategy": "one-device"})
    assert model.units == 8 and train.epochs == 3 and train.learning_rate == 0.1 and train.seq_len == 10
    assert train.strategy == "one-device"


@pytest.mark.parametrize("key", FIXED_ON_RESUME)
def test_resume_refuses_fixed_training_options(key):
    changed = {"seq_len": 11, "batch_size": 7, "seed": 5, "val_fraction": 0.2, "state_reset": 3,
               "precision": "mixed_float16", "average": 0.5}[key]
    with pytest.raises(ConfigError, match=rf"Run 'r' was trained with {key}=.*cannot change on --resume. "
                                          rf"Received: {key}="):
        resumed_configs("r", run_info(), list("abc"), {}, {key: changed})


def test_resume_refuses_model_changes_and_another_vocabulary():
    with pytest.raises(ConfigError, match="Run 'r' has units=8; it cannot change on --resume. Received: units=16"):
        resumed_configs("r", run_info(), list("abc"), {"units": 16}, {})
    with pytest.raises(CheckpointError, match=r"new characters: 'd'; characters the corpus lacks: 'c'"):
        resumed_configs("r", run_info(), list("abd"), {}, {})


def test_resumed_options_are_validated():
    with pytest.raises(ConfigError, match="Received: epochs=0"):
        resumed_configs("r", run_info(), list("abc"), {}, {"epochs": 0})
