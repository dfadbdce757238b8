"""The regularised recipe: weight-drop, locked dropout and averaged weights, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from textgen import checkpoints
from textgen.backend import quiet_import_keras
from textgen.corpus import prepare
from textgen.training.model import CarriedLSTM
from textgen.training.opening import TrainingCallbacks, open_run
from textgen.training.variables import TRAINING_PREFIX

keras = quiet_import_keras()

AWD_MODEL = {"num_layers": 2, "units": 16, "embedding_dim": 8, "dropout": 0.2, "input_dropout": 0.1,
             "weight_drop": 0.5, "locked_dropout": True}


def lstm_layer(weight_drop: float, batch: int = 3, features: int = 5, units: int = 6):
    layer = CarriedLSTM(units, batch, weight_drop=weight_drop)
    layer.build((batch, None, features))
    return layer


def plain_outputs(layer, x, recurrent_kernel):
    """The LSTM over `x` from a zero state with the given hidden-to-hidden kernel and no dropout."""
    reference = keras.layers.LSTM(layer.units, return_sequences=True)
    reference.build(x.shape)
    kernel, _, bias = (v.numpy() for v in layer.lstm.cell.weights)
    reference.set_weights([kernel, recurrent_kernel, bias])
    return np.asarray(reference(x))


def test_weight_drop_draws_one_mask_per_batch_used_at_every_step():
    layer = lstm_layer(0.5)
    masks = []
    draw = layer.recurrent_mask

    def recording(kernel):
        mask = draw(kernel)
        masks.append(np.asarray(mask))
        return mask

    layer.recurrent_mask = recording
    x = np.random.default_rng(0).normal(size=(3, 12, 5)).astype("float32")
    recurrent = layer.lstm.cell.recurrent_kernel.numpy()
    outputs = []
    for _ in range(2):  # two batches
        layer.reset_state()
        outputs.append(np.asarray(layer(x, training=True)))
    assert len(masks) == 2, "one mask per call (per batch), not one per time step"
    first, second = masks
    assert set(np.unique(first)) == {0.0, 2.0}, "a kept weight is scaled by 1 / (1 - 0.5)"
    assert 0.3 < (first == 0).mean() < 0.7
    assert (first != second).any(), "each batch draws a new mask"
    # Every time step of a batch used that batch's mask: the output is the plain LSTM's with the
    # masked kernel, all 12 steps of it (a mask drawn per step would not match past the first).
    for mask, out in zip(masks, outputs, strict=True):
        np.testing.assert_allclose(out, plain_outputs(layer, x, recurrent * mask), atol=1e-5)
    # The variable itself is untouched, and in inference no mask is drawn.
    np.testing.assert_array_equal(layer.lstm.cell.recurrent_kernel.numpy(), recurrent)
    layer.reset_state()
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), plain_outputs(layer, x, recurrent), atol=1e-5)
    assert len(masks) == 2


def test_weight_drop_trains_the_kernel_through_the_mask():
    layer = lstm_layer(0.5)
    x = np.random.default_rng(1).normal(size=(3, 8, 5)).astype("float32")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2)
    grads = dict(zip([v.path for v in layer.trainable_variables],
                     tape.gradient(loss, layer.trainable_variables), strict=True))
    grad = np.asarray(grads[layer.lstm.cell.recurrent_kernel.path])
    assert np.abs(grad).sum() > 0
    # A dropped weight gets no gradient in that batch: about half of them are exactly zero.
    assert 0.3 < (grad == 0).mean() < 0.7


def test_locked_dropout_masks_a_feature_for_every_step_of_a_stream():
    from textgen.config import ModelConfig
    from textgen.training.model import build_model

    model = build_model(ModelConfig(vocab_size=5, **AWD_MODEL), batch_size=4)
    layer = model.get_layer("dropout_0")
    assert tuple(layer.noise_shape) == (None, 1, 16)
    x = np.ones((4, 30, 16), dtype="float32")
    out = np.asarray(layer(x, training=True))
    dropped = out == 0
    assert dropped.any()
    assert (dropped == dropped[:, :1, :]).all(), "the same features are dropped at every time step"
    assert model.get_layer("input_dropout").noise_shape == (None, 1, 8)


class StopAfter(TrainingCallbacks):
    def __init__(self, steps):
        self.steps, self.trainer = steps, None

    def on_step(self, step, logs):
        if step == self.steps:
            self.trainer.stop_reason = "SIGINT"


def train_until(corpus, root, name, steps, resume=False):
    options = {"seq_len": 16, "batch_size": 4, "epochs": 1, "eval_every": 5, "seed": 3,
               "learning_rate": 0.01, "average": 0.9}
    trainer = (open_run(corpus, "tiny", root, name, {}, {}, True) if resume else
               open_run(corpus, "tiny", root, name, AWD_MODEL, options, False))
    stopper = StopAfter(steps)
    trainer.callbacks, stopper.trainer = stopper, trainer
    trainer.run()
    return trainer


@pytest.mark.slow
def test_a_checkpoint_holds_the_averaged_weights_and_resume_continues_them_exactly(tiny_corpus, tmp_path):
    corpus = prepare(tiny_corpus)
    root = tmp_path / "checkpoints"
    straight = train_until(corpus, root, "straight", 12)
    ckpt = checkpoints.latest(root / "straight")
    weights = checkpoints.load_arrays(ckpt.path)
    optimizer = checkpoints.load_arrays(ckpt.path, checkpoints.OPTIMIZER)
    model = straight.model
    averages = straight.optimizer._model_variables_moving_average
    for v, average in zip(model.trainable_variables, averages, strict=True):
        # The checkpoint's weights are the averages, not the weights being trained ...
        np.testing.assert_array_equal(weights[v.path], average.numpy())
        assert not np.allclose(weights[v.path], v.numpy()), v.path
        # ... which the optimizer file keeps, for resuming.
        np.testing.assert_array_equal(optimizer[TRAINING_PREFIX + v.path], v.numpy())
    # Evaluation scored the averaged weights: scoring the checkpoint's weights gives its last figure.
    straight._copy_weights_to_scorer()
    for v in straight.scorer.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), weights[v.path])

    train_until(corpus, root, "split", 7)
    resumed = train_until(corpus, root, "split", 12, resume=True)
    assert resumed.step == 12
    split = checkpoints.latest(root / "split")
    split_weights = checkpoints.load_arrays(split.path)
    split_optimizer = checkpoints.load_arrays(split.path, checkpoints.OPTIMIZER)
    assert set(split_weights) == set(weights) and set(split_optimizer) == set(optimizer)
    for key in weights:
        np.testing.assert_allclose(split_weights[key], weights[key], rtol=0, atol=1e-6, err_msg=key)
    for key in optimizer:
        np.testing.assert_allclose(split_optimizer[key], optimizer[key], rtol=0, atol=1e-6, err_msg=key)
    # The interrupted run evaluated once more (at step 7, when it stopped); the rest agree.
    straight_history = {r["step"]: r["val_loss"] for r in ckpt.state["history"]}
    split_history = {r["step"]: r["val_loss"] for r in split.state["history"]}
    assert set(split_history) == set(straight_history) | {7}
    for step, loss in straight_history.items():
        assert split_history[step] == pytest.approx(loss, abs=1e-6)


def test_the_recipe_is_chosen_for_many_passes_and_a_given_option_wins_over_every_new_default():
    from textgen.defaults import RECIPE, RECIPE_OFF, choose_defaults

    recipe = dict(RECIPE)
    # Without a budget a 100 KB text is trained to its plateau, seen many times over: the recipe.
    model, train, chosen = choose_defaults({}, {}, 100_000, None)
    assert {name: model[name] for name in recipe} == recipe
    assert all(chosen[name]["value"] == value and "many times" in chosen[name]["reason"]
               for name, value in recipe.items())
    # A 1 MB text trained to its plateau: dropout alone, and why.
    mid, mid_train, mid_chosen = choose_defaults({}, {}, 1_000_000, None)
    assert mid["dropout"] > 0 and {name: mid[name] for name in recipe} == RECIPE_OFF
    assert "learns too slowly" in mid_chosen["weight_drop"]["reason"] and "seq_len" not in mid_train
    assert "average" not in train, "no averaged weights unless asked for (measured no better)"
    # Longer back-propagation through time with it, at the same characters per step.
    assert (train["seq_len"], train["batch_size"]) == (100, 32) and "back-propagation" in chosen["seq_len"]["reason"]
    assert train["eval_every"] == int(90_000 // (100 * 32)), "one evaluation per pass at the chosen shape"
    _, given_shape, chosen = choose_defaults({}, {"seq_len": 50}, 100_000, None)
    assert given_shape["seq_len"] == 50 and "batch_size" not in given_shape and "seq_len" not in chosen
    # A budget that buys few passes (measured speed) or a large corpus: no recipe, and why.
    few, few_train, chosen = choose_defaults({}, {}, 1_000_000, 60.0, cpu_only=True, speed=lambda m, t: 10_000.0)
    assert {name: few[name] for name in recipe} == RECIPE_OFF and chosen["weight_drop"]["reason"]
    assert "seq_len" not in few_train and "batch_size" not in few_train
    # Few epochs, or a GPU's budget (passes unknown): no recipe either.
    for given_train, budget in (({"epochs": 3}, None), ({"time_limit": 60.0}, 60.0)):
        few, few_train, _ = choose_defaults({}, given_train, 100_000, budget)
        assert {name: few[name] for name in recipe} == RECIPE_OFF and "seq_len" not in few_train
    many, _, _ = choose_defaults({}, {"epochs": 50}, 100_000, None)
    assert {name: many[name] for name in recipe} == recipe
    large, _, _ = choose_defaults({}, {}, 100_000_000, None)
    assert {name: large[name] for name in recipe} == RECIPE_OFF
    # Each option given wins, and is not recorded as textgen's choice.
    given = {"weight_drop": 0.25, "input_dropout": 0.05, "locked_dropout": False}
    for name, value in given.items():
        model, _, chosen = choose_defaults({name: value}, {}, 100_000, None)
        assert model[name] == value and name not in chosen
        # The other regularisation options are left off, and the reason names the given one.
        others = [other for other in recipe if other != name]
        assert all(model[other] == RECIPE_OFF[other] for other in others)
        assert f"--{name.replace('_', '-')} was given" in chosen[others[0]]["reason"]
    model, train, chosen = choose_defaults({"dropout": 0.1}, {"average": 0.999}, 100_000, None)
    assert model["dropout"] == 0.1 and train["average"] == 0.999 and not {"dropout", "average"} & set(chosen)
    assert model["weight_drop"] == 0.0 and "--dropout was given" in chosen["weight_drop"]["reason"]


def test_the_cli_takes_the_recipe_options_and_refuses_bad_values(tiny_corpus, tmp_path):
    from helpers import TINY_TRAIN, assert_one_line_error, invoke

    root = tmp_path / "ck"
    out = invoke("train", str(tiny_corpus), "--checkpoints", str(root), "--run", "r", *TINY_TRAIN,
                 "--epochs", "1", "--weight-drop", "0.3", "--input-dropout", "0.1", "--locked-dropout",
                 "--average", "0.9", "--json")
    assert out.exit_code == 0, out.stderr
    info = checkpoints.read_run_file(root / "r")
    assert {k: info["model"][k] for k in ("weight_drop", "input_dropout", "locked_dropout")} == \
        {"weight_drop": 0.3, "input_dropout": 0.1, "locked_dropout": True}
    assert info["training"]["average"] == 0.9
    assert not {"weight_drop", "input_dropout", "locked_dropout", "average"} & set(info["chosen"])
    for option, value in (("--weight-drop", "1"), ("--input-dropout", "-0.1"), ("--average", "1.5")):
        result = invoke("train", str(tiny_corpus), "--checkpoints", str(root), "--run", "bad", *TINY_TRAIN,
                        "--epochs", "1", option, value)
        assert_one_line_error(result, option.lstrip("-").replace("-", "_"))
    # The average is fixed for the run: resuming with another is refused.
    result = invoke("train", "--checkpoints", str(root), "--run", "r", "--resume", "--average", "0.5")
    assert_one_line_error(result, "average")


def test_options_chosen_for_one_reason_are_printed_on_one_line():
    from textgen.cli.train import chosen_lines

    chosen = {"dropout": {"value": 0.1, "reason": "few passes"},
              "weight_drop": {"value": 0.0, "reason": "few passes: no recipe"},
              "input_dropout": {"value": 0.0, "reason": "few passes: no recipe"},
              "epochs": {"value": 9, "reason": "a cap"}}
    assert chosen_lines(chosen) == [("few passes", "dropout = 0.1"),
                                    ("few passes: no recipe", "weight_drop = 0.0, input_dropout = 0.0"),
                                    ("a cap", "epochs = 9")]
