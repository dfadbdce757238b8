"""`textgen.Model`: one checkpoint of a run, loaded for sampling and scoring without TensorFlow.

Every method calls what the CLI calls: `sample` and `stream` write with `write_samples` over a
`SamplingSession` (so a seed gives `textgen sample`'s text, `regex` and `ban` included), `lines`
with `sample_lines` (`textgen sample --lines`), `score` scores with the sampling engine in
`textgen evaluate`'s windows, `export` is `textgen export`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from textgen.errors import ConfigError

SCORE_STREAMS = 32  # `textgen evaluate`'s streams (`scoring.evaluate_file`)


def checkpoint_name(checkpoint) -> str:
    """What `load_run` takes for `checkpoint`: "latest", "best", or a step as its directory name."""
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, str)):
        raise ConfigError(f"checkpoint must be 'latest', 'best' or a step number. Received: checkpoint={checkpoint!r}")
    if isinstance(checkpoint, int):
        if checkpoint < 0:
            raise ConfigError(f"checkpoint step must be >= 0. Received: checkpoint={checkpoint!r}")
        return f"ckpt-{checkpoint:08d}"
    return checkpoint


def _stops(stop) -> list:
    from textgen.generation.draw import check_stops

    return check_stops([stop] if isinstance(stop, str) else list(stop or ()))


def _temperature(value) -> float:
    from textgen.generation.draw import check_temperature

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"temperature must be a number. Received: temperature={value!r}")
    return check_temperature(float(value))


class SampledLines(list):
    """The lines `Model.lines` kept (a list of str), with `sampled` (lines drawn in all),
    `dropped` ({reason: count}: too_long, empty, in_training, repeat, missing_word) and `report` (the line
    ``textgen sample --lines`` writes on stderr)."""

    def __init__(self, result):
        super().__init__(result.lines)
        self.sampled, self.dropped, self.report = result.sampled, dict(result.dropped), result.report()


class SampledText(str):
    """A sample that `Model.sample(must_include=...)` kept: a str, with `tries`, the draws it took."""

    def __new__(cls, text: str, tries: int):
        made = super().__new__(cls, text)
        made.tries = tries
        return made


class Model:
    """A trained model: one checkpoint of a run, ready to sample, stream, score and export.

    Made by `textgen.load` or `Run.model()`; holds the run's vocabulary and a sampling engine
    (numpy, or the compiled step), no Keras.

    Example:
        >>> model = textgen.load("shakespeare")
        >>> print(model.sample("ROMEO:", length=100, temperature=0.7, seed=1))
    """

    def __init__(self, directory: Path, checkpoint="latest", use_previous: bool = False):
        from textgen.corpus import Vocabulary
        from textgen.generation.loading import load_run, start_id

        self.directory = Path(directory)
        self.info, self._checkpoint, self._engine = load_run(self.directory, checkpoint_name(checkpoint),
                                                             use_previous=use_previous)
        self._start_id = start_id(self.info["vocab"])
        self._vocab = Vocabulary(self.info["vocab"])

    @property
    def name(self) -> str:
        """The run's name."""
        return self.directory.name

    @property
    def step(self) -> int:
        """The training step of the loaded checkpoint."""
        return self._checkpoint.step

    @property
    def checkpoint(self) -> str:
        """The loaded checkpoint's directory name, e.g. ``ckpt-00001200``."""
        return self._checkpoint.path.name

    @property
    def vocab(self) -> list:
        """The characters the model knows, in id order."""
        return list(self.info["vocab"])

    def _session(self, capacity: int, label: str | None = None):
        from textgen.generation.session import SamplingSession
        from textgen.tables import label_lead

        lead = tuple(label_lead(self.info, self.info["vocab"], label))  # an unknown label: before anything is made
        session = SamplingSession(self._engine, self.info["vocab"], self._start_id, capacity=capacity)
        session.lead = lead
        return session

    def _check(self, prime, length, temperature, top_k, top_p, seed, stop, n) -> None:
        """Refuse what `textgen sample` refuses, with its messages, before anything is made."""
        from textgen.errors import positive_int
        from textgen.generation.draw import check_top_k, check_top_p

        _temperature(temperature)
        positive_int("length", length)
        positive_int("n", n)
        check_top_k(top_k)
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))):
            raise ConfigError(f"top_p must be in (0, 1]. Received: top_p={top_p!r}")
        check_top_p(top_p)
        _stops(stop)
        if not isinstance(prime, str):
            raise ConfigError(f"prime must be a str. Received: prime={prime!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer. Received: seed={seed!r}")
        self._vocab.encode(prime)  # characters the model never saw

    def _steering(self, prime, length, stop, regex, ban, lines: bool = False):
        """`regex` / `ban` as `textgen sample --regex/--ban` compiles and checks them (None without)."""
        from textgen.generation.constraints import checked_steering
        from textgen.generation.writers import word_list

        ban = word_list(ban, "ban")
        return checked_steering(self.info["vocab"], regex, ban, _stops(stop), self._vocab.encode(prime).tolist(),
                                length, lines)

    def _events(self, prime, length, temperature, top_k, top_p, seed, stop, n, keep_text, regex=None, ban=None,
                label=None):
        """Check the settings as `textgen sample` does, then yield `write_samples`' events."""
        from textgen.generation.session import random_seed
        from textgen.generation.writers import write_samples

        self._check(prime, length, temperature, top_k, top_p, seed, stop, n)
        steered = self._steering(prime, length, stop, regex, ban)
        session = self._session(n, label)
        try:
            seed = random_seed() if seed is None else seed
            yield from write_samples(session, prime, [_temperature(temperature)], n, length, seed, top_k, top_p,
                                     _stops(stop), keep_text=keep_text, steering=steered)
        finally:
            session.close()

    def sample(self, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop: str | Sequence[str] | None = None,
               n: int = 1, regex: str | None = None, ban: str | Sequence[str] | None = None,
               must_include: str | Sequence[str] | None = None, tries: int | None = None,
               label: str | None = None) -> str | list[str]:
        """The text that follows `prime` (without the prime): a str, or a list of `n` str.

        The same settings and seed give the same text as ``textgen sample`` (which prints the
        prime before it); sample i of `n` is stream (seed, i), as the CLI's ``--num-samples``.
        `stop` ends a sample at the first occurrence of a string (left out); `temperature` 0 is greedy.
        `regex`: the prime and the sample together match it in full (a mask before each draw; the
        sample ends at `length` or once nothing can extend the match); `ban`: words never
        completed. A pattern that cannot be kept raises a ConfigError before anything is sampled.
        `must_include`: words every sample (prime included) contains, by drawing a sample again up
        to `tries` times (``--must-include``/``--tries``): each kept sample is a `SampledText`
        whose `tries` says how many draws it took, one that found none is None (all None: a
        ConfigError). `label`: for a run trained with a label field, a new record of that label
        (``--label``; the label is read first, not returned; an unknown one is a ConfigError).

        Example:
            >>> model.sample("ROMEO:", length=50, temperature=0.5, seed=7)
            ' I will not see the stars of the world ...'
            >>> model.sample(length=30, regex="[A-Z][a-z]+ [a-z]+\\.", ban=["the"], seed=7)
        """
        from textgen.generation.writers import Sample, word_list

        if tries is not None and not word_list(must_include):
            raise ConfigError(f"tries bounds must_include's draws per sample: give must_include too. "
                              f"Received: tries={tries!r}")
        if word_list(must_include):
            texts = self._including(prime, length, temperature, top_k, top_p, seed, stop, n, regex, ban,
                                    must_include, tries, label)
        else:
            texts = [event.text for event in self._events(prime, length, temperature, top_k, top_p, seed, stop, n,
                                                          True, regex, ban, label) if isinstance(event, Sample)]
        return texts[0] if n == 1 else texts

    def _including(self, prime, length, temperature, top_k, top_p, seed, stop, n, regex, ban, must_include, tries,
                   label=None):
        """`sample` with `must_include`: `sample_including`, as ``textgen sample --must-include``."""
        from textgen.generation.session import random_seed
        from textgen.generation.writers import MAX_TRIES, check_words, sample_including, word_list

        self._check(prime, length, temperature, top_k, top_p, seed, stop, n)
        steered = self._steering(prime, length, stop, regex, ban)
        tries = MAX_TRIES if tries is None else tries
        words = check_words(word_list(must_include), self.info["vocab"], prime, length, tries, steered)
        session = self._session(n, label)
        try:
            included = sample_including(session, prime, _temperature(temperature), n, length,
                                        random_seed() if seed is None else seed, words, tries, top_k, top_p,
                                        _stops(stop), steered).check()
        finally:
            session.close()
        return [None if text is None else SampledText(text, count) for text, count in zip(included.texts, included.tries)]

    def stream(self, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None,
               stop: str | Sequence[str] | None = None, regex: str | None = None,
               ban: str | Sequence[str] | None = None) -> Iterator[str]:
        """Yield the text of one sample piece by piece as it is made; the pieces join to `sample`'s
        text (`regex` and `ban` as there; refused before the first piece).

        Example:
            >>> for piece in model.stream("ROMEO:", length=80, seed=1):
            ...     print(piece, end="", flush=True)
        """
        from textgen.generation.writers import Sample

        events = self._events(prime, length, temperature, top_k, top_p, seed, stop, 1, False, regex, ban)
        return (event.text for event in events if not isinstance(event, Sample))

    def lines(self, n: int, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int | None = None,
              top_p: float | None = None, seed: int | None = None, novel: bool = False, unique: bool = False,
              regex: str | None = None, ban: str | Sequence[str] | None = None,
              must_include: str | Sequence[str] | None = None) -> SampledLines:
        """`n` complete lines from a run trained with ``lines=True`` (``--lines``), each begun
        from the start of a line with `prime` as its start; `length` caps a line. The same as
        ``textgen sample --lines N`` for the same settings and seed: `novel` drops lines of the
        training text, `unique` repeats (whitespace stripped), `must_include` lines without every
        one of its words, and `regex` / `ban` hold per line. Lines are drawn in rounds of at most
        256; fewer than `n` come back when 20 rounds in a row keep none (`report` says so), and a
        TextgenError is raised when none is kept.
        Returns a list of str with `sampled`, `dropped` and `report` (see `SampledLines`).

        Example:
            >>> names = model.lines(10, novel=True, unique=True, seed=3)
            >>> names.report
            'lines: kept 10 of 13 sampled; dropped 3 already in the training text'
        """
        from textgen.errors import positive_int
        from textgen.generation.lines import check_lines_run, sample_lines, training_lines
        from textgen.generation.session import random_seed
        from textgen.generation.writers import check_words, word_list

        positive_int("n", n)
        self._check(prime, length, temperature, top_k, top_p, seed, None, 1)
        for name, value in (("novel", novel), ("unique", unique)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False. Received: {name}={value!r}")
        check_lines_run(self.info, prime)
        steered = self._steering(prime, length, None, regex, ban, lines=True)
        words = check_words(word_list(must_include), self.info["vocab"], prime, length, 1, steered, lines=True)
        seen = training_lines(self.info) if novel else None
        session = self._session(n)
        try:
            result = sample_lines(session, prime, n, length, _temperature(temperature),
                                  random_seed() if seed is None else seed, top_k, top_p, steered, seen, unique, words)
        finally:
            session.close()
        return SampledLines(result.check())

    def shaded(self, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop: str | Sequence[str] | None = None):
        """One sample with each character's log-probability (temperature 1), as a `ShadedText`
        that a notebook shows shaded by probability like the playground; its `text` is `sample`'s
        for the same settings and seed.

        Example:
            >>> model.shaded("ROMEO:", length=80, seed=1)
        """
        from textgen.api.cards import ShadedText
        from textgen.generation.session import StreamSpec, random_seed

        self._check(prime, length, temperature, top_k, top_p, seed, stop, 1)
        spec = StreamSpec(prime=prime, length=length, temperature=_temperature(temperature), top_k=top_k,
                          top_p=top_p, stops=_stops(stop), seed=random_seed() if seed is None else seed, logprobs=0)
        session = self._session(1)
        chars, logprobs = [], []
        try:
            for pieces in session.run([spec]):
                for piece in pieces:
                    for entry in piece.logprobs or ():
                        chars.append(entry.char)
                        logprobs.append(entry.logprob)
        finally:
            session.close()
        return ShadedText(prime, chars, logprobs)

    def next_chars(self, prime: str = "", top: int | None = None) -> dict:
        """The model's distribution of the character after `prime` (temperature 1), as
        {character: probability}, likeliest first; `top` keeps only the likeliest few.

        Example:
            >>> model.next_chars("ROMEO", top=3)
            {':': 0.91, ' ': 0.05, ',': 0.01}
        """
        from textgen.errors import positive_int
        from textgen.generation.draw import softmax
        from textgen.generation.priming import Priming

        positive_int("top", top, allow_none=True)
        prime_ids = self._vocab.encode(prime).tolist()
        priming = Priming(self._engine, prime_ids, prime_ids or [self._start_id], None)
        try:
            priming.feed()
            probs = softmax(priming.logits[0])
        finally:
            priming.close()
        order = sorted(range(len(probs)), key=lambda i: -probs[i])[:top]
        return {self.info["vocab"][i]: float(probs[i]) for i in order}

    def score(self, text: str, adapt: float | None = None) -> dict:
        """Cross-entropy of `text` under the model, scored in ``textgen evaluate``'s windows:
        {"nats_per_char", "bits_per_char", "characters", "scored"}. Uses the sampling engine (no
        TensorFlow); it agrees with ``textgen evaluate`` (Keras) within float rounding. `adapt`:
        also "adapted", dynamic evaluation with this SGD rate (``textgen evaluate --adapt``, whose
        default is 0.2; TensorFlow, a few hundred characters a second); the model is not changed.

        Example:
            >>> model.score("ROMEO: What light through yonder window breaks?")["bits_per_char"]
            2.31
        """
        import numpy as np

        from textgen.errors import CorpusError
        from textgen.scoring import LN2, score_with_engine

        if not isinstance(text, str):
            raise ConfigError(f"text must be a str. Received: text={type(text).__name__}")
        ids = self._vocab.encode(text).astype(np.int32)
        if len(ids) < 2:
            raise CorpusError(f"Text to evaluate needs at least 2 characters. Received: {len(ids)}")
        streams = max(1, min(SCORE_STREAMS, len(ids) // 2048 + 1))
        total, count = score_with_engine(self._engine, ids, streams=streams)
        nats = total / count
        result = {"nats_per_char": nats, "bits_per_char": nats / LN2, "characters": int(len(ids)), "scored": count}
        if adapt is not None:
            from textgen import checkpoints
            from textgen.adapt import adapted_score
            from textgen.config import ModelConfig

            arrays = checkpoints.load_arrays(self._checkpoint.path)
            result["adapted"] = adapted_score(ModelConfig(**self.info["model"]), arrays, ids, adapt)
        return result

    def export(self, format: str, path, precision: str = "float32", force: bool = False) -> dict:
        """Export this checkpoint as ``textgen export`` does (html, onnx, savedmodel, tflite) to
        `path`; returns what was written. onnx, savedmodel and tflite need ``textgen[export]``
        and import TensorFlow.

        Example:
            >>> model.export("html", "shakespeare.html")["bytes"]
        """
        from textgen.export import export

        return export(self.directory, format, path, precision=precision, force=force, which=self.checkpoint)

    def card(self) -> dict:
        """What the notebook card shows: size, corpus, validation bpc, curve (see `Run.card`)."""
        from textgen.api.cards import run_figures

        return run_figures(self.info, self._checkpoint.state)

    def _repr_html_(self) -> str:
        from textgen.api.cards import model_card

        try:
            sample = self.sample(length=120, temperature=0.8, seed=0)
        except Exception:  # noqa: BLE001 (a card still renders when a sample cannot be made)
            sample = ""
        return model_card(self.name, self.checkpoint, self.card(), sample)

    def __repr__(self) -> str:
        return f"<textgen.Model {self.name!r} {self.checkpoint} step {self.step:,}>"

