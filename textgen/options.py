"""The options of a training run as a user gives them, turned into what `open_run` takes.

`textgen train` (its flags) and `textgen.train` (its keywords) accept the same options under
the same names; both call `run_options`, so a preset, the precision flags and an unknown name
are read in one place. Pure Python: no Keras.
"""

from __future__ import annotations

from textgen.config import preset
from textgen.errors import ConfigError

# The model options as the user names them -> ModelConfig's field names.
MODEL_OPTIONS = {"layers": "num_layers", "units": "units", "embedding_dim": "embedding_dim", "dropout": "dropout",
                 "input_dropout": "input_dropout", "weight_drop": "weight_drop", "locked_dropout": "locked_dropout"}
# Options handed to TrainConfig under their own names.
TRAIN_OPTIONS = ("seq_len", "batch_size", "epochs", "time_limit", "learning_rate", "clip_norm", "val_fraction",
                 "eval_every", "eval_chars", "seed", "lr_schedule", "warmup_steps", "decay_steps", "patience",
                 "sample_every", "sample_temperature", "state_reset", "tensorboard", "checkpoint_seconds",
                 "jit", "strategy", "average")
# Everything `run_options` accepts: the two above, the size preset and the precision flags.
OPTION_NAMES = ("size", *MODEL_OPTIONS, *TRAIN_OPTIONS, "precision", "mixed_precision")


def run_options(**options) -> tuple[dict, dict]:
    """(model_options, train_options) for `open_run` from the options a user gave (None: not given).

    `size` fills what `layers`/`units`/`embedding_dim` leave open; `mixed_precision` is read
    as a precision; `tensorboard=False` means not asked. An unknown name is a ConfigError.

    Example: ``run_options(size="small", epochs=3)`` ->
    ``({"num_layers": 1, "units": 256, ...}, {"epochs": 3, ...})``
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"Unknown training option {unknown[0]!r}. Options: {', '.join(OPTION_NAMES)}. "
                          f"Received: {unknown[0]}={options[unknown[0]]!r}")
    given = {name: options.get(name) for name in OPTION_NAMES}
    if given["size"] is not None:  # the preset fills what layers/units/embedding_dim leave open
        chosen = preset(given["size"])
        for name in ("layers", "units", "embedding_dim"):
            if given[name] is None:
                given[name] = chosen[MODEL_OPTIONS[name]]
    model_options = {field: given[name] for name, field in MODEL_OPTIONS.items()}
    train_options = {name: given[name] for name in TRAIN_OPTIONS}
    train_options["tensorboard"] = train_options["tensorboard"] or None
    train_options["precision"] = precision_option(given["precision"], given["mixed_precision"])
    return model_options, train_options


def precision_option(precision: str | None, mixed_precision: bool | None) -> str | None:
    """`precision`, or what `mixed_precision` True / False says (None: textgen chooses)."""
    implied = None if mixed_precision is None else ("mixed_float16" if mixed_precision else "float32")
    if precision is not None and implied is not None and precision != implied:
        raise ConfigError(f"--precision {precision} contradicts --{'' if mixed_precision else 'no-'}mixed-precision "
                          f"(which means {implied}); give one of them. Received: precision={precision!r}")
    return precision if precision is not None else implied
