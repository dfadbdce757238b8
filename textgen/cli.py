"""The `textgen` command line: Typer commands that call the library and print with Rich.

Errors: every `TextgenError` (and every usage error) is printed as one line on stderr,
`Error: ...`, with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from textgen.errors import ConfigError, TextgenError

try:  # Typer >= 0.24 vendors Click; older releases use the click package.
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1):
    """Print one line to stderr and exit with `code`."""
    sys.stdout.flush()
    text = " ".join(str(message).split())
    print(f"Error: {text}", file=sys.stderr, flush=True)
    sys.exit(code)


class OneLineErrors(TyperGroup):
    """Turns user mistakes (ours and Click's) into one-line messages without tracebacks."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if hasattr(signal, "SIGXFSZ"):  # a file-size limit must surface as an error message, not a crash
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except TextgenError as e:
            fail(str(e), e.exit_code)
        except click_exceptions.NoArgsIsHelpError as e:
            print(e.ctx.get_help() if e.ctx else str(e))
            sys.exit(0)
        except click_exceptions.UsageError as e:
            hint = f" (see: {e.ctx.command_path} --help)" if e.ctx else ""
            fail(f"{e.format_message()}{hint}", 2)
        except typer.Abort:
            fail("Aborted.", 130)
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            fail("Interrupted.", 130)
        except OSError as e:  # disk full, permission denied, file-size limit...
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}", 1)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`): not an error
            sys.exit(0)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help="Character-level LSTM text generation: prepare a corpus, train, sample, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

