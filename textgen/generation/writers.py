"""What `textgen sample` and the trainer write with a session: finished sample records, and
streams of character ids for callers that work in ids."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from textgen.errors import positive_int
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
