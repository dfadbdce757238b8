"""The training loop: `model.train_on_batch` steps over contiguous streams, with exact resume.

The loop is small on purpose: one optimizer step per batch, evaluation and checkpoints at
fixed points, and a `TrainingCallbacks` object (like minGPT's trainer callbacks) through
which the CLI shows progress. The trainer knows nothing about Rich or the terminal; the
learning rate comes from `schedule`, scoring from `evaluate`, the model from `model`.

Exact resume: a checkpoint holds every model variable (weights, carried LSTM state,
dropout RNG state), every optimizer variable (moments, iteration count) and the step
number; the batch for a step is a pure function of (seed, step). Resuming therefore
continues the very same computation as an uninterrupted run.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textgen import checkpoints
from textgen.backend import quiet_import_keras
from textgen.config import ModelConfig, TrainConfig
from textgen.errors import CheckpointError, DivergedError
from textgen.generation.engine import LSTMEngine
from textgen.generation.loading import start_id
from textgen.generation.writers import generate
from textgen.scoring import LN2, build_scorer, score_ids
from textgen.training import distribute, schedule, stopping
from textgen.training.batches import StreamBatches
from textgen.training.model import reset_some_states, reset_states
from textgen.training.variables import (
    assign_model_arrays,
    assign_optimizer_arrays,
    assign_trainable_arrays,
    optimizer_arrays,
    saved_model_arrays,
    set_averages,
    used_arrays,
)

keras = quiet_import_keras()


class TrainingCallbacks:
    """Hooks the trainer calls; the CLI overrides them to draw progress."""

    def on_probe(self, model_options: dict, config) -> None: ...  # measuring a candidate's speed
    def on_train_begin(self, info: dict) -> None: ...
    def on_step(self, step: int, logs: dict) -> None: ...
    def on_eval(self, record: dict) -> None: ...
    def on_sample(self, text: str) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...
    def on_train_end(self, summary: dict) -> None: ...


@dataclass
class Trainer:
    """A run's training, set up by `opening.open_run`: the model (built in its distribution's
    scope), its batches and validation ids; `run()` trains until a stop."""

    run_dir: Path
    model_config: ModelConfig
    config: TrainConfig
    model: object  # keras.Model, compiled with its optimizer
    distribution: distribute.Distribution
    batches: StreamBatches
    val_ids: np.ndarray
    vocab: list
    callbacks: TrainingCallbacks = field(default_factory=TrainingCallbacks)
    resume: checkpoints.Checkpoint | None = None
    chosen: dict = field(default_factory=dict)  # the defaults textgen chose (defaults.choose_defaults)
    warnings: list = field(default_factory=list)  # one line each, shown before training starts
    lock: checkpoints.RunLock | None = None
    stop_reason: str | None = None  # a code: finished, time_limit, early_stopping, SIGINT, SIGTERM, ...

    def __post_init__(self):
        self.optimizer = self.model.optimizer
        self.train_step = self.distribution.step_function(self.model)
        self.scorer = None
        self.step = 0
        self.history: list = []
        self.train_seconds = 0.0
        self.best_val = math.inf
        self.restored_best_from = None
        # Cosine decays over --decay-steps if given, else over the steps that fit in --time-limit
        # (measured while training, see _fit_decay), else over all epochs.
        self.decay_total = schedule.initial_decay_steps(self.config, self.batches.steps_per_epoch)
        self.fitting = schedule.fits_to_time_limit(self.config)
        self.fitted = False
        self._started, self._clock, self._rate_set = None, None, None  # run() sets the first two
        self.tensorboard = None
        if self.resume is not None:
            self._restore(self.resume)

    def scheduled_learning_rate(self, step: int) -> float | None:
        """The learning rate of update `step` (0-based); None for plateau, which sets it itself."""
        return schedule.learning_rate(step, self.config, self.decay_total)

    def _set_learning_rate(self) -> None:
        rate = self.scheduled_learning_rate(self.step)
        if rate is not None and rate != self._rate_set:
            self.optimizer.learning_rate.assign(rate)
            self._rate_set = rate

    def _fit_decay(self) -> None:
        """Cosine under --time-limit: decay over the steps that fit in the time left.

        Steps per second are measured from the end of this process' first step (compiling
        excluded) to now, evaluations and checkpoints included; the fit is repeated after each
        evaluation and saved in every checkpoint, so a resumed run follows the same schedule.
        Workers of a multi-worker run take the mean of their estimates.
        """
        since, first_step = self._clock
        now = time.time()
        rate = (self.step - first_step) / max(now - since, 1e-9)
        left = self.config.time_limit - (now - self._started)
        total = self.distribution.mean(schedule.projected_steps(self.step, rate, left))
        self.decay_total = schedule.fitted_decay_steps(total, self.step,
                                                       self.config.epochs * self.batches.steps_per_epoch)
        self.fitted = True

    def current_learning_rate(self) -> float:
        return float(np.asarray(self.optimizer.learning_rate))

    def best_record(self) -> dict | None:
        """The evaluation with the lowest validation loss so far (the first of equals)."""
        return stopping.best_record(self.history)

    def stop_message(self) -> str | None:
        """Why the run stopped, in one line (None while it runs)."""
        return stopping.stop_message(self.stop_reason, self.history, self.config, capped="epochs" in self.chosen,
                                     restored=self.restored_best_from is not None)

    def evals_since_best(self) -> int:
        """How many evaluations in a row have not improved the best validation loss."""
        return schedule.evals_since_best([record["val_loss"] for record in self.history])

    # -- state ---------------------------------------------------------------------------

    def _restore(self, ckpt: checkpoints.Checkpoint) -> None:
        assign_model_arrays(self.model, checkpoints.load_arrays(ckpt.path))
        assign_optimizer_arrays(self.optimizer, checkpoints.load_arrays(ckpt.path, checkpoints.OPTIMIZER), self.model)
        state = ckpt.state
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best_val = min([r["val_loss"] for r in self.history if "val_loss" in r] or [math.inf])
        if self.fitting and state.get("fitted_decay_steps"):
            # The schedule was fitted to the time limit of the process that started the run.
            self.decay_total, self.fitting, self.fitted = int(state["fitted_decay_steps"]), False, True

    def _state(self) -> dict:
        spe = self.batches.steps_per_epoch
        return {
            "step": self.step,
            "epoch": self.step // spe,
            "step_in_epoch": self.step % spe,
            "steps_per_epoch": spe,
            "chars_seen": self.step * self.batches.chars_per_step,
            "train_seconds": round(self.train_seconds, 3),
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "history": self.history,
            "restored_best_from_step": self.restored_best_from,
            "fitted_decay_steps": self.decay_total if self.fitted else None,
            "stopped": self.stop_reason,
            "stop_reason": self.stop_message(),
            "saved_at": time.time(),
        }

    def save(self, best: bool = False) -> Path:
        if not self.distribution.is_chief:
            return self.run_dir  # multi-worker: only the chief writes checkpoints
        try:
            path = checkpoints.save(self.run_dir, self.step, saved_model_arrays(self.model, self.optimizer),
                                    optimizer_arrays(self.optimizer, self.model), self._state(), best=best)
        except OSError as e:
            previous = checkpoints.list_checkpoints(self.run_dir)
            kept = f"the previous checkpoint {previous[-1].name} is intact" if previous else "no earlier checkpoint exists"
            raise CheckpointError(
                f"Could not write the checkpoint at step {self.step} in {str(self.run_dir)!r}: "
                f"{e.strerror or e}; {kept}."
            ) from None
        self.callbacks.on_checkpoint(path)
        return path

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self) -> dict:
        if self.scorer is None:
            self.scorer = build_scorer(self.model_config)
        self._copy_weights_to_scorer()
        start = time.time()
        total, count = score_ids(self.scorer, self.val_ids)
        loss = total / max(count, 1)
        return {"val_loss": loss, "val_bpc": loss / LN2, "val_chars": count,
                "eval_seconds": round(time.time() - start, 2)}

    def _copy_weights_to_scorer(self) -> None:
        assign_trainable_arrays(self.scorer, used_arrays(self.model, self.optimizer))

    def sample_text(self, length: int, temperature: float) -> str:
        engine = LSTMEngine(used_arrays(self.model, self.optimizer), self.model_config.num_layers, threads=1)
        ids = [int(i[0]) for i in generate(engine, [], length, temperature, seed=self.step,
                                           start_id=start_id(self.vocab))]
        return "".join(self.vocab[i] for i in ids)

    # -- the loop ------------------------------------------------------------------------

    def _restore_best(self) -> None:
        """Early stopping: put the best weights back and checkpoint them as the latest."""
        best = checkpoints.best(self.run_dir)
        if best is None or not self.distribution.is_chief:
            return
        assign_model_arrays(self.model, checkpoints.load_arrays(best.path))
        set_averages(self.optimizer, self.model)  # the best averaged weights are now the run's
        self.restored_best_from = best.step
        self.save()

    def _best_beats_last(self) -> bool:
        """Whether an earlier evaluation was better than the last (the text was memorised since)."""
        best = self.best_record()
        return best is not None and best["val_loss"] < self.history[-1]["val_loss"]

    def _on_signal(self, signum, frame):
        if self.stop_reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts without saving
        self.stop_reason = signal.Signals(signum).name

    def run(self) -> dict:
        """Train until the epochs are done, the time is up, validation stops improving or a
        signal arrives; checkpoint, and return the run's summary."""
        handlers = self._begin()
        try:
            total_steps = self.config.epochs * self.batches.steps_per_epoch
            last_save, last_logs, needs_save = self._started, {}, False
            while self.step < total_steps:
                out_of_time = self.config.time_limit is not None and time.time() - self._started >= self.config.time_limit
                if self.distribution.agree(out_of_time or self.stop_reason is not None):
                    self.stop_reason = self.stop_reason or ("time_limit" if out_of_time else "another worker stopped")
                    break
                last_logs = self._one_step()
                needs_save = True
                if self.step % (self.config.eval_every or self.batches.steps_per_epoch) == 0 or self.step == total_steps:
                    if self.step == total_steps and self.stop_reason is None:
                        self.stop_reason = "finished"  # before the last save, which records it
                    self._evaluate_and_save(last_logs["loss"])
                    last_save, needs_save = time.time(), False
                elif time.time() - last_save >= self.config.checkpoint_seconds:
                    self.save()
                    last_save, needs_save = time.time(), False
            self._finish(needs_save, last_logs)
        finally:
            self._end(handlers)
        summary = self._summary()
        self.callbacks.on_train_end(summary)
        return summary

    def _begin(self) -> dict:
        """Take the signals (returns the previous handlers), announce the run, start TensorBoard."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if hasattr(signal, "SIGXFSZ"):  # a file-size limit must surface as an OSError, not kill us
            handlers[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        spe = self.batches.steps_per_epoch
        self.callbacks.on_train_begin({
            "step": self.step, "total_steps": self.config.epochs * spe, "steps_per_epoch": spe,
            "chars_per_step": self.batches.chars_per_step, "time_limit": self.config.time_limit,
            "parameters": self.model_config.num_parameters(), "train_chars": self.batches.end,
            "val_chars": len(self.val_ids) - 1, "chosen": self.chosen,
        })
        self._started, self._clock = time.time(), None  # _clock: (time, step) after this process' first step
        if self.config.tensorboard:
            self.tensorboard = keras.callbacks.TensorBoard(
                log_dir=str(checkpoints.tensorboard_dir(self.run_dir)), write_graph=False)
            self.tensorboard.set_model(self.model)
            self.tensorboard.on_train_begin()
        return handlers

    def _one_step(self) -> dict:
        """One optimizer step on the batch of the current step; returns its logs."""
        spe = self.batches.steps_per_epoch
        epoch, k = divmod(self.step, spe)
        if k == 0:
            reset_states(self.model)
        else:
            reset_some_states(self.model, k, self.config.state_reset, self.config.batch_size)
        x, y = self.batches.batch(epoch, k)
        self._set_learning_rate()
        t0 = time.time()
        loss = self.train_step(x, y)
        now = time.time()
        self.train_seconds += now - t0
        self.step += 1
        if self._clock is None:
            self._clock = (now, self.step)
        elif self.fitting and self.step - self._clock[1] == schedule.FIT_AFTER_STEPS:
            self._fit_decay()
        if not math.isfinite(loss):
            raise DivergedError(
                f"Training diverged: loss became {loss} at step {self.step}. The last "
                "checkpoint is intact; try a lower --learning-rate or a --clip-norm."
            )
        logs = {"loss": loss, "epoch": self.step / spe, "elapsed": now - self._started,
                "chars_per_step": self.batches.chars_per_step}
        self.callbacks.on_step(self.step, logs)
        if self.config.sample_every and self.step % self.config.sample_every == 0:
            self.callbacks.on_sample(self.sample_text(self.config.sample_chars or 200, self.config.sample_temperature))
        return logs

    def _finish(self, needs_save: bool, last_logs: dict) -> None:
        """After the last step: evaluate and save what is unsaved, put the best weights back
        where an earlier evaluation beat the last, and record why the run stopped."""
        self.fitting = False  # the schedule is final: the last evaluation does not refit it
        if self.stop_reason is None:
            self.stop_reason = "finished"
        if needs_save:
            # Stopped between evaluations (time limit, Ctrl-C, SIGTERM): evaluate and save.
            self._evaluate_and_save(last_logs.get("loss"))
        if self.stop_reason == "early_stopping" or (self.stop_reason == "time_limit" and self._best_beats_last()):
            self._restore_best()
        self._record_stop()

    def _end(self, handlers: dict) -> None:
        if self.tensorboard is not None:
            self.tensorboard.on_train_end()
        for s, h in handlers.items():
            signal.signal(s, h)
        if self.lock is not None:
            self.lock.release()

    def _summary(self) -> dict:
        """The run's result: the best evaluation when its weights were put back, else the last."""
        spe = self.batches.steps_per_epoch
        result = self.best_record() if self.restored_best_from is not None else \
            (self.history[-1] if self.history else None)
        return {
            "run": self.run_dir.name, "run_dir": str(self.run_dir), "stopped": self.stop_reason,
            "step": self.step, "epoch": round(self.step / spe, 3),
            "chars_seen": self.step * self.batches.chars_per_step,
            "train_seconds": round(self.train_seconds, 2),
            "wall_seconds": round(time.time() - self._started, 2),
            "chars_per_second": round(self.step * self.batches.chars_per_step / self.train_seconds, 1)
            if self.train_seconds > 0 else None,
            "val_loss": result["val_loss"] if result else None,
            "val_bpc": result["val_bpc"] if result else None,
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "best_step": self.best_record()["step"] if self.history else None,
            "stop_reason": self.stop_message(),
            "learning_rate": self.current_learning_rate(),
            "parameters": self.model_config.num_parameters(),
            "strategy": self.distribution.describe(), "chief": self.distribution.is_chief,
        }

    def _record_stop(self) -> None:
        """Write why the run stopped into run.json (the chief of a run opened by `open_run`)."""
        if not self.distribution.is_chief or not (self.run_dir / checkpoints.RUN_FILE).exists():
            return
        info = checkpoints.read_run_file(self.run_dir)
        best = self.best_record()
        info.update(stopped=self.stop_reason, stop_reason=self.stop_message(), stopped_at_step=self.step,
                    best_step=best["step"] if best else None)
        checkpoints.write_run_file(self.run_dir, info)

    def _evaluate_and_save(self, train_loss) -> None:
        if self.history and self.history[-1]["step"] == self.step:
            self.save()
            return
        metrics = self.evaluate()
        record = {"step": self.step, "epoch": round(self.step / self.batches.steps_per_epoch, 4),
                  "chars_seen": self.step * self.batches.chars_per_step,
                  "train_loss": train_loss, **metrics, "train_seconds": round(self.train_seconds, 2),
                  "time": time.time()}
        record["learning_rate"] = self.current_learning_rate()
        self.history.append(record)
        self.callbacks.on_eval(record)
        is_best = metrics["val_loss"] < self.best_val
        if is_best:
            self.best_val = metrics["val_loss"]
        stale = self.evals_since_best()
        cfg = self.config
        if self.fitting and self._clock is not None and self.step > self._clock[1]:
            self._fit_decay()  # now counting the evaluations' time too
        halved = schedule.plateau_learning_rate(self.current_learning_rate(), cfg, stale)
        if halved is not None:
            self.optimizer.learning_rate.assign(halved)
        if cfg.patience and stale >= cfg.patience and self.stop_reason is None:
            self.stop_reason = "early_stopping"
        if self.tensorboard is not None:
            self.tensorboard.on_epoch_end(self.step, {
                "loss": train_loss if train_loss is not None else float("nan"),
                "val_loss": metrics["val_loss"], "val_bpc": metrics["val_bpc"],
                "learning_rate": record["learning_rate"]})
        self.save(best=is_best)
        if self.config.sample_chars > 0:
            self.callbacks.on_sample(self.sample_text(self.config.sample_chars,
                                                      self.config.sample_temperature))
