"""What a run is made of: the model and training configs, the size presets, the resume rules.

Pure Python on purpose (no Keras, no TensorFlow): listing runs, the CLI's help and the HTTP
server read the real defaults and checks from here without paying for a TensorFlow import.
A run saves both configs in `run.json` ("model" and "training"); a resumed run reads them
back and may change only what `FIXED_ON_RESUME` and the model config do not pin.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields

from textgen.errors import CheckpointError, ConfigError, positive_int, positive_number

LR_SCHEDULES = ("constant", "cosine", "plateau")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# Model size presets for `textgen train --size` (the one place their numbers live; tests and
# benchmarks read them rather than repeating the numbers). "medium" is the default model.
PRESETS: dict = {
    "small": dict(num_layers=1, units=256, embedding_dim=64),
    "medium": dict(num_layers=2, units=256, embedding_dim=64),
    "large": dict(num_layers=2, units=512, embedding_dim=64),
}
DEFAULT_PRESET = "medium"

# Training options that must stay fixed for a run: resuming with others would not continue it.
# (Every model option is fixed too.)
FIXED_ON_RESUME = ("seq_len", "batch_size", "seed", "val_fraction", "state_reset", "precision", "average")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (saved as `run.json["model"]`)."""

    vocab_size: int
    embedding_dim: int = 64
    units: int = 256
    num_layers: int = 2
    dropout: float = 0.0  # after each LSTM layer
    input_dropout: float = 0.0  # on the embedded characters
    weight_drop: float = 0.0  # DropConnect on each LSTM's hidden-to-hidden kernel, one mask per batch
    locked_dropout: bool = False  # dropout masks shared by every time step of a stream (variational)

    def validate(self) -> ModelConfig:
        for name in ("vocab_size", "embedding_dim", "units", "num_layers"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.locked_dropout, bool):
            raise ConfigError(f"locked_dropout must be true or false. Received: locked_dropout={self.locked_dropout!r}")
        if self.vocab_size < 2:
            raise ConfigError(
                "The corpus has a one-character vocabulary; there is nothing to predict. "
                f"Received: vocab_size={self.vocab_size}"
            )
        for name in ("dropout", "input_dropout", "weight_drop"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(f"{name} must be in [0, 1). Received: {name}={value}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def num_parameters(self) -> int:
        return parameter_count(self)


def parameter_count(model_config, vocab_size: int | None = None) -> int:
    """Trainable parameters of the network: embedding, L LSTM layers (4 gates each), logits.

    `model_config` is a `ModelConfig` or a mapping with its fields (such as `run.json["model"]`,
    or a preset, whose vocabulary size then comes from `vocab_size`).
    """
    get = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key)
    v = vocab_size if vocab_size is not None else get("vocab_size")
    e, u = get("embedding_dim"), get("units")
    total, inputs = v * e + u * v + v, e
    for _ in range(get("num_layers")):
        total += 4 * u * (inputs + u + 1)
        inputs = u
    return total


def preset(name: str) -> dict:
    """The model options of preset `name` (a copy), or a ConfigError naming the choices."""
    if name not in PRESETS:
        raise ConfigError(f"size must be one of {', '.join(PRESETS)}. Received: size={name!r}")
    return dict(PRESETS[name])


@dataclass
class TrainConfig:
    """How a run trains (saved as `run.json["training"]`)."""

    seq_len: int = 25
    batch_size: int = 128
    epochs: int = 100  # without --epochs: a safety cap (the run stops when validation stops improving)
    time_limit: float | None = None
    learning_rate: float = 6e-3
    clip_norm: float | None = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    eval_every: int | None = None  # steps; None = at the end of every epoch
    eval_chars: int = 1_000_000  # validation characters scored per evaluation (from the start of the split)
    checkpoint_seconds: float = 120.0  # also checkpoint this often (wall clock)
    state_reset: int = 20  # each stream forgets its LSTM state every this many segments (staggered); 1 = stateless
    lr_schedule: str = "cosine"  # constant | cosine | plateau
    warmup_steps: int = 0  # linear warm-up from 0 (constant and cosine)
    decay_steps: int | None = None  # cosine: steps to decay over; None = fitted to time_limit, else epochs x steps/epoch
    min_lr_fraction: float = 0.1  # cosine ends (and plateau stops halving) at this share of learning_rate
    average: float = 0.0  # momentum of the weights' moving average used to evaluate and save (0 = none)
    patience: int | None = None  # early stopping: evaluations without a new best validation loss
    sample_every: int | None = None  # steps between samples (besides the one after each evaluation)
    sample_chars: int = 200  # sample printed after each evaluation (0 = none)
    sample_temperature: float = 0.8
    tensorboard: bool = False  # Keras TensorBoard logs in <run>/tensorboard
    precision: str = "float32"  # or mixed_float16 (GPU only), mixed_bfloat16 (CPUs with native bfloat16)
    jit: bool | None = None  # XLA; None = Keras' choice for this backend and device
    strategy: str = "auto"  # auto | one-device | mirrored | multi-worker (tf.distribute); may change on resume

    def validate(self) -> TrainConfig:
        for name in ("seq_len", "batch_size", "epochs", "eval_chars", "state_reset"):
            positive_int(name, getattr(self, name))
        for name in ("eval_every", "patience", "sample_every", "decay_steps"):
            positive_int(name, getattr(self, name), allow_none=True)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}. Received: lr_schedule={self.lr_schedule!r}"
            )
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be an integer >= 0. Received: warmup_steps={self.warmup_steps!r}")
        if self.warmup_steps and self.lr_schedule == "plateau":
            raise ConfigError("--warmup-steps works with --lr-schedule constant or cosine, not plateau.")
        if not (isinstance(self.average, (int, float)) and 0.0 <= self.average < 1.0):
            raise ConfigError(f"average must be in [0, 1) (0: no averaged weights). Received: average={self.average}")
        if not (0.0 <= self.min_lr_fraction <= 1.0):
            raise ConfigError(f"min_lr_fraction must be in [0, 1]. Received: min_lr_fraction={self.min_lr_fraction}")
        positive_number("checkpoint_seconds", self.checkpoint_seconds)
        if not (self.sample_temperature >= 0 and math.isfinite(self.sample_temperature)):
            raise ConfigError(
                f"sample_temperature must be a finite number >= 0. Received: sample_temperature={self.sample_temperature}"
            )
        positive_number("learning_rate", self.learning_rate)
        positive_number("clip_norm", self.clip_norm, allow_none=True)
        if self.time_limit is not None and not (self.time_limit > 0 and math.isfinite(self.time_limit)):
            raise ConfigError(f"time_limit must be a positive number of seconds. Received: time_limit={self.time_limit}")
        if not (0.0 < self.val_fraction < 1.0):
            raise ConfigError(f"val_fraction must be in (0, 1). Received: val_fraction={self.val_fraction}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={self.precision!r}")
        return self


