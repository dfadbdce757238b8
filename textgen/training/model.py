"""The character language model: Embedding -> LSTM x L -> Dense(vocab) logits.

Each LSTM is wrapped in `CarriedLSTM`, which keeps its last (h, c) in non-trainable
variables so that consecutive batches continue the same text streams (truncated
back-propagation through time, as char-rnn does). The state lives in tracked Keras
variables, so it is saved with the checkpoint and works on every Keras backend.

The inner `keras.layers.LSTM` keeps the arguments that let TensorFlow (and, since Keras
3.14, JAX and PyTorch) pick the fused cuDNN kernel: tanh / sigmoid, recurrent_dropout=0,
unroll=False, use_bias=True, no masking. Regularisation that keeps that kernel (the AWD-LSTM
recipe, Merity et al. 2017): weight-drop, one DropConnect mask on the hidden-to-hidden kernel
per batch (the masked kernel goes through the same fused call), and locked (variational)
dropout, one mask per stream shared by every time step, on the inputs and after each layer.

`build_training_model` is the one recipe for the model `textgen train` trains (built for its
batch shape, compiled with Adam and the sparse cross-entropy from logits); the benchmarks
use it too. The config itself (`ModelConfig`) lives in `textgen.config`, without Keras.
"""

from __future__ import annotations

import numpy as np

from textgen import devices
from textgen.backend import quiet_import_keras
from textgen.config import ModelConfig, TrainConfig

__all__ = ["ModelConfig", "CarriedLSTM", "build_model", "build_training_model", "compile_model", "training_speed",
           "lstm_layers", "reset_states", "reset_some_states"]

keras = quiet_import_keras()
layers = keras.layers


@keras.saving.register_keras_serializable(package="textgen")
class CarriedLSTM(layers.Layer):
    """An LSTM whose final state is carried into the next call (for a fixed batch size)."""

    def __init__(self, units: int, batch_size: int, weight_drop: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.batch_size = batch_size
        self.weight_drop = float(weight_drop)
        # The weight-drop masks' random state: a tracked variable, saved with the checkpoint.
        self.seed_generator = keras.random.SeedGenerator() if self.weight_drop else None
        self.lstm = layers.LSTM(
            units,
            activation="tanh",
            recurrent_activation="sigmoid",
            recurrent_dropout=0.0,
            unroll=False,
            use_bias=True,
            return_sequences=True,
            return_state=True,
            name="lstm",
        )

    def build(self, input_shape):
        self.lstm.build(input_shape)
        shape = (self.batch_size, self.units)
        # Under tf.distribute every replica assigns the same all-gathered value: keep the first.
        self.h = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="h",
                                 aggregation="only_first_replica")
        self.c = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="c",
                                 aggregation="only_first_replica")

    def call(self, inputs, training=None):
        local = inputs.shape[0]
        if local is not None and local != self.batch_size:
            return self._call_replica(inputs, local, training)
        # Copies, not the variables themselves: the assign below writes the variables in place,
        # and PyTorch's autograd refuses a backward pass through a tensor modified after use.
        h0, c0 = keras.ops.copy(self.h.value), keras.ops.copy(self.c.value)
        outputs, h, c = self._lstm(inputs, h0, c0, training)
        self.h.assign(h)
        self.c.assign(c)
        return outputs

    def _call_replica(self, inputs, local, training):
        """One replica of a tf.distribute strategy: it runs streams [r*local, (r+1)*local).

        The state variables keep the whole batch (so checkpoints do not depend on the
        strategy): each replica reads its rows, and the new rows of every replica are
        all-gathered so that all copies of the variable hold the same full state.
        """
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or local * context.num_replicas_in_sync != self.batch_size:
            raise ValueError(f"batch of {local} streams for a layer built for {self.batch_size}")
        start = context.replica_id_in_sync_group * local
        h0 = self.h.value[start:start + local]
        c0 = self.c.value[start:start + local]
        outputs, h, c = self._lstm(inputs, h0, c0, training)
        self.h.assign(context.all_gather(h, axis=0))
        self.c.assign(context.all_gather(c, axis=0))
        return outputs

    def _lstm(self, inputs, h0, c0, training):
        """The LSTM over one batch; in training with weight-drop, through a masked recurrent kernel.

        One mask is drawn per call, that is per batch, and every time step and stream of the
        batch uses it (DropConnect as AWD-LSTM applies it). The cell's `recurrent_kernel`
        attribute is pointed at the masked tensor for the duration of the call, so the fused
        path (`backend.lstm`) and the step-by-step one both read it; the variable itself stays
        tracked by the cell, and its gradient flows through the mask.
        """
        if not (training and self.weight_drop):
            return self.lstm(inputs, initial_state=[h0, c0], training=training)
        cell = self.lstm.cell
        kernel = cell.recurrent_kernel
        masked = keras.ops.cast(self.recurrent_mask(kernel) * kernel, self.lstm.compute_dtype)
        object.__setattr__(cell, "recurrent_kernel", masked)  # not Layer.__setattr__: nothing to track
        try:
            return self.lstm(inputs, initial_state=[h0, c0], training=training)
        finally:
            object.__setattr__(cell, "recurrent_kernel", kernel)

    def recurrent_mask(self, kernel):
        """The next weight-drop mask for `kernel`: 0 or 1 / (1 - weight_drop) per weight."""
        keep = 1.0 - self.weight_drop
        draw = keras.random.uniform(kernel.shape, seed=self.seed_generator)
        return keras.ops.cast(draw < keep, "float32") / keep

    def reset_state(self):
        # keras.ops.zeros_like(variable) fails on JAX (jnp cannot read a Keras Variable's dtype).
        self.h.assign(keras.ops.zeros(self.h.shape, dtype=self.h.dtype))
        self.c.assign(keras.ops.zeros(self.c.shape, dtype=self.c.dtype))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "batch_size": self.batch_size,
                "weight_drop": self.weight_drop}