CheckpointsOption = Annotated[
    Path, typer.Option("--checkpoints", help="Directory holding the runs.", envvar="TEXTGEN_CHECKPOINTS")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _positive(name: str, value):
    if value is not None and value <= 0:
        raise ConfigError(f"--{name} must be positive. Received: {name.replace('-', '_')}={value}")
    return value


# ----------------------------------------------------------------------------- prepare


@app.command()
def prepare(
    corpus: Annotated[Optional[str], typer.Argument(help="A text file, or a named corpus (default: shakespeare).")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    val_fraction: Annotated[float, typer.Option(help="Share of the corpus (its tail) kept for validation.")] = 0.1,
    as_json: JsonOption = False,
):
    """Encode a corpus into the cache and show its statistics, without training.

    Example: [bold]textgen prepare my_corpus.txt --val-fraction 0.05[/]
    """
    from textgen import corpus as corpus_lib
    from textgen import named

    path, name = named.resolve(corpus)
    start = time.time()
    prepared = corpus_lib.prepare(path, encoding=encoding)
    stats = corpus_lib.split_stats(prepared, val_fraction)
    stats = {"corpus": name, **stats, "seconds": round(time.time() - start, 2)}
    if as_json:
        emit_json(stats)
        return
    table = Table(title=f"Corpus {name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("characters", f"{stats['characters']:,}")
    table.add_row("vocabulary", f"{stats['vocab_size']:,} distinct characters")
    table.add_row("train", f"{stats['train_chars']:,}")
    table.add_row("validation", f"{stats['val_chars']:,} (last {val_fraction:.0%})")
    unseen = stats["val_chars_unseen_in_train"]
    shown = "".join(stats["val_unseen_vocab"][:20])
    table.add_row("validation chars never seen in training", f"{unseen:,}" + (f"  {shown!r}" if unseen else ""))
    table.add_row("ids", f"{stats['ids_dtype']} memmap, {stats['cache']}")
    table.add_row("sha256", stats["sha256"][:16] + "…")
    out.print(table)


# ----------------------------------------------------------------------------- train


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

    def on_train_begin(self, info):
        self.info = info
        limit = f", time limit {info['time_limit']:.0f}s" if info["time_limit"] else ""
        if self.enabled:
            err.print(f"[dim]{info['parameters']:,} parameters · {info['train_chars']:,} training / "
                      f"{info['val_chars']:,} validation characters · {info['steps_per_epoch']:,} steps per "
                      f"epoch · starting at step {info['step']:,}{limit}[/]")
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


@app.command()
def train(
    corpus: Annotated[Optional[str], typer.Argument(help="A text file, or a named corpus. Default: shakespeare.")] = None,
    run: Annotated[Optional[str], typer.Option(help="Run name (a directory under --checkpoints). Default: run-<date>-<time>.")] = None,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run (default: the latest) exactly where it stopped.")] = False,
    use_previous: Annotated[bool, typer.Option("--use-previous", help="With --resume: if the newest checkpoint is damaged, continue from the previous good one.")] = False,
    size: Annotated[Optional[str], typer.Option(help="Model size preset: small, medium (the default model) or large (sizes in the README); --layers/--units/--embedding-dim override it.")] = None,
    layers: Annotated[Optional[int], typer.Option(help="Number of LSTM layers. (default: 2)")] = None,
    units: Annotated[Optional[int], typer.Option(help="Units per LSTM layer. (default: 256)")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Size of the character embedding. (default: 64)")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout between layers, in [0, 1). (default: 0)")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Characters per training segment (back-propagation length). (default: 25)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Parallel text streams per step. (default: 128)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training text. (default: 20)")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds of training, then evaluate and checkpoint.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate. (default: 0.006)")] = None,
    clip_norm: Annotated[Optional[float], typer.Option(help="Clip the global gradient norm to this value. (default: 1.0)")] = None,
    checkpoint_seconds: Annotated[Optional[float], typer.Option(help="Also checkpoint every this many seconds of wall time. (default: 120)")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Share of the corpus (its tail) used for validation. (default: 0.1)")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate (and checkpoint) every N steps. (default: every epoch)")] = None,
    eval_chars: Annotated[Optional[int], typer.Option(help="Validation characters scored per evaluation, from the start of the split. (default: 1000000)")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="cosine (decays to 10% by the end of the run: over --decay-steps, else the steps that fit in --time-limit, else all --epochs), constant or plateau (halves after 2 evaluations without improvement). (default: cosine)")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear learning-rate warm-up steps (constant, cosine). (default: 0)")] = None,
    decay_steps: Annotated[Optional[int], typer.Option(help="Cosine: steps to decay over. (default: with --time-limit, the steps that fit in it, measured while training; else epochs x steps per epoch)")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop after N evaluations without a better validation loss, restoring the best weights.")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="Print a sample every N steps (besides after each evaluation).")] = None,
    sample_temperature: Annotated[Optional[float], typer.Option(help="Temperature of the samples printed while training. (default: 0.8)")] = None,
    state_reset: Annotated[Optional[int], typer.Option(help="Each stream forgets its LSTM state every N segments, staggered across streams; 1 = stateless. (default: 20)")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write Keras TensorBoard logs to <run>/tensorboard.")] = False,
    mixed_precision: Annotated[Optional[bool], typer.Option("--mixed-precision/--no-mixed-precision", help="mixed_float16 on a GPU; logits, softmax and loss stay float32. Refused without a GPU.")] = None,
    jit: Annotated[Optional[bool], typer.Option("--jit/--no-jit", help="XLA-compile the training step. (default: Keras' choice for this backend and device)")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="auto, one-device, mirrored (all local GPUs) or multi-worker (hosts in TF_CONFIG; only the chief writes checkpoints); tf.distribute, TensorFlow backend. auto = mirrored with 2+ GPUs. (default: auto)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (weights, data order, dropout). (default: 0)")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus file.")] = "utf-8",
    as_json: JsonOption = False,
):
    """Train a character-level LSTM on a corpus, with checkpoints you can resume exactly.

    Example: [bold]textgen train my_corpus.txt --time-limit 600[/]

    Ctrl-C or SIGTERM saves a checkpoint; continue with [bold]textgen train --resume[/].
    """
    from textgen import corpus as corpus_lib
    from textgen import named

    for name, value in (("layers", layers), ("units", units), ("embedding-dim", embedding_dim),
                        ("seq-len", seq_len), ("batch-size", batch_size), ("epochs", epochs),
                        ("time-limit", time_limit), ("learning-rate", learning_rate),
                        ("clip-norm", clip_norm), ("eval-every", eval_every), ("eval-chars", eval_chars),
                        ("decay-steps", decay_steps), ("patience", patience), ("sample-every", sample_every),
                        ("state-reset", state_reset), ("checkpoint-seconds", checkpoint_seconds)):
        _positive(name, value)
    if size is not None:
        from textgen.presets import preset

        chosen = preset(size)
        layers = layers if layers is not None else chosen["num_layers"]
        units = units if units is not None else chosen["units"]
        embedding_dim = embedding_dim if embedding_dim is not None else chosen["embedding_dim"]
    path, name = named.resolve(corpus)
    prepared = corpus_lib.prepare(path, encoding=encoding)
    from textgen.train import open_run

    progress = RichProgress(enabled=not as_json)
    trainer = open_run(
        prepared, name, checkpoints_dir, run,
        model_options={"num_layers": layers, "units": units, "embedding_dim": embedding_dim, "dropout": dropout},
        train_options={"seq_len": seq_len, "batch_size": batch_size, "epochs": epochs,
                       "time_limit": time_limit, "learning_rate": learning_rate, "clip_norm": clip_norm,
                       "val_fraction": val_fraction, "eval_every": eval_every, "eval_chars": eval_chars,
                       "seed": seed, "lr_schedule": lr_schedule, "warmup_steps": warmup_steps,
                       "decay_steps": decay_steps, "patience": patience, "sample_every": sample_every,
                       "sample_temperature": sample_temperature, "state_reset": state_reset,
                       "tensorboard": tensorboard or None, "checkpoint_seconds": checkpoint_seconds,
                       "precision": None if mixed_precision is None else ("mixed_float16" if mixed_precision else "float32"),
                       "jit": jit, "strategy": strategy},
        resume=resume, callbacks=progress, use_previous=use_previous,
    )
    for warning in trainer.cudnn_warnings:
        err.print(f"[bold yellow]Warning:[/] {warning}")
    summary = trainer.run()
    if as_json:
        emit_json(summary)
        return
    reason = {"finished": "finished", "time_limit": "time limit reached", "early_stopping": "early stopping",
              "SIGINT": "interrupted (Ctrl-C)", "SIGTERM": "stopped by SIGTERM"}.get(summary["stopped"], summary["stopped"])
    val = (f"val loss {summary['val_loss']:.4f} nats/char ({summary['val_bpc']:.4f} bpc)"
           if summary["val_loss"] is not None else "no evaluation")
    if not summary["chief"]:
        out.print(f"{summary['run']} ({summary['strategy']}): {reason} at step {summary['step']:,}; {val}; "
                  "the chief saved the checkpoints")
        return
    out.print(f"[bold]{summary['run']}[/]: {reason} at step {summary['step']:,} (epoch {summary['epoch']:.2f}); "
              f"{val}; {summary['chars_per_second'] or 0:,.0f} chars/s; saved in {summary['run_dir']}")
    if summary["stopped"] != "finished":
        out.print(f"Continue with: textgen train --run {summary['run']} --resume")


# ----------------------------------------------------------------------------- sample


def _temperatures(values: list[str]) -> list[float]:
    from textgen.sampling import check_temperature

    temps = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                t = float(part)
            except ValueError:
                raise ConfigError(f"temperature must be a number. Received: temperature={part!r}") from None
            temps.append(check_temperature(t))
    if not temps:
        raise ConfigError("Give at least one --temperature.")
    return temps


def _unescape(text: str) -> str:
    """Read \\n, \\t and \\\\ in an option value as newline, tab and backslash."""
    import re

    return re.sub(r"\\(\\|n|t)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


class _TextSink:
    """Where sampled text goes: stdout (flushed at least every 20 ms) and, with --output,
    a temporary file renamed over FILE when sampling ends (so FILE is never half-written)."""

    def __init__(self, to_stdout: bool, output: Optional[Path]):
        self.to_stdout, self.output = to_stdout, output
        self.file = None
        if output is not None:
            if output.is_dir():
                raise ConfigError(f"--output must be a file, not a directory. Received: output={str(output)!r}")
            if not output.parent.is_dir():
                raise ConfigError(f"--output's directory does not exist. Received: output={str(output)!r}")
            self.tmp = output.with_name(f".{output.name}.tmp-{__import__('os').getpid()}")
            self.file = open(self.tmp, "w", encoding="utf-8")
        self.last_flush = 0.0

    def write(self, text: str, to_stdout: bool = True) -> None:
        if not text:
            return
        if self.file is not None:
            self.file.write(text)
        if self.to_stdout and to_stdout:
            sys.stdout.write(text)
            now = time.monotonic()
            if now - self.last_flush > 0.02:
                sys.stdout.flush()
                self.last_flush = now

    def close(self, keep: bool) -> None:
        if self.to_stdout:
            sys.stdout.flush()
        if self.file is not None:
            import os

            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if keep:
                os.replace(self.tmp, self.output)
            else:
                self.tmp.unlink(missing_ok=True)


def _novelty_line(report: dict) -> str:
    return (f"novelty: longest span copied from the training text {report['longest_copied']:,} characters; "
            f"{report['copied_share']:.1%} of characters inside copied spans of {report['min_span']}+")


def _interactive(engine, vocab, temps, length, seed, top_k, top_p, stops, start_id) -> None:
    """Read a prime per line from stdin and stream its continuation; Ctrl-D / Ctrl-C leave."""
    from textgen.errors import CorpusError
    from textgen.sampling import TextStreams

    err.print("[dim]Type a prime and press Enter (an empty line: no prime). Ctrl-D or Ctrl-C to leave.[/]")
    turn = 0
    try:
        while True:
            sys.stderr.write("prime> ")
            sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                break
            prime = line.rstrip("\r\n")
            try:
                prime_ids = vocab.encode(prime).tolist()
            except CorpusError as e:
                print(f"Error: {e}", file=sys.stderr, flush=True)
                continue
            for t in temps:
                if len(temps) > 1:
                    out.rule(f"temperature {t:g}", style="dim")
                sys.stdout.write(prime)
                sink = _TextSink(True, None)
                for pieces in TextStreams(engine, vocab.chars, prime_ids, length, t, 1, seed + turn,
                                          top_k, top_p, start_id, stops):
                    sink.write(pieces[0])
                sink.write("\n")
                sink.close(keep=True)
            turn += 1
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    sys.stderr.write("\n")
    sys.stderr.flush()


@app.command()
def sample(
    temperature: Annotated[List[str], typer.Option(help="Sampling temperature; 0 is greedy. Repeat or comma-separate for one labelled sample per value: --temperature 0.5,1.0")] = ["0.8"],
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 500,
    prime: Annotated[str, typer.Option(help="Text the samples continue from (printed before the continuation). \\n is a newline.")] = "",
    stop: Annotated[List[str], typer.Option(help="Stop a sample at the first occurrence of this string (left out of the output). Repeat for several; \\n is a newline.")] = [],
    num_samples: Annotated[int, typer.Option(help="Samples per temperature, generated as one batch; sample i is seeded by (seed, i).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: the same checkpoint and seed give the same text. (default: random)")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k most likely characters (k >= 1).")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Sample only from the smallest set of characters with probability mass >= p, p in (0, 1].")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Also write the text to this file (replaced atomically when sampling ends).")] = None,
    novelty: Annotated[bool, typer.Option("--novelty", help="Report, per sample, the longest span copied verbatim from the training text and the share of characters in copied spans of 20+.")] = False,
    interactive: Annotated[bool, typer.Option("--interactive", help="Prompt for a prime, stream its continuation, repeat; Ctrl-D or Ctrl-C to leave.")] = False,
    run: Annotated[Optional[str], typer.Option(help="Run to sample from. (default: the most recently trained)")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest, best, or a checkpoint directory name such as ckpt-00001200.")] = "latest",
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    use_previous: Annotated[bool, typer.Option("--use-previous", help="If the newest checkpoint is damaged, use the previous good one.")] = False,
    as_json: JsonOption = False,
):
    """Generate text from a trained run, streamed as it is written.

    Example: [bold]textgen sample --temperature 0.7 --length 500 --prime "ROMEO:" --stop "\\n\\n"[/]
    """
    from textgen import checkpoints, sampling
    from textgen.corpus import Vocabulary

    temps = _temperatures(temperature)
    if length < 1:
        raise ConfigError(f"--length must be a positive integer. Received: length={length}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be a positive integer. Received: num_samples={num_samples}")
    sampling.check_top_k(top_k)
    sampling.check_top_p(top_p)
    prime = _unescape(prime)
    stops = sampling.check_stops([_unescape(s) for s in stop])
    if interactive:
        for name, given in (("--json", as_json), ("--output", output is not None), ("--novelty", novelty),
                            ("--prime", bool(prime)), ("--num-samples > 1", num_samples > 1)):
            if given:
                raise ConfigError(f"--interactive reads primes from the keyboard; it does not combine with {name}.")
    directory = checkpoints.find_run(checkpoints_dir, run)
    info, ckpt, engine = sampling.load_run(directory, checkpoint, use_previous=use_previous)
    vocab = Vocabulary(info["vocab"])
    prime_ids = vocab.encode(prime).tolist() if prime else []
    start_id = vocab.index.get("\n", 0)
    if seed is None:
        seed = int.from_bytes(__import__("os").urandom(4), "little")
    if "fell_back_from" in ckpt.state:
        err.print(f"[yellow]Newest checkpoint {ckpt.state['fell_back_from']} is damaged; using {ckpt.path.name}.[/]")
    if interactive:
        return _interactive(engine, vocab, temps, length, seed, top_k, top_p, stops, start_id)
    corpus = None
    if novelty:
        from textgen import novelty as novelty_lib

        corpus = novelty_lib.training_corpus(info)  # before sampling: a missing corpus fails fast
    streaming = num_samples == 1 and not as_json
    keep_text = as_json or not streaming or novelty
    sink = _TextSink(to_stdout=not as_json, output=output)
    labelled = num_samples > 1 or len(temps) > 1
    results = []
    finished = False
    try:
        for t in temps:
            streams = sampling.TextStreams(engine, vocab.chars, prime_ids, length, t, num_samples, seed,
                                           top_k, top_p, start_id, stops)
            if streaming:
                if labelled:
                    out.rule(f"temperature {t:g}", style="dim")
                    sink.write(f"--- temperature {t:g} ---\n", to_stdout=False)
                sink.write(prime)
            parts = [[] for _ in range(num_samples)]
            for pieces in streams:
                if streaming:
                    sink.write(pieces[0])
                if keep_text:
                    for i, piece in enumerate(pieces):
                        if piece:
                            parts[i].append(piece)
            if streaming:
                sink.write("\n")
                sys.stdout.flush()
            for i, stopped in enumerate(streams.stopped):
                result = {"index": i, "temperature": t, "text": "".join(parts[i]) if keep_text else None,
                          "stop": stopped}
                if corpus is not None:
                    from textgen.novelty import novelty as novelty_report

                    result["novelty"] = novelty_report(vocab.encode(result["text"]), corpus)
                    if streaming:
                        out.print(f"[dim]{_novelty_line(result['novelty'])}[/]")
                results.append(result)
            if not streaming:
                for r in results[-num_samples:]:
                    label = f"sample {r['index'] + 1} · temperature {r['temperature']:g}"
                    if labelled:
                        sink.write(f"--- {label} ---\n", to_stdout=False)
                        if not as_json:
                            out.rule(label, style="dim")
                    sink.write(prime + r["text"] + "\n", to_stdout=False)
                    if not as_json:
                        out.print(prime + r["text"], markup=False, highlight=False)
                        if "novelty" in r:
                            out.print(f"[dim]{_novelty_line(r['novelty'])}[/]")
        finished = True
    finally:
        sink.close(keep=finished)
    if as_json:
        emit_json({"run": directory.name, "checkpoint": ckpt.path.name, "step": ckpt.step, "seed": seed,
                   "prime": prime, "length": length, "top_k": top_k, "top_p": top_p, "stop": stops,
                   "samples": results})


# ----------------------------------------------------------------------------- evaluate


@app.command()
def evaluate(
    text_file: Annotated[Path, typer.Argument(help="Text to score under the model.")],
    run: Annotated[Optional[str], typer.Option(help="Run to evaluate. (default: the most recently trained)")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest or best.")] = "latest",
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    as_json: JsonOption = False,
):
    """Bits per character of a text under a trained model (state carried through the text).

    Example: [bold]textgen evaluate held_out.txt --run shakespeare[/]
    """
    from textgen import checkpoints
    from textgen.evaluate import evaluate_file

    if checkpoint not in ("latest", "best"):
        raise ConfigError(f"--checkpoint must be latest or best. Received: checkpoint={checkpoint!r}")
    directory = checkpoints.find_run(checkpoints_dir, run)
    result = evaluate_file(directory, text_file, encoding=encoding, which=checkpoint)
    if as_json:
        emit_json(result)
        return
    out.print(f"{result['file']}: {result['nats_per_char']:.4f} nats/char = [bold]{result['bits_per_char']:.4f} "
              f"bits/char[/] over {result['scored']:,} characters (run {result['run']}, step {result['step']:,})")


# ----------------------------------------------------------------------------- runs

runs_app = typer.Typer(no_args_is_help=False)
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """List the runs: corpus, size, parameters, characters seen, best validation bpc, time.

    Example: [bold]textgen runs[/]  ·  [bold]textgen runs show RUN[/]
    """
    if ctx.invoked_subcommand is not None:
        return
    from textgen import runs as runs_lib

    rows = runs_lib.list_summaries(checkpoints_dir)
    if as_json:
        emit_json({"checkpoints": str(checkpoints_dir), "runs": rows})
        return
    if not rows:
        out.print(f"No runs in {checkpoints_dir}. Train one: textgen train")
        return
    table = Table(title=f"Runs in {checkpoints_dir}", title_justify="left")
    for column in ("run", "corpus", "size", "params", "chars seen", "best bpc", "train time", "updated"):
        table.add_column(column, justify="right" if column not in ("run", "corpus") else "left")
    for r in rows:
        if "error" in r and "corpus" not in r:
            table.add_row(r["name"], f"[red]{r['error']}[/]", *[""] * 6)
            continue
        bpc = f"{r['best_val_bpc']:.4f}" if r.get("best_val_bpc") is not None else "-"
        table.add_row(r["name"], str(r.get("corpus")), r.get("size", "-"), f"{r.get('parameters') or 0:,}",
                      f"{r.get('chars_seen', 0):,}", bpc,
                      time.strftime("%H:%M:%S", time.gmtime(r.get("train_seconds") or 0)),
                      runs_lib.ago(r.get("updated")))
    out.print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="The run to show.")],
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    as_json: JsonOption = False,
):
    """Show a run's configuration and metric history, with its validation curve.

    Example: [bold]textgen runs show run-20260101-120000[/]
    """
    from textgen import runs as runs_lib

    data = runs_lib.show(checkpoints_dir, run)
    if as_json:
        emit_json(data)
        return
    config = Table(title=f"Run {run}", show_header=False, title_justify="left")
    config.add_column(style="bold")
    config.add_column()
    for section in ("model", "training", "corpus"):
        for key, value in (data.get(section) or {}).items():
            if value is not None:
                config.add_row(f"{section}.{key}", str(value))
    out.print(config)
    history = [r for r in data["history"] if "val_loss" in r]
    if history:
        table = Table(title="Metric history", title_justify="left")
        for column in ("step", "epoch", "chars seen", "train loss", "val loss", "val bpc", "learning rate"):
            table.add_column(column, justify="right")
        for r in history:
            train_loss = f"{r['train_loss']:.4f}" if r.get("train_loss") is not None else "-"
            lr = f"{r['learning_rate']:.2e}" if r.get("learning_rate") is not None else "-"
            table.add_row(f"{r['step']:,}", f"{r.get('epoch', 0):.2f}", f"{r.get('chars_seen', 0):,}", train_loss,
                          f"{r['val_loss']:.4f}", f"{r['val_bpc']:.4f}", lr)
        out.print(table)
        out.print("Validation loss (nats/char) against characters seen:")
        for line in runs_lib.plot([r.get("chars_seen", r["step"]) for r in history], [r["val_loss"] for r in history]):
            out.print(line, markup=False, highlight=False)
    else:
        out.print("No evaluations yet.")


# The MNIST demo and the perceptron live in their own module (textgen/mnist_cli.py).
from textgen import mnist_cli  # noqa: E402

mnist_cli.register(app)

from textgen import info_cli  # noqa: E402

info_cli.register(app)


def main():
    app()


if __name__ == "__main__":
    main()