def defaults(config_class) -> dict:
    """The default value of every field of `ModelConfig` or `TrainConfig` that has one."""
    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}


def resumed_configs(name: str, info: dict, vocab: list, given_model: dict,
                    given_train: dict) -> tuple[ModelConfig, TrainConfig]:
    """Run `name`'s recorded configs (`info` is its run.json), updated by the options given.

    `vocab` is the corpus' vocabulary, which must be the run's; `given_model` / `given_train`
    hold only the options the user passed. Model options and `FIXED_ON_RESUME` may not change.
    """
    if info["vocab"] != vocab:
        missing = sorted(set(vocab) - set(info["vocab"]))
        extra = sorted(set(info["vocab"]) - set(vocab))
        raise CheckpointError(
            f"The corpus vocabulary differs from run {name!r}'s: "
            f"{len(vocab)} characters vs the run's {len(info['vocab'])}"
            + (f"; new characters: {', '.join(map(repr, missing[:10]))}" if missing else "")
            + (f"; characters the corpus lacks: {', '.join(map(repr, extra[:10]))}" if extra else "")
            + ". Resume with the run's corpus, or train a new run."
        )
    model_config = ModelConfig(**info["model"])
    for key, value in given_model.items():
        if getattr(model_config, key) != value:
            raise ConfigError(
                f"Run {name!r} has {key}={getattr(model_config, key)}; it cannot change "
                f"on --resume. Received: {key}={value}"
            )
    recorded = dict(info["training"])
    for key in FIXED_ON_RESUME:
        if key in given_train and given_train[key] != recorded.get(key):
            raise ConfigError(
                f"Run {name!r} was trained with {key}={recorded.get(key)}; it cannot "
                f"change on --resume. Received: {key}={given_train[key]}"
            )
    recorded.update(given_train)
    return model_config, TrainConfig(**recorded).validate()