def build_model(config: ModelConfig, batch_size: int, seq_len: int | None = None):
    """Build the LM for a fixed batch size (the carried state needs one).

    `seq_len=None` accepts any sequence length (used for evaluation).
    """
    config.validate()
    inputs = keras.Input(batch_shape=(batch_size, seq_len), dtype="int32", name="ids")
    x = layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")(inputs)
    if config.input_dropout > 0:
        x = _dropout(config.input_dropout, config.locked_dropout, config.embedding_dim, "input_dropout")(x)
    for i in range(config.num_layers):
        x = CarriedLSTM(config.units, batch_size, weight_drop=config.weight_drop, name=f"lstm_{i}")(x)
        if config.dropout > 0:
            x = _dropout(config.dropout, config.locked_dropout, config.units, f"dropout_{i}")(x)
    logits = layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="char_lstm")


def _dropout(rate: float, locked: bool, features: int, name: str):
    """Dropout over (batch, time, features); `locked`: one mask per stream for every time step."""
    return layers.Dropout(rate, noise_shape=(None, 1, features) if locked else None, name=name)


def compile_model(model, learning_rate: float = TrainConfig.learning_rate,
                  clip_norm: float | None = TrainConfig.clip_norm, jit_compile: bool | str = False,
                  average: float = TrainConfig.average):
    """Compile for training as `textgen train` does, and build the optimizer's variables.

    Adam with a global gradient-norm clip, and the sparse categorical cross-entropy from
    logits; `average` > 0 keeps an exponential moving average of the weights with that
    momentum (Keras' `use_ema`, never written over the weights being trained: evaluation and
    checkpoints read it, `training.variables.used_arrays` / `saved_model_arrays`). Returns the model's optimizer
    (under mixed_float16 Keras wraps Adam in a LossScaleOptimizer: that is the one a
    checkpoint saves and restores).
    """
    averaging = dict(use_ema=True, ema_momentum=average) if average else {}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, global_clipnorm=clip_norm, **averaging),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model.optimizer


def build_training_model(model_config: ModelConfig, config: TrainConfig | None = None,
                         distributed: bool = False, **overrides):
    """The training model of `textgen train`: built for (batch_size, seq_len) and compiled.

    `config` gives batch_size, seq_len, learning_rate, clip_norm, precision, jit and average (its
    defaults when None); `overrides` replace any of them (a benchmark's own batch shape).
    XLA follows `jit` (None = Keras' choice for this backend and device), except under a
    tf.distribute strategy (`distributed`), whose step is never jit-compiled. Call it inside
    the strategy's scope when there is one.
    """
    settings = {name: getattr(config or TrainConfig(), name)
                for name in ("batch_size", "seq_len", "learning_rate", "clip_norm", "precision", "jit", "average")}
    unknown = set(overrides) - set(settings)
    if unknown:
        raise TypeError(f"build_training_model() got unexpected options {sorted(unknown)}")
    settings.update(overrides)
    with devices.precision.precision_scope(settings["precision"]):
        model = build_model(model_config, settings["batch_size"], settings["seq_len"])
    jit = False if distributed else devices.xla.jit_compile_value(settings["jit"], model)
    compile_model(model, settings["learning_rate"], settings["clip_norm"], jit, settings["average"])
    return model


def training_speed(model_config: ModelConfig, config: TrainConfig, seconds: float = 1.5) -> float:
    """Training characters per second of this model and batch shape on this machine, measured.

    Builds the very model `textgen train` would (its size, precision and batch shape), takes
    two untimed steps (tracing, warm-up), then times steps on random ids for about `seconds`
    (at least 3) and returns the median's characters per second. The model is thrown away;
    the run's own model is built afresh from its seed, so the probe changes nothing it trains.
    """
    import gc
    import time

    import numpy as np

    model = build_training_model(model_config, config)
    rng = np.random.default_rng(0)
    shape = (config.batch_size, config.seq_len)
    x = rng.integers(0, model_config.vocab_size, shape).astype("int32")
    y = rng.integers(0, model_config.vocab_size, shape).astype("int32")
    for _ in range(2):
        model.train_on_batch(x, y)
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    del model
    gc.collect()
    return shape[0] * shape[1] / sorted(times)[len(times) // 2]


def lstm_layers(model):
    return [layer for layer in model.layers if isinstance(layer, CarriedLSTM)]


def reset_states(model) -> None:
    for layer in lstm_layers(model):
        layer.reset_state()


def reset_some_states(model, k: int, period: int, batch_size: int) -> None:
    """Zero the carried state of the streams whose turn it is at segment `k` (stream b when
    k ≡ -b mod `period`).

    Staggered resets keep the model used to every state age from 0 to `period` segments, so
    it scores and samples well from a cold start instead of only deep into a stream.
    """
    rows = (k + np.arange(batch_size)) % period == 0
    if not rows.any():
        return
    if period == 1:
        reset_states(model)
        return
    for layer in lstm_layers(model):
        for var in (layer.h, layer.c):
            value = np.array(var.numpy())
            value[rows] = 0.0
            var.assign(value)
