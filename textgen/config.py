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
FIXED_ON_RESUME = ("seq_len", "batch_size", "seed", "val_fraction", "state_reset", "precision")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (saved as `run.json["model"]`)."""

    vocab_size: int
    embedding_dim: int = 64
    units: int = 256
    num_layers: int = 2
    dropout: float = 0.0

    def validate(self) -> ModelConfig:
        for name in ("vocab_size", "embedding_dim", "units", "num_layers"):
            positive_int(name, getattr(self, name))
        if self.vocab_size < 2:
            raise ConfigError(
                "The corpus has a one-character vocabulary; there is nothing to predict. "
                f"Received: vocab_size={self.vocab_size}"
            )
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout must be in [0, 1). Received: dropout={self.dropout}")
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


# -- defaults chosen from the corpus and the budget ------------------------------------------

# Dropout and model size by corpus size: (largest corpus in characters, dropout, size preset),
# first match wins. A small corpus is seen many times over in any budget and the network
# memorises it; dropout between the layers keeps validation improving for longer. These rules
# serve runs without a CPU time budget (no budget: trained to a plateau, so many passes; or a
# GPU). Measured by `benchmarks/quality.py --suite` and, for the middle band, by two runs
# without options on the 1 MB slice of the plays: 0.2 was lower than 0.1 from the 6th pass
# on, and 1.5407 against 1.5629 at their best (benchmarks/README.md).
CORPUS_RULES = ((300_000, 0.3, DEFAULT_PRESET), (3_000_000, 0.2, DEFAULT_PRESET), (math.inf, 0.0, DEFAULT_PRESET))


# With a time limit on the CPU the budget says how often the text will be seen: dropout by
# the expected passes over the training text (first match wins). Measured at 300 s: the whole
# plays seen ~2 times without dropout (1.46-1.47 on a fast VM); the 1 MB slice seen ~3.5 times
# best at 0.1 (0.2 worse), and on an AMD EPYC with AVX-512 BF16 the 1 MB slice seen 9.3 times
# (0.1: 1.5447, 0.2: 1.5469) and the Russian corpus seen 8.1 times (0.1: 1.5149, 0.2: 1.5485).
# The passes come from the run's own model timed on this machine before training
# (`model.training_speed`, a few seconds): a matrix-product probe scaled by a constant was off
# by 1.6-2x on two VMs, whose TensorFlow kernels and bfloat16 units differ.
#
# A CPU time limit that buys more than this many passes over the training text is trained as
# a run without a budget (plateau schedule, patience, dropout by corpus size but at least
# MANY_PASSES_MIN_DROPOUT), the time limit a cap. Measured on the 1 MB slice (AMD EPYC with
# AVX-512 BF16, benchmarks/README.md): `--time-limit 1800` with a cosine over its ~47 passes and
# dropout 0.3 ended at 1.5548 (best at pass 33), while the run without options (dropout 0.2,
# plateau, patience 4) stopped by itself after 18 minutes at 1.5313.
MANY_PASSES = 16.0
MANY_PASSES_MIN_DROPOUT = 0.2
PASS_RULES = ((2.5, 0.0), (10.0, 0.1), (MANY_PASSES, 0.2))


def passes_rule(passes: float) -> tuple[float, str]:
    """(dropout, why) for a run expected to pass over its training text `passes` times (at most
    MANY_PASSES: more are trained as without a budget, `choose_defaults`)."""
    low = 0.0
    for limit, dropout in PASS_RULES:
        if passes <= limit:
            return dropout, f"{low:g} to {limit:g}" if low else f"at most {limit:g}"
        low = limit
    raise ValueError(f"{passes:g} passes: over {MANY_PASSES:g} no pass rule applies")


def corpus_rule(corpus_chars: int) -> tuple[float, str, str]:
    """(dropout, size preset, why) for a corpus of `corpus_chars` characters."""
    for i, (limit, dropout, size) in enumerate(CORPUS_RULES):
        if corpus_chars <= limit:
            low = CORPUS_RULES[i - 1][0] if i else 0
            span = (f"over {low:,} characters" if math.isinf(limit) else
                    f"{low:,} to {limit:,} characters" if low else f"up to {limit:,} characters")
            why = (f"a corpus of {span}" + (" is seen many times over: dropout keeps it from being memorised"
                                            if dropout else ": enough text that dropout only slows learning"))
            return dropout, size, why
    raise AssertionError("the last rule covers every size")


# Without --time-limit and --epochs the run trains until validation stops improving:
# evaluate after every pass over the training text, or every this many training characters
# if a pass is longer (so a large corpus does not wait a whole epoch for its first check);
# halve the learning rate after 2 evaluations without a new best (the plateau schedule needs
# no horizon, unlike a cosine); stop after `NO_BUDGET_PATIENCE` of them, keeping the best weights.
# In the measured no-budget curves every halving bought a new best within 2 evaluations and no
# run went more than 2 evaluations between bests before it was done, so 4 (one halving, then
# 2 more chances) ends a finished run 2 passes sooner than 6 did and with the same best.
NO_BUDGET_EVAL_CHARS = 2_000_000
NO_BUDGET_PATIENCE = 4
# With --time-limit alone the time is the budget: no epoch cap worth the name.
TIME_LIMIT_EPOCHS = 1_000_000
MODEL_SIZE_OPTIONS = ("num_layers", "units", "embedding_dim")
# On a CPU with native bfloat16 (AVX-512 BF16, AMX), models this wide train in mixed_bfloat16:
# measured 16% faster for the 2x256 default at the same 300 s validation loss (benchmarks/README.md);
# the matrix units reward big matrices, and a tiny model has nothing to gain.
BFLOAT16_MIN_UNITS = 256


def choose_defaults(given_model: dict, given_train: dict, corpus_chars: int,
                    time_budget: float | None, cpu_only: bool = False,
                    cpu_bfloat16: str | None = None, speed=None) -> tuple[dict, dict, dict]:
    """The options of a new run: the user's, plus textgen's choices for those left open.

    `given_model` / `given_train` hold only the options the user set; `corpus_chars` is the
    corpus' length in characters; `time_budget` the time limit in seconds (None if none);
    `cpu_only` whether training runs on the CPU (no GPU visible), and `cpu_bfloat16` the
    CPU's native bfloat16 units (`devices.native_bfloat16()`, None if it has none);
    `speed(model options, training options)` measures the training characters per second of
    that model on this machine (`model.training_speed`): with a time budget on the CPU,
    dropout then follows the passes over the text that the budget buys.
    Returns (model options, training options, chosen): `chosen` maps each option textgen set
    to {"value", "reason"} (recorded as `run.json["chosen"]`). A given option always wins.
    """
    TrainConfig(**given_train).validate()  # a bad given value is refused before the choices use it
    model, train, chosen = dict(given_model), dict(given_train), {}

    def choose(target: dict, name: str, value, reason: str) -> None:
        if name not in target:
            target[name] = value
            chosen[name] = {"value": value, "reason": reason}

    dropout, size, why = corpus_rule(corpus_chars)
    if not any(name in model for name in MODEL_SIZE_OPTIONS):
        chosen["size"] = {"value": size, "reason": f"the {size} preset ({'x'.join(str(PRESETS[size][k]) for k in ('num_layers', 'units'))}): "
                          "the best of the sizes measured at 300 s (benchmarks/README.md)"}
    for name, value in PRESETS[size].items():
        model.setdefault(name, value)
    if cpu_only and cpu_bfloat16 and model["units"] >= BFLOAT16_MIN_UNITS:
        choose(train, "precision", "mixed_bfloat16",
               f"this CPU computes bfloat16 natively ({cpu_bfloat16}): the {BFLOAT16_MIN_UNITS}-unit "
               "model trains 16-30% faster at the same validation loss (benchmarks/README.md)")
    elif cpu_only:
        choose(train, "precision", "float32",
               "this CPU has no native bfloat16 (AVX-512 BF16 or AMX): emulated, it would only slow training"
               if not cpu_bfloat16 else f"models under {BFLOAT16_MIN_UNITS} units gain nothing from bfloat16")
    passes = None  # the passes over the text the time budget buys, where measured
    if cpu_only and time_budget is not None and speed is not None and "dropout" not in model:
        chars_per_second = speed({**model, "dropout": dropout}, train)
        train_chars = max(1.0, corpus_chars * (1 - train.get("val_fraction", TrainConfig.val_fraction)))
        passes = time_budget * chars_per_second / train_chars
        budget = (f"{time_budget:g} s at {chars_per_second:,.0f} characters/s (measured on this machine) is "
                  f"~{passes:.1f} passes over {train_chars:,.0f} training characters")
        if passes > MANY_PASSES:
            dropout = max(dropout, MANY_PASSES_MIN_DROPOUT)
            why = (f"{budget}, more than the text needs: trained as without a budget, dropout by corpus size "
                   f"(at least {MANY_PASSES_MIN_DROPOUT:g}) keeps it from being memorised")
        else:
            dropout, span = passes_rule(passes)
            why = (f"{budget}; for {span} passes "
                   + ("dropout keeps the text from being memorised" if dropout else "dropout would only slow learning"))
    choose(model, "dropout", dropout, why)

    if "epochs" in train:
        return model, train, chosen  # the user's epochs: no early stopping unless --patience
    defaults_ = defaults(TrainConfig)
    if time_budget is not None:
        choose(train, "epochs", TIME_LIMIT_EPOCHS, "no epoch cap: the time limit ends the run")
        if passes is None or passes <= MANY_PASSES:
            return model, train, chosen
        # The budget buys more passes than the text needs: finish as a run without a budget
        # does (halve the rate on plateaus, stop when validation is done), the time limit a cap.
        choose(train, "patience", NO_BUDGET_PATIENCE,
               f"~{passes:.0f} passes in the time limit, more than the text needs: stop when validation has "
               "not improved for this many evaluations, before the time is up (best weights kept)")
    else:
        choose(train, "epochs", defaults_["epochs"],
               "a safety cap: without --epochs or --time-limit the run stops when validation stops improving")
        choose(train, "patience", NO_BUDGET_PATIENCE,
               "no budget given: stop when validation has not improved for this many evaluations (best weights kept)")
    chars_per_step = train.get("batch_size", defaults_["batch_size"]) * train.get("seq_len", defaults_["seq_len"])
    train_chars = corpus_chars * (1 - train.get("val_fraction", defaults_["val_fraction"]))
    every = max(1, int(min(train_chars, NO_BUDGET_EVAL_CHARS) // chars_per_step))
    choose(train, "eval_every", every,
           f"evaluate every pass over the text, at most every {NO_BUDGET_EVAL_CHARS:,} characters")
    if not {"warmup_steps", "decay_steps"} & set(train):
        choose(train, "lr_schedule", "plateau",
               "no time limit or epoch count to fit a cosine to: halve the rate when validation stalls"
               if time_budget is None else
               "the run may end before its time limit: halve the rate when validation stalls (a cosine fitted "
               "to the whole budget stays high too long)")
    return model, train, chosen
