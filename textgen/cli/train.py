"""`textgen train`: train a run, with Rich progress on stderr drawn from the trainer's hooks."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from textgen.cli import common
from textgen.cli.common import CheckpointsOption, JsonOption, emit_json, err, out
from textgen.config import DEFAULT_PRESET, PRESETS, ModelConfig, TrainConfig, defaults
from textgen.defaults import (
    CORPUS_RULES,
    MANY_PASSES,
    MANY_PASSES_MIN_DROPOUT,
    NO_BUDGET_PATIENCE,
    PASS_RULES,
    RECIPE_MAX_CHARS,
    RECIPE_SHAPE,
)
from textgen.options import run_options

MODEL = defaults(ModelConfig)
TRAINING = defaults(TrainConfig)


def default(value) -> str:
    """How the help states a default that lives in the configs: "(default: 256)", "(default: 0.006)"."""
    return f"(default: {value:g})" if isinstance(value, float) else f"(default: {value})"


def chosen_lines(chosen: dict) -> list:
    """(reason, "name = value, ...") per line: options chosen one after another for one reason share it."""
    lines = []
    for name, choice in chosen.items():
        shown = f"{name} = {choice['value']}"
        if lines and lines[-1][0] == choice["reason"]:
            lines[-1] = (choice["reason"], f"{lines[-1][1]}, {shown}")
        else:
            lines.append((choice["reason"], shown))
    return lines


class RichProgress:
    """Draws training progress on stderr; the trainer calls these hooks."""

    def __init__(self, enabled: bool = True):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"), console=err, disable=not enabled,
        )
        self.task = None
        self.val = ""
        self.rate_window: list = []

    def on_probe(self, model_options, config):
        if self.enabled:
            shape = f"{model_options['num_layers']}x{model_options['units']}"
            err.print(f"[dim]measuring how fast a {shape} model trains here ({config.precision}, "
                      f"batch {config.batch_size}x{config.seq_len}), to choose its dropout for the time limit…[/]")

    def on_train_begin(self, info):
        self.info = info
        limit = f", time limit {info['time_limit']:.0f}s" if info["time_limit"] else ""
        if self.enabled:
            err.print(f"[dim]{info['parameters']:,} parameters · {info['train_chars']:,} training / "
                      f"{info['val_chars']:,} validation characters · {info['steps_per_epoch']:,} steps per "
                      f"epoch · starting at step {info['step']:,}{limit}[/]")
            for reason, values in chosen_lines(info.get("chosen", {})):
                err.print(f"[dim]chosen: {values} ({reason})[/]")
        self.progress.start()
        self.task = self.progress.add_task("train", total=info["total_steps"], completed=info["step"],
                                           status="compiling…", eta="?")

    def on_step(self, step, logs):
        now = time.time()
        self.rate_window = (self.rate_window + [(now, step)])[-50:]
        rate = 0.0
        if len(self.rate_window) > 1:
            (t0, s0), (t1, s1) = self.rate_window[0], self.rate_window[-1]
            rate = (s1 - s0) / max(t1 - t0, 1e-9)
        cps = rate * logs["chars_per_step"]
        remaining = (self.info["total_steps"] - step) / rate if rate > 0 else math.inf
        if self.info["time_limit"]:
            remaining = min(remaining, max(0.0, self.info["time_limit"] - logs["elapsed"]))
        eta = "?" if math.isinf(remaining) else time.strftime("%H:%M:%S", time.gmtime(remaining))
        if "patience" in self.info.get("chosen", {}) and eta != "?":
            eta = "≤" + eta  # the epoch cap or the time limit; early stopping usually ends the run sooner
        self.progress.update(
            self.task, completed=step, eta=eta,
            status=f"ep {logs['epoch']:.2f} · loss {logs['loss']:.3f}{self.val} · {cps:,.0f} ch/s",
        )

    def on_eval(self, record):
        self.val = f" · val {record['val_loss']:.3f} ({record['val_bpc']:.2f} bpc)"
        if self.enabled:
            self.progress.console.print(
                f"step {record['step']:,} (epoch {record['epoch']:.2f}): val loss {record['val_loss']:.4f} "
                f"nats/char, {record['val_bpc']:.4f} bpc [dim](eval {record['eval_seconds']:.1f}s, "
                f"learning rate {record['learning_rate']:.2e})[/]"
            )

    def on_sample(self, text):
        if self.enabled:
            self.progress.console.print("[dim]sample:[/]")
            self.progress.console.print(text, markup=False, highlight=False)

    def on_checkpoint(self, path):
        pass

    def on_train_end(self, summary):
        self.progress.stop()

def train(
    corpus: Annotated[Optional[list[str]], typer.Argument(help="A text file, or a named corpus (default: shakespeare; with --resume, the run's own); or several files and folders, each file a document.", show_default=False)] = None,
    run: Annotated[Optional[str], typer.Option(help="Run name (a directory under --checkpoints). Default: run-<date>-<time>.")] = None,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run (default: the latest) exactly where it stopped.")] = False,
    use_previous: Annotated[bool, typer.Option("--use-previous", help="With --resume: if the newest checkpoint is damaged, continue from the previous good one.")] = False,
    size: Annotated[Optional[str], typer.Option(help=f"Model size preset: {', '.join(PRESETS)} ({DEFAULT_PRESET} is the default model; sizes in the README); --layers/--units/--embedding-dim override it.")] = None,
    layers: Annotated[Optional[int], typer.Option(help=f"Number of LSTM layers. {default(MODEL['num_layers'])}")] = None,
    units: Annotated[Optional[int], typer.Option(help=f"Units per LSTM layer. {default(MODEL['units'])}")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help=f"Size of the character embedding. {default(MODEL['embedding_dim'])}")] = None,
    dropout: Annotated[Optional[float], typer.Option(help=f"Dropout after each LSTM layer, in [0, 1); textgen picks it by corpus size: {', '.join(f'{d:g} up to {n:,} characters' for n, d, _ in CORPUS_RULES[:-1])}, {CORPUS_RULES[-1][1]:g} above; with --time-limit on a CPU, by the passes over the text the budget buys at this CPU's measured speed: {', '.join(f'{d:g} up to {p:g} passes' for p, d in PASS_RULES)}; over {MANY_PASSES:g} passes, by corpus size but at least {MANY_PASSES_MIN_DROPOUT:g}, and the run stops on a plateau as without a budget (what was chosen is printed and kept in run.json).")] = None,
    weight_drop: Annotated[Optional[float], typer.Option(help=f"Weight-drop in [0, 1): DropConnect on each LSTM's hidden-to-hidden weights, one mask per batch (keeps the fused cuDNN kernel). (default: 0.5 for a text of up to {RECIPE_MAX_CHARS:,} characters trained to its plateau, else 0; off when you give a dropout option; what was chosen is printed and kept in run.json)")] = None,
    input_dropout: Annotated[Optional[float], typer.Option(help="Dropout on the embedded input characters, in [0, 1). (default: 0.1 with --weight-drop's recipe, else 0)")] = None,
    locked_dropout: Annotated[Optional[bool], typer.Option("--locked-dropout/--no-locked-dropout", help="Locked (variational) dropout: one mask per text stream for every time step of a segment, instead of one per character. (default: on with --weight-drop's recipe, else off)")] = None,
    average: Annotated[Optional[float], typer.Option(help=f"Momentum in [0, 1) of the moving average of the weights that evaluation, checkpoints and sampling use (0: the trained weights themselves). Fixed for the run; measured no better. {default(TRAINING['average'])}")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help=f"Characters per training segment (back-propagation length). {default(TRAINING['seq_len'])}; {dict(RECIPE_SHAPE)['seq_len']} with --weight-drop's recipe")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Parallel text streams per step. {default(TRAINING['batch_size'])}; {dict(RECIPE_SHAPE)['batch_size']} with --weight-drop's recipe")] = None,
    epochs: Annotated[Optional[int], typer.Option(help=f"Passes over the training text. Without --epochs and --time-limit, training stops by itself when validation stops improving (--patience {NO_BUDGET_PATIENCE} evaluations, best weights kept; learning rate halved on plateaus), after at most this many. {default(TRAINING['epochs'])}")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help=f"Stop after this many seconds of training, then evaluate and checkpoint; the cosine decay is fitted to it and no epoch cap applies (add --patience to stop earlier on a plateau). On a CPU, a limit that buys over {MANY_PASSES:g} passes over the text is a cap instead: the run halves its learning rate on plateaus and stops when validation is done (--patience {NO_BUDGET_PATIENCE}).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help=f"Adam learning rate. {default(TRAINING['learning_rate'])}")] = None,
    clip_norm: Annotated[Optional[float], typer.Option(help=f"Clip the global gradient norm to this value. {default(TRAINING['clip_norm'])}")] = None,
    checkpoint_seconds: Annotated[Optional[float], typer.Option(help=f"Also checkpoint every this many seconds of wall time. {default(TRAINING['checkpoint_seconds'])}")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help=f"Share of the corpus (its tail) used for validation. {default(TRAINING['val_fraction'])}")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate (and checkpoint) every N steps. (default: every epoch; without --epochs and --time-limit, every epoch or 2M characters, whichever is sooner)")] = None,
    eval_chars: Annotated[Optional[int], typer.Option(help=f"Validation characters scored per evaluation, from the start of the split. {default(TRAINING['eval_chars'])}")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help=f"cosine (decays to {TRAINING['min_lr_fraction']:.0%} by the end of the run: over --decay-steps, else the steps that fit in --time-limit, else all --epochs), constant or plateau (halves after 2 evaluations without improvement; chosen when neither --epochs nor --time-limit is given, as there is no run length to fit a cosine to). {default(TRAINING['lr_schedule'])}")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help=f"Linear learning-rate warm-up steps (constant, cosine). {default(TRAINING['warmup_steps'])}")] = None,
    decay_steps: Annotated[Optional[int], typer.Option(help="Cosine: steps to decay over. (default: with --time-limit, the steps that fit in it, measured while training; else epochs x steps per epoch)")] = None,
    patience: Annotated[Optional[int], typer.Option(help=f"Stop after N evaluations without a better validation loss, restoring the best weights. (default: {NO_BUDGET_PATIENCE} without --epochs and --time-limit, else never)")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="Print a sample every N steps (besides after each evaluation).")] = None,
    sample_temperature: Annotated[Optional[float], typer.Option(help=f"Temperature of the samples printed while training. {default(TRAINING['sample_temperature'])}")] = None,
    state_reset: Annotated[Optional[int], typer.Option(help=f"Each stream forgets its LSTM state every N segments, staggered across streams; 1 = stateless. {default(TRAINING['state_reset'])}")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write Keras TensorBoard logs to <run>/tensorboard.")] = False,
    mixed_precision: Annotated[Optional[bool], typer.Option("--mixed-precision/--no-mixed-precision", help="mixed_float16 on a GPU; logits, softmax and loss stay float32. Refused without a GPU.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="float32, mixed_float16 (a GPU; what --mixed-precision sets) or mixed_bfloat16 (a CPU that computes bfloat16 natively: AVX-512 BF16 or AMX). (default: mixed_bfloat16 on such a CPU for models of 256+ units, else float32; textgen info says which)")] = None,
    jit: Annotated[Optional[bool], typer.Option("--jit/--no-jit", help="XLA-compile the training step. (default: Keras' choice for this backend and device)")] = None,
    strategy: Annotated[Optional[str], typer.Option(help=f"auto, one-device, mirrored (all local GPUs) or multi-worker (hosts in TF_CONFIG; only the chief writes checkpoints); tf.distribute, TensorFlow backend. auto = mirrored with 2+ GPUs. {default(TRAINING['strategy'])}")] = None,
    seed: Annotated[Optional[int], typer.Option(help=f"Random seed (weights, data order, dropout). {default(TRAINING['seed'])}")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus file.")] = "utf-8",
    glob: common.GlobOption = None,
    jsonl: common.JsonlOption = None,
    text_field: common.TextFieldOption = None,
    label_field: common.LabelFieldOption = None,
    csv: common.CsvOption = None,
    text_column: common.TextColumnOption = None,
    label_column: common.LabelColumnOption = None,
    lines: Annotated[bool, typer.Option("--lines", help="Each non-empty line of the corpus is a document (names, titles): the model learns where a line begins and ends; sample them with textgen sample --lines N.")] = False,
    as_json: JsonOption = False,
):
    """Train a character-level LSTM on a corpus, with checkpoints you can resume exactly.

    Example: [bold]textgen train my_corpus.txt --time-limit 600[/]

    Several files or folders: [bold]textgen train notes.txt poems/ --glob '*.txt'[/] (each file a document).

    Records: [bold]textgen train --jsonl reviews.jsonl --text-field text --label-field stars[/]

    Ctrl-C or SIGTERM saves a checkpoint; continue with [bold]textgen train --resume[/].
    """
    from textgen import documents
    from textgen.tables import table_option

    model_options, train_options = run_options(
        size=size, layers=layers, units=units, embedding_dim=embedding_dim, dropout=dropout, seq_len=seq_len,
        weight_drop=weight_drop, input_dropout=input_dropout, locked_dropout=locked_dropout, average=average,
        batch_size=batch_size, epochs=epochs, time_limit=time_limit, learning_rate=learning_rate,
        clip_norm=clip_norm, val_fraction=val_fraction, eval_every=eval_every, eval_chars=eval_chars, seed=seed,
        lr_schedule=lr_schedule, warmup_steps=warmup_steps, decay_steps=decay_steps, patience=patience,
        sample_every=sample_every, sample_temperature=sample_temperature, state_reset=state_reset,
        tensorboard=tensorboard, checkpoint_seconds=checkpoint_seconds, precision=precision,
        mixed_precision=mixed_precision, jit=jit, strategy=strategy)
    table = table_option(jsonl, csv, text_field, text_column, label_field, label_column)
    if resume and not corpus and table is None and glob is None:  # what the run was trained on
        corpus, glob, table, recorded_lines = documents.recorded_corpus(checkpoints_dir, run)
        lines = lines or recorded_lines  # --lines on a run trained without it is refused by open_run
    prepared, name = documents.prepare_corpus(corpus, glob=glob, encoding=encoding, lines=lines, table=table)
    from textgen.training.opening import open_run

    progress = RichProgress(enabled=not as_json)
    trainer = open_run(
        prepared, name, checkpoints_dir, run,
        model_options=model_options, train_options=train_options,
        resume=resume, callbacks=progress, use_previous=use_previous,
    )
    for line in documents.reports(prepared, skipped_only=as_json) + [trainer.validation] * (not as_json):
        if line:  # what was read and skipped, and what validation holds (documents only)
            err.print(line, markup=False, highlight=False, soft_wrap=True)
    for warning in trainer.warnings:
        err.print(f"[bold yellow]Warning:[/] {warning}")
    summary = trainer.run()
    if as_json:
        emit_json(summary)
        return
    reason = summary["stop_reason"] or summary["stopped"]
    val = (f"val loss {summary['val_loss']:.4f} nats/char ({summary['val_bpc']:.4f} bpc)"
           if summary["val_loss"] is not None else "no evaluation")
    if not summary["chief"]:
        out.print(f"{summary['run']} ({summary['strategy']}): {reason} at step {summary['step']:,}; {val}; "
                  "the chief saved the checkpoints")
        return
    out.print(f"[bold]{summary['run']}[/]: step {summary['step']:,} (epoch {summary['epoch']:.2f}); "
              f"{val}; {summary['chars_per_second'] or 0:,.0f} chars/s; saved in {summary['run_dir']}")
    out.print(f"stopped: {reason}", markup=False)
    if summary["stopped"] not in ("finished", "early_stopping"):
        out.print(f"Continue with: textgen train --run {summary['run']} --resume")


def register(app: typer.Typer) -> None:
    """Add the `train` command to `app`."""
    app.command("train")(train)
