"""What `textgen sample` and the trainer write with a session: finished sample records, samples
that must include given words (bounded retries), and streams of character ids for callers that
work in ids."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from textgen.errors import ConfigError, positive_int
from textgen.generation.session import RUN_STEPS, SamplingSession, StreamSpec, random_seed


@dataclass
class Sample:
    """One finished sample of `write_samples`: the JSON record `textgen sample --json` prints."""

    index: int
    temperature: float
    text: str | None
    stop: str | None

    def record(self) -> dict:
        return {"index": self.index, "temperature": self.temperature, "text": self.text, "stop": self.stop}


def write_samples(session: SamplingSession, prime: str, temperatures: Sequence[float], num_samples: int,
                  length: int, seed: int, top_k: int | None = None, top_p: float | None = None,
                  stops: Sequence[str] = (), keep_text: bool = True, steering=None) -> Iterator:
    """`num_samples` samples per temperature, each temperature's samples generated as one batch.

    Yields every non-empty `Piece` as it is written, and after each temperature its `Sample`s
    in index order. Sample i of every temperature is stream (seed, i). `steering`: a
    `constraints.Steering` every sample keeps to.
    """
    positive_int("num_samples", num_samples)
    for temperature in temperatures:
        specs = [StreamSpec(prime=prime, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                            stops=stops, seed=seed, index=i, keep_text=keep_text, steering=steering)
                 for i in range(num_samples)]
        streams = [session.add(spec) for spec in specs]
        while session.active:
            for piece in session.step(RUN_STEPS):
                if piece.text:
                    yield piece
        for i, stream in enumerate(streams):
            yield Sample(i, temperature, stream.text if keep_text else None, stream.stop)


MAX_TRIES = 20  # --must-include's default bound on draws per sample
TRIES_LIMIT = 1_000  # --tries above this is refused: a word that needs more is better asked for another way


@dataclass
class Included:
    """What `sample_including` made: per sample its text (None when no try had every word) and
    how many tries it took (or used up)."""

    words: list
    texts: list
    tries: list
    stops: list  # the stop string that ended each kept text (None: none did)

    def report(self) -> str:
        """One line for stderr: how many samples have every word, and the tries each took."""
        found = sum(t is not None for t in self.texts)
        words = ", ".join(map(repr, self.words))
        line = (f"must-include: {found} of {len(self.texts)} samples contain {words}; tries per sample "
                f"{', '.join(map(str, self.tries))}")
        missing = [str(i + 1) for i, t in enumerate(self.texts) if t is None]
        if len(missing) == 1:
            line += f" (sample {missing[0]} left out: none of its {max(self.tries)} tries had every word)"
        elif missing:
            listed = ", ".join(missing[:-1]) + " and " + missing[-1]
            line += f" (samples {listed} left out: none of their {max(self.tries)} tries had every word)"
        return line

    def check(self) -> Included:
        """Itself, unless no sample has every word: then one ConfigError that says what to change."""
        if all(text is None for text in self.texts):
            more = "more --tries, " if max(self.tries) < TRIES_LIMIT else ""
            raise ConfigError(f"No sample contained every --must-include word ({', '.join(map(repr, self.words))}) "
                              f"within {max(self.tries)} tries each: give {more}a longer --length, or a word "
                              "the model writes more often.")
        return self


def word_list(value, option: str = "must-include") -> list:
    """A word or a list of words (None: none) as a list of str, else one ConfigError."""
    name = option.replace("-", "_")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(word, str) for word in value):
        return list(value)
    raise ConfigError(f"--{option} takes a list of words (str), or one word. Received: {name}={value!r}")


def check_words(words: Sequence[str], chars: Sequence[str], prime: str, length: int, tries: int,
                steering=None, lines: bool = False) -> list:
    """--must-include's words and --tries, checked before anything is sampled (one ConfigError):
    a word must be one the steering (--regex, --ban) lets a sample contain after the prime."""
    positive_int("tries", tries, option=True)
    if tries > TRIES_LIMIT:
        raise ConfigError(f"--tries must be at most {TRIES_LIMIT:,} (each try draws the sample again). "
                          f"Received: tries={tries}")
    words = list(dict.fromkeys(word_list(words)))
    for word in words:
        if not word:
            raise ConfigError("A --must-include word must not be empty. Received: must_include=''")
        if lines and "\n" in word:
            raise ConfigError(f"With --lines a --must-include word cannot hold a line end: a line has none. "
                              f"Received: must_include={word!r}")
        unseen = sorted(set(word) - set(chars))
        if unseen:
            raise ConfigError(f"A --must-include word has characters the model never saw "
                              f"({', '.join(map(repr, unseen))}). Received: must_include={word!r}")
        if word not in prime and len(word) > length:
            raise ConfigError(f"A --must-include word is longer than a sample (--length). "
                              f"Received: must_include={word!r}, length={length}")
        if steering is not None and not _can_contain(steering, word, chars, prime):
            raise ConfigError(f"No text that {steering.description} can contain the --must-include word "
                              f"{word!r}: the two ask for opposite things.")
    return words


def _can_contain(steering, word: str, chars: Sequence[str], prime: str) -> bool:
    """Whether some text the steering accepts, after `prime`, contains `word`: the product of
    the steering's automaton with "contains word" still reaches acceptance."""
    from textgen.generation.constraints import UNREACHABLE, Automaton, product

    prefixes = {word[:k]: k for k in range(len(word))}
    found, dead = len(word), len(word) + 1
    table = np.full((dead + 1, len(chars)), dead, dtype=np.int64)
    table[found] = found
    for prefix, state in prefixes.items():
        for i, char in enumerate(chars):
            text = prefix + char
            table[state, i] = found if text.endswith(word) else next(
                prefixes[text[k:]] for k in range(len(text) + 1) if text[k:] in prefixes)
    accepting = np.zeros(dead + 1, dtype=bool)
    accepting[found] = True
    try:
        both = product(steering.automaton, Automaton(table, accepting, 0))
    except ConfigError:  # too many states to tell: sampling will say
        return True
    state = both.start
    ids = {c: i for i, c in enumerate(chars)}
    for char in prime if steering.includes_prime else "":
        if char not in ids:  # a prime the model cannot read is refused elsewhere
            return True
        state = int(both.table[state, ids[char]])
    return bool(both.distance[state] < UNREACHABLE)


