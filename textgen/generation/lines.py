"""Sampling whole lines (`textgen sample --lines N`) from a run whose documents are lines.

Each line is a stream of its own, begun from the start-of-document state: the newline (the
boundary the model learnt with `textgen train --lines`) and then the prime, so the prime is the
start of every line. A line ends when the model draws the newline; one that reaches `length`
first is dropped as too long, an empty one as empty. `novel` drops lines that occur in the
training text and `unique` repeats, comparing lines with surrounding whitespace stripped, and
`must_include` lines without every one of its words.
Streams are drawn in rounds of at most `ROUND_LINES` until `count` lines are kept or `MAX_ROUNDS`
rounds in a row keep none; each kept line is handed on as soon as it is judged, so memory stays
flat however many lines are asked for. Line i is stream (seed, i), so the same seed gives the same
lines, whatever the rounds' sizes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textgen.errors import ConfigError, CorpusError, positive_int
from textgen.generation.session import RUN_STEPS, SamplingSession, StreamSpec

BOUNDARY = "\n"
MAX_ROUNDS = 20  # rounds in a row that keep no line before drawing gives up
ROUND_LINES = 256  # a round draws at most this many lines
GROWTH = 8  # and at most this many times the lines it still wants
DROP_REASONS = {"too_long": "too long (no end of line within {length})", "empty": "empty",
                "in_training": "already in the training text", "repeat": "repeats",
                "missing_word": "without a {must_include} word"}
CLI_WORDS = {"length": "--length", "must_include": "--must-include"}  # the options DROP_REASONS name
ADVICE = {"too_long": "a longer --length", "empty": "another --prime or --temperature",
          "in_training": "leaving out --novel", "repeat": "leaving out --unique or a higher --temperature",
          "missing_word": "a --must-include word the model writes more often"}


@dataclass
class Lines:
    """What `sample_lines` kept (`lines`, unless they were handed to a writer instead; `kept`
    counts them either way), and how many lines it dropped for each reason."""

    lines: list = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    sampled: int = 0
    asked: int = 0
    kept: int = 0

    def report(self, **words: str) -> str:
        """One line for stderr: how many were kept of how many, and why the others were dropped;
        `words` names the options as the caller's user knows them (`length="max_tokens"`)."""
        named = {**CLI_WORDS, **words}
        why = ", ".join(f"{n} {DROP_REASONS[k].format(**named)}" for k, n in sorted(self.dropped.items()))
        short = (f" ({self.asked} asked: {MAX_ROUNDS} rounds in a row found none)"
                 if self.kept < self.asked else "")
        return f"lines: kept {self.kept} of {self.sampled} sampled" + (f"; dropped {why}" if why else "") + short

    def check(self) -> Lines:
        """Itself, unless no line was kept: then one ConfigError that says why and what to change."""
        if self.kept == 0:
            why = ", ".join(f"{n} {DROP_REASONS[k].format(**CLI_WORDS)}" for k, n in sorted(self.dropped.items())) or "none"
            advice = " or ".join(ADVICE[k] for k, _ in self.dropped.most_common(2)) or ADVICE["empty"]
            raise ConfigError(f"No line was kept: all {self.sampled} lines sampled were dropped ({why}); try {advice}.")
        return self


def check_boundary(chars: Sequence[str]) -> None:
    if BOUNDARY not in chars:
        raise ConfigError("--lines needs a run whose text has line ends (train it with textgen train --lines); "
                          "this run's vocabulary has no newline.")


def check_lines_run(info: dict, prime: str) -> None:
    """--lines' run and prime, before anything is sampled: a run trained with --lines (run.json's
    corpus.lines), whose vocabulary has the newline, and a prime without a line end."""
    if not (info.get("corpus") or {}).get("lines"):
        run = f"run {info['name']!r}" if info.get("name") else "this run"
        raise ConfigError(f"--lines needs a run trained on lines (textgen train FILE --lines --run NAME); {run} "
                          "was trained on running text, so it never learnt where a line starts.")
    check_boundary(info["vocab"])
    if BOUNDARY in prime:
        raise ConfigError(f"With --lines the prime starts every line, so it cannot hold a line end. "
                          f"Received: prime={prime!r}")


def training_lines(info: dict) -> set:
    """The lines of the run's recorded corpus, stripped (for --novel): the whole file, training
    and validation parts, checked by SHA-256 against run.json."""
    from textgen.files import file_sha256

    recorded = info.get("corpus") or {}
    source = recorded.get("source")
    if recorded.get("documents"):
        raise CorpusError("--novel compares with one training file; this run was trained on "
                          f"{recorded['documents'].get('count', 0)} documents.")
    if not source or not Path(source).is_file():
        raise CorpusError(f"--novel compares with the run's training text, which is gone or not recorded. "
                          f"Received: source={source!r}")
    if recorded.get("sha256") and file_sha256(Path(source)) != recorded["sha256"]:
        raise CorpusError(f"The run's training text {source!r} has changed since training (its SHA-256 differs "
                          "from run.json), so --novel cannot tell what the model saw.")
    text = Path(source).read_text(encoding=recorded.get("encoding", "utf-8"))
    return {line.strip() for line in text.splitlines() if line.strip()}


