"""The learning-rate schedule as pure functions of the step, the training config and the history.

- constant and cosine: an optional linear warm-up over `warmup_steps` updates, then the
  learning rate held, or a cosine from `learning_rate` down to `min_lr_fraction` of it at
  the last decay step (and flat after);
- the cosine decays over `decay_steps` if given, else over the steps that fit in
  `time_limit` (measured while training and refitted, see `fitted_decay_steps`), else over
  every epoch;
- plateau: no per-step rate; the trainer halves the rate after every `PLATEAU_EVALS`
  evaluations without a new best validation loss, down to the same floor.

The trainer owns the clock and the optimizer; this module only computes numbers.
"""

from __future__ import annotations

import math

from textgen.config import TrainConfig

FIT_AFTER_STEPS = 50  # cosine under a time limit: fit the decay to it after this many timed steps
PLATEAU_EVALS = 2  # plateau: halve the learning rate after this many evaluations without improvement


def learning_rate(step: int, config: TrainConfig, decay_steps: int) -> float | None:
    """The learning rate of update `step` (0-based); None for plateau, which the trainer sets.

    `decay_steps` is the step at which the cosine reaches its floor (`initial_decay_steps`,
    or the fitted value under a time limit).
    """
    if config.lr_schedule == "plateau":
        return None
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = min(1.0, (step - config.warmup_steps) / max(1, decay_steps - config.warmup_steps))
    floor = config.min_lr_fraction
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def initial_decay_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The cosine's length before any fit: --decay-steps, else every step of every epoch."""
    return config.decay_steps or config.epochs * steps_per_epoch


def fits_to_time_limit(config: TrainConfig) -> bool:
    """Whether the cosine's length is to be fitted to --time-limit while training."""
    return config.lr_schedule == "cosine" and config.decay_steps is None and config.time_limit is not None


def projected_steps(step: int, steps_per_second: float, seconds_left: float) -> float:
    """The step a run at `step` reaches in `seconds_left` at `steps_per_second`."""
    return step + steps_per_second * max(0.0, seconds_left)


def fitted_decay_steps(projected: float, step: int, max_steps: int) -> int:
    """The cosine's length fitted to a projected last step: never before `step`, never past the run."""
    return max(step, min(int(round(projected)), max_steps))


def evals_since_best(val_losses: list[float]) -> int:
    """How many evaluations in a row, at the end, have not improved the best validation loss."""
    count, best = 0, math.inf
    for loss in val_losses:
        if loss < best:
            best, count = loss, 0
        else:
            count += 1
    return count


def plateau_learning_rate(current: float, config: TrainConfig, stale: int) -> float | None:
    """Plateau: the halved rate when `stale` evaluations without improvement call for it, else None."""
    if config.lr_schedule != "plateau" or not stale or stale % PLATEAU_EVALS:
        return None
    return max(config.learning_rate * config.min_lr_fraction, current * 0.5)
