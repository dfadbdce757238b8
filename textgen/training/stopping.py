"""Why a run stopped, as a code and as one line a user reads.

Codes (`Trainer.stop_reason`): finished (every epoch done), time_limit, early_stopping
(--patience evaluations without a new best validation loss), SIGINT, SIGTERM, and
"another worker stopped" (multi-worker). The line names the best evaluation, since that is
the run's result under early stopping and the number to compare otherwise.
"""

from __future__ import annotations

from textgen.config import TrainConfig
from textgen.training.schedule import evals_since_best


def best_record(history: list[dict]) -> dict | None:
    """The evaluation with the lowest validation loss (the first of equals); None before any."""
    return min(history, key=lambda record: record["val_loss"]) if history else None


def stop_message(reason: str | None, history: list[dict], config: TrainConfig, capped: bool = False,
                 restored: bool = False) -> str | None:
    """One line on why the run stopped; None while it runs.

    `capped`: the epoch count was textgen's safety cap, not the user's; `restored`: early
    stopping, or a time limit reached after the best evaluation, put the best weights back.
    """
    if reason is None:
        return None
    best = best_record(history)
    best_text = f"best {best['val_loss']:.4f} at step {best['step']:,}" if best else "no evaluation"
    if reason == "early_stopping":
        stale = evals_since_best([record["val_loss"] for record in history])
        return (f"validation loss has not improved for {stale} evaluations "
                f"({best_text}{', weights restored' if restored else ''})")
    if reason == "finished":
        cap = " (the safety cap: validation was still improving)" if capped else ""
        return f"epochs done: {config.epochs:,}{cap} ({best_text})"
    if reason == "time_limit":
        return f"time limit reached: {config.time_limit:g} s ({best_text}{', weights restored' if restored else ''})"
    if reason in ("SIGINT", "SIGTERM"):
        return f"interrupted ({'Ctrl-C' if reason == 'SIGINT' else 'SIGTERM'}; {best_text})"
    return reason