class LinePicker:
    """Which lines to sample next and which to keep, for `sample_lines` and the server (which
    runs each round as a job): `round_specs` gives the next round's specs (none once `count`
    lines are kept or `MAX_ROUNDS` rounds ran), `judge` takes each finished line in order.

    The first round draws the lines still wanted; a later one those divided by the share kept so
    far (at most GROWTH times as many), so a filter that keeps few lines still finishes in a few
    rounds; no round draws more than ROUND_LINES (or `most`). Lines are judged in index order and
    judging stops at `count`: the kept lines are the first `count` that pass, whatever the rounds'
    sizes. With `store` False kept lines are only counted (`judge` returns each one)."""

    def __init__(self, prime: str, count: int, seen: set | None = None, unique: bool = False, steering=None,
                 must_include: Sequence[str] = (), store: bool = True):
        positive_int("lines", count)
        self.prime, self.count, self.seen, self.unique, self.steering = prime, count, seen, unique, steering
        self.must_include, self.store = list(must_include), store
        self.result = Lines(asked=count)
        self.kept: set = set()
        self.index = 0  # line i is stream (seed, i), across rounds
        self.rounds = 0
        self.idle = 0  # rounds in a row that kept no line
        self._kept_before = 0

    @property
    def done(self) -> bool:
        return self.result.kept >= self.count or self.idle >= MAX_ROUNDS

    def round_specs(self, length: int, temperature: float, seed: int, top_k: int | None = None,
                    top_p: float | None = None, most: int | None = None) -> list:
        if self.rounds:  # the round before has been judged
            self.idle = 0 if self.result.kept > self._kept_before else self.idle + 1
            self._kept_before = self.result.kept
        if self.done:
            return []
        wanted = self.count - self.result.kept
        size = wanted
        if self.result.sampled:
            size = -(-wanted * self.result.sampled // max(1, self.result.kept))
        size = max(1, min(max(wanted, min(size, GROWTH * wanted)), ROUND_LINES if most is None else most))
        specs = [StreamSpec(prime=BOUNDARY + self.prime, length=length, temperature=temperature, top_k=top_k,
                            top_p=top_p, stops=[BOUNDARY], seed=seed, index=self.index + i, steering=self.steering)
                 for i in range(size)]
        self.index += size
        self.rounds += 1
        return specs

    def judge(self, text: str, finish_reason: str | None) -> str | None:
        """Keep or drop one line: `text` as generated (without the prime), and how it ended; the
        line when it is kept. Once `count` lines are kept, the rest of a round is not looked at
        (nor counted)."""
        result = self.result
        if result.kept >= self.count:
            return None
        result.sampled += 1
        line = self.prime + text
        key = line.strip()
        if finish_reason == "length" and self.steering is None:  # no end of line drawn within the length
            result.dropped["too_long"] += 1
        elif not key:
            result.dropped["empty"] += 1
        elif any(word not in line for word in self.must_include):
            result.dropped["missing_word"] += 1
        elif self.seen is not None and key in self.seen:
            result.dropped["in_training"] += 1
        elif self.unique and key in self.kept:
            result.dropped["repeat"] += 1
        else:
            if self.unique:
                self.kept.add(key)
            result.kept += 1
            if self.store:
                result.lines.append(line)
            return line
        return None


def sample_lines(session: SamplingSession, prime: str, count: int, length: int, temperature: float, seed: int,
                 top_k: int | None = None, top_p: float | None = None, steering=None,
                 seen: set | None = None, unique: bool = False, must_include: Sequence[str] = (),
                 write: Callable[[str], None] | None = None) -> Lines:
    """`count` complete lines (fewer if `MAX_ROUNDS` rounds in a row find none); see the module
    docstring. `seen`: the training lines (--novel); `unique`: drop repeats; `must_include`:
    drop lines without every one of these words; `write`: called with each kept line as soon as
    it is judged (the lines are then not kept in the result)."""
    check_boundary(session.chars)
    picker = LinePicker(prime, count, seen, unique, steering, must_include, store=write is None)
    while specs := picker.round_specs(length, temperature, seed, top_k, top_p):
        streams = [session.add(spec) for spec in specs]
        while session.active:
            session.step(RUN_STEPS)
        for stream in streams:
            line = picker.judge(stream.text, stream.finish_reason)
            if line is not None and write is not None:
                write(line)
    return picker.result
