"""`textgen sample`: generate text from a trained run, streamed as it is written."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from textgen.cli.common import CheckpointsOption, JsonOption, emit_json, err, out
from textgen.errors import ConfigError


def _temperatures(values: list[str]) -> list[float]:
    from textgen.generation.draw import check_temperature

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
        from textgen.files import atomic_write

        self.to_stdout, self.output = to_stdout, output
        self.file = self.writer = None
        if output is not None:
            if output.is_dir():
                raise ConfigError(f"--output must be a file, not a directory. Received: output={str(output)!r}")
            if not output.parent.is_dir():
                raise ConfigError(f"--output's directory does not exist. Received: output={str(output)!r}")
            self.writer = atomic_write(output, "w")
            self.file = self.writer.__enter__()
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
        """Flush; with --output, rename the file into place (`keep`) or delete it."""
        if self.to_stdout:
            sys.stdout.flush()
        if self.writer is not None:
            if keep:
                self.writer.__exit__(None, None, None)
            else:
                self.writer.__exit__(InterruptedError, InterruptedError("sampling did not finish"), None)


def _check_lines(lines, novel, unique, temps, num_samples, stops, interactive, novelty) -> None:
    """--lines and what goes with it (one clear line for what does not)."""
    from textgen.errors import positive_int

    if lines is None:
        if novel or unique:
            raise ConfigError(f"--{'novel' if novel else 'unique'} picks among sampled lines: give --lines N too.")
        return
    positive_int("lines", lines, option=True)
    for name, given, why in (
            ("several --temperature values", len(temps) > 1, "it writes N lines at one temperature"),
            ("--num-samples", num_samples > 1, "it writes N lines, each a sample of its own"),
            ("--stop", bool(stops), "each line ends at its line end"),
            ("--interactive", interactive, "it writes N lines from one prime"),
            ("--novelty", novelty, "--novelty measures copied spans of running text; --novel drops lines of the "
                                   "training text")):
        if given:
            raise ConfigError(f"--lines does not combine with {name}: {why}.")


def _novelty_line(report: dict) -> str:
    return (f"novelty: longest span copied from the training text {report['longest_copied']:,} characters; "
            f"{report['copied_share']:.1%} of characters inside copied spans of {report['min_span']}+")


def _interactive(session, temps, length, seed, top_k, top_p, stops) -> None:
    """Read a prime per line from stdin and stream its continuation; Ctrl-D / Ctrl-C leave."""
    from textgen.errors import CorpusError
    from textgen.generation.writers import Sample, write_samples

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
                session.vocab.encode(prime)
            except CorpusError as e:
                print(f"Error: {e}", file=sys.stderr, flush=True)
                continue
            for t in temps:
                if len(temps) > 1:
                    out.rule(f"temperature {t:g}", style="dim")
                sink = _TextSink(True, None)
                sink.write(prime)
                for event in write_samples(session, prime, [t], 1, length, seed + turn, top_k, top_p, stops,
                                           keep_text=False):
                    if not isinstance(event, Sample):
                        sink.write(event.text)
                sink.write("\n")
                sink.close(keep=True)
            turn += 1
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    sys.stderr.write("\n")
    sys.stderr.flush()


def sample(
    temperature: Annotated[list[str], typer.Option(help="Sampling temperature; 0 is greedy. Repeat or comma-separate for one labelled sample per value: --temperature 0.5,1.0")] = ["0.8"],  # noqa: B006 (Typer reads the default)
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 500,
    prime: Annotated[str, typer.Option(help="Text the samples continue from (printed before the continuation). \\n is a newline.")] = "",
    stop: Annotated[list[str], typer.Option(help="Stop a sample at the first occurrence of this string (left out of the output). Repeat for several; \\n is a newline.")] = [],  # noqa: B006
    num_samples: Annotated[int, typer.Option(help="Samples per temperature, generated as one batch; sample i is seeded by (seed, i).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: the same checkpoint and seed give the same text. (default: random)")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k most likely characters (k >= 1).")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Sample only from the smallest set of characters with probability mass >= p, p in (0, 1].")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Also write the text to this file (replaced atomically when sampling ends).")] = None,
    novelty: Annotated[bool, typer.Option("--novelty", help="Report, per sample, the longest span copied verbatim from the training text and the share of characters in copied spans of 20+.")] = False,
    interactive: Annotated[bool, typer.Option("--interactive", help="Prompt for a prime, stream its continuation, repeat; Ctrl-D or Ctrl-C to leave. Not with --regex, --ban, --must-include or --lines.")] = False,
    regex: Annotated[Optional[str], typer.Option(help="Every sample (prime included) matches this regular expression in full: a mask before each draw, exact at every character. A sample ends at --length or once it is a complete match nothing can extend.")] = None,
    ban: Annotated[list[str], typer.Option(help="Never complete this word (its last character is masked). Repeat for several.")] = [],  # noqa: B006
    lines: Annotated[Optional[int], typer.Option(help="Write this many complete lines, each begun from the start of a line (a run trained with --lines; --prime starts every line; --length caps a line).")] = None,
    novel: Annotated[bool, typer.Option("--novel", help="With --lines: keep only lines that are not lines of the training text (compared with surrounding whitespace stripped).")] = False,
    unique: Annotated[bool, typer.Option("--unique", help="With --lines: drop lines already written (surrounding whitespace stripped).")] = False,
    must_include: Annotated[list[str], typer.Option(help="Every sample (prime included; each line with --lines) contains this word: a sample without it is drawn again, up to --tries times, and stderr says how many tries each took (with --lines such lines are dropped and counted). Repeat for several.")] = [],  # noqa: B006
    tries: Annotated[Optional[int], typer.Option(help="With --must-include: draws per sample at most (1 to 1,000); a sample that has none with every word is left out and reported. Not with --lines (lines are drawn in rounds). (default: 20)")] = None,
    record_label: Annotated[Optional[str], typer.Option("--label", help="A run trained with --label-field/--label-column: write a new record of this label (the label is read first, not printed).")] = None,
    run: Annotated[Optional[str], typer.Option(help="Run to sample from. (default: the most recently trained)")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest, best, or a checkpoint directory name such as ckpt-00001200.")] = "latest",
    checkpoints_dir: CheckpointsOption = Path("checkpoints"),
    use_previous: Annotated[bool, typer.Option("--use-previous", help="If the newest checkpoint is damaged, use the previous good one.")] = False,
    as_json: JsonOption = False,
):
    """Generate text from a trained run, streamed as it is written.

    Example: [bold]textgen sample --temperature 0.7 --length 500 --prime "ROMEO:" --stop "\\n\\n"[/]

    Steered: [bold]textgen sample --regex "[A-Z][a-z]+( [A-Z][a-z]+)*" --ban "the" --length 80[/]

    Lines: [bold]textgen sample --lines 20 --novel --unique --regex "[A-Z][a-z]{3,7}"[/]

    Words: [bold]textgen sample --must-include "love" --num-samples 3 --length 200[/]
    """
    from textgen import checkpoints
    from textgen.errors import positive_int
    from textgen.generation.constraints import checked_steering
    from textgen.generation.draw import check_stops, check_top_k, check_top_p
    from textgen.generation.loading import load_run, start_id
    from textgen.generation.session import SamplingSession, random_seed
    from textgen.generation.writers import MAX_TRIES, Sample, check_words, sample_including, write_samples
    from textgen.tables import label_lead

    temps = _temperatures(temperature)
    positive_int("length", length, option=True)
    positive_int("num_samples", num_samples, option=True)
    check_top_k(top_k)
    check_top_p(top_p)
    prime = _unescape(prime)
    stops = check_stops([_unescape(s) for s in stop])
    _check_lines(lines, novel, unique, temps, num_samples, stops, interactive, novelty)
    if tries is not None and lines is not None:
        raise ConfigError("--tries does not apply with --lines: lines are drawn in rounds, and a line without "
                          "every --must-include word is dropped and counted.")
    if interactive:
        for name, given in (("--json", as_json), ("--output", output is not None), ("--novelty", novelty),
                            ("--prime", bool(prime)), ("--num-samples > 1", num_samples > 1),
                            ("--regex", regex is not None), ("--ban", bool(ban)),
                            ("--must-include", bool(must_include))):
            if given:
                raise ConfigError(f"--interactive reads primes from the keyboard; it does not combine with {name}.")
    directory = checkpoints.find_run(checkpoints_dir, run)
    info, ckpt, engine = load_run(directory, checkpoint, use_previous=use_previous)
    session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]), capacity=num_samples)
    if record_label is not None and lines is not None:
        raise ConfigError("--label writes records, --lines lines: give one of them.")
    session.lead = tuple(label_lead(info, info["vocab"], record_label))
    if lines is not None:
        from textgen.generation.lines import check_lines_run

        check_lines_run(info, prime)
    prime_ids = session.vocab.encode(prime)  # characters the model never saw: an error before anything is printed
    steered = checked_steering(info["vocab"], regex, [_unescape(w) for w in ban], stops, prime_ids.tolist(), length,
                               lines is not None)
    words = check_words([_unescape(w) for w in must_include], info["vocab"], prime, length,
                        MAX_TRIES if tries is None else tries, steered, lines is not None)
    if tries is not None and not words:
        raise ConfigError("--tries bounds --must-include's draws per sample: give --must-include too.")
    seed = random_seed() if seed is None else seed
    if "fell_back_from" in ckpt.state:
        err.print(f"[yellow]Newest checkpoint {ckpt.state['fell_back_from']} is damaged; using {ckpt.path.name}.[/]")
    if interactive:
        return _interactive(session, temps, length, seed, top_k, top_p, stops)
    if lines is not None:
        from textgen.generation.lines import sample_lines, training_lines

        seen = training_lines(info) if novel else None
        sink = _TextSink(to_stdout=not as_json, output=output)
        kept = [] if as_json else None  # --json prints them at the end; otherwise each is written once judged
        written = [0]

        def write(line: str) -> None:
            sink.write(line + "\n")
            written[0] += 1
            if kept is not None:
                kept.append(line)
            elif sink.to_stdout:
                sys.stdout.flush()

        try:
            result = sample_lines(session, prime, lines, length, temps[0], seed, top_k, top_p, steered, seen, unique,
                                  words, write=write)
        finally:
            sink.close(keep=written[0] > 0)  # Ctrl-C keeps the lines written so far in --output
            session.close()
        result.check()  # no line kept: one error line (exit 1) instead of the report
        err.print(result.report(), markup=False, highlight=False, soft_wrap=True)
        if as_json:
            emit_json({"run": directory.name, "checkpoint": ckpt.path.name, "step": ckpt.step, "seed": seed,
                       "prime": prime, "length": length, "temperature": temps[0], "top_k": top_k, "top_p": top_p,
                       "regex": regex, "ban": list(ban), "must_include": words, "novel": novel, "unique": unique,
                       "lines": kept,
                       "sampled": result.sampled, "dropped": dict(result.dropped)})
        return None
    corpus = None
    if novelty:
        from textgen import novelty as novelty_lib

        corpus = novelty_lib.training_corpus(info)  # before sampling: a missing corpus fails fast
    streaming = num_samples == 1 and not as_json and not words  # a draw that may be retried is shown once kept
    keep_text = as_json or not streaming or novelty
    sink = _TextSink(to_stdout=not as_json, output=output)
    labelled = num_samples > 1 or len(temps) > 1
    results = []
    finished = False
    try:
        for t in temps:
            if streaming:
                if labelled:
                    out.rule(f"temperature {t:g}", style="dim")
                    sink.write(f"--- temperature {t:g} ---\n", to_stdout=False)
                sink.write(prime)
            samples = []
            if words:
                included = sample_including(session, prime, t, num_samples, length, seed, words,
                                            MAX_TRIES if tries is None else tries, top_k, top_p, stops, steered)
                included.check()  # no sample at all: one error line instead of the report
                err.print(included.report(), markup=False, highlight=False, soft_wrap=True)
                samples = [{**Sample(i, t, text, stop).record(), "tries": n}
                           for i, (text, stop, n) in enumerate(zip(included.texts, included.stops, included.tries))]
            for event in () if words else write_samples(session, prime, [t], num_samples, length, seed, top_k, top_p,
                                                        stops, keep_text=keep_text, steering=steered):
                if isinstance(event, Sample):
                    samples.append(event.record())
                elif streaming:
                    sink.write(event.text)
            if streaming:
                sink.write("\n")
                sys.stdout.flush()
            for result in samples:
                if corpus is not None and result["text"] is not None:
                    result["novelty"] = novelty_lib.novelty(session.vocab.encode(result["text"]), corpus)
                    if streaming:
                        out.print(f"[dim]{_novelty_line(result['novelty'])}[/]")
            results.extend(samples)
            if not streaming:
                for r in [r for r in samples if r["text"] is not None]:
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
        session.close()
    if as_json:
        emit_json({"run": directory.name, "checkpoint": ckpt.path.name, "step": ckpt.step, "seed": seed,
                   "prime": prime, "label": record_label, "length": length, "top_k": top_k, "top_p": top_p, "stop": stops,
                   "regex": regex, "ban": list(ban), "must_include": words, "samples": results})


def register(app: typer.Typer) -> None:
    """Add the `sample` command to `app`."""
    app.command("sample")(sample)