def sample_including(session: SamplingSession, prime: str, temperature: float, num_samples: int, length: int,
                     seed: int, words: Sequence[str], tries: int = MAX_TRIES, top_k: int | None = None,
                     top_p: float | None = None, stops: Sequence[str] = (), steering=None) -> Included:
    """`num_samples` samples whose text (prime included) contains every one of `words`, by
    drawing again: try 1 of sample i is stream (seed, i), the sample `write_samples` writes; try
    a + 1 is (seed, i, a). A sample takes its first try that has every word; one with none
    within `tries` is None. Every pending sample's next try runs in one batch."""
    positive_int("num_samples", num_samples)
    result = Included(list(words), [None] * num_samples, [0] * num_samples, [None] * num_samples)
    pending = list(range(num_samples))
    for attempt in range(tries):
        if not pending:
            break
        specs = [StreamSpec(prime=prime, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                            stops=stops, seed=seed, index=i, steering=steering, attempt=attempt) for i in pending]
        streams = [session.add(spec) for spec in specs]
        while session.active:
            session.step(RUN_STEPS)
        for i, stream in zip(list(pending), streams):
            result.tries[i] = attempt + 1
            if all(word in prime + stream.text for word in result.words):
                result.texts[i], result.stops[i] = stream.text, stream.stop
                pending.remove(i)
    return result


def generate(engine, prime_ids: Sequence[int], length: int, temperature: float, num_samples: int = 1,
             seed: int | None = None, top_k: int | None = None, top_p: float | None = None,
             start_id: int = 0) -> Iterator[np.ndarray]:
    """Yield, `length` times, an array of `num_samples` new character ids (streams 0..N-1 of `seed`)."""
    positive_int("num_samples", num_samples)
    seed = random_seed() if seed is None else seed
    session = SamplingSession(engine, None, start_id, capacity=num_samples)
    specs = [StreamSpec(prime_ids=list(prime_ids), length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, index=i, keep_text=False) for i in range(num_samples)]
    try:
        for pieces in session.run(specs, RUN_STEPS):
            # the streams start and end together, so every piece holds the same number of ids
            yield from np.array([p.ids for p in pieces], dtype=np.intp).reshape(len(pieces), -1).T
    finally:
        session.close()
