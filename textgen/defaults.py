"""The defaults policy: what a new run trains with when options are left open, and why.

The corpus' size, the CPU time budget and the machine's measured speed decide the model
size, dropout, precision, stopping and schedule; every choice is recorded with its reason
(`run.json["chosen"]`), and an option the user gave always wins. Pure Python, like config.
"""

from __future__ import annotations

import math

from textgen.config import DEFAULT_PRESET, PRESETS, TrainConfig, defaults

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

# The regularised recipe (AWD-LSTM, Merity et al. 2017: weight-drop on the hidden-to-hidden
# weights, locked dropout, dropout on the input characters) for a small text seen many times
# over: up to RECIPE_MAX_CHARS characters, trained to a plateau (no budget, or a CPU budget of
# over MANY_PASSES passes). Measured on an AMD EPYC with AVX-512 BF16 (benchmarks/README.md): the
# 100 KB slice of the plays at 300 s, 1.7919 nats against 1.8350 without it, at the same speed;
# but on the 1 MB slice it learns far slower (1.6907 after 10 passes against 1.5754 at that point
# and 1.5313 at the plateau without it; 1.6500 against 1.5436 at 300 s, ~9 passes).
RECIPE = (("weight_drop", 0.5), ("input_dropout", 0.1), ("locked_dropout", True))
RECIPE_MAX_CHARS = CORPUS_RULES[0][0]
RECIPE_OFF = {"weight_drop": 0.0, "input_dropout": 0.0, "locked_dropout": False}
# With the recipe, longer back-propagation through time (AWD-LSTM's character models use 150-200
# steps): 32 streams of 100 characters, the same characters per step as 128 x 25. Measured with the
# recipe on the 100 KB slice at 300 s: 1.7760 against 1.7919, though 20% slower per character.
RECIPE_SHAPE = (("seq_len", 100), ("batch_size", 32))
REGULARISATION_OPTIONS = ("dropout", *RECIPE_OFF)
# Averaged weights (an exponential moving average, `--average`) bought nothing measured: 1.8055
# against 1.7919 on the 100 KB slice with the recipe (momentum 0.99), 1.4897 against 1.4876 on the
# whole plays at 300 s. Off unless asked for (`TrainConfig.average` is 0): not a choice by corpus.


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
    given_regularisation = [name for name in REGULARISATION_OPTIONS if name in given_model]
    # Known to see its text many times over: the passes measured for a CPU budget, else the epochs
    # given, else (no budget) trained to its plateau. A GPU's budget buys an unknown number: no recipe.
    many_passes = (passes > MANY_PASSES if passes is not None else
                   train["epochs"] > MANY_PASSES if "epochs" in train else time_budget is None)
    recipe = False
    for name, value in RECIPE:
        if given_regularisation:
            choose(model, name, RECIPE_OFF[name], f"--{given_regularisation[0].replace('_', '-')} was given: "
                   "the regularisation is the user's (add this option to combine them)")
        elif model["dropout"] > 0 and many_passes and corpus_chars <= RECIPE_MAX_CHARS:
            choose(model, name, value, f"a text of up to {RECIPE_MAX_CHARS:,} characters seen many times over: the "
                   "regularised recipe (weight-drop, locked dropout) goes on improving where dropout alone stops "
                   "(benchmarks/README.md)")
            recipe = True
        elif model["dropout"] == 0:
            choose(model, name, RECIPE_OFF[name], "no dropout: the text is not seen often enough to need regularisation")
        elif not many_passes:
            choose(model, name, RECIPE_OFF[name], "few passes over the text: more regularisation would only slow learning")
        else:
            choose(model, name, RECIPE_OFF[name], f"over {RECIPE_MAX_CHARS:,} characters the recipe learns too slowly "
                   "to pay within hours on a CPU: dropout alone (benchmarks/README.md)")
    if recipe and not {"seq_len", "batch_size"} & set(train):
        for name, value in RECIPE_SHAPE:
            choose(train, name, value, "with the regularised recipe, longer back-propagation through time: "
                   f"{dict(RECIPE_SHAPE)['batch_size']} streams of {dict(RECIPE_SHAPE)['seq_len']} characters, as many "
                   "characters per step as 128 x 25 (benchmarks/README.md)")

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
