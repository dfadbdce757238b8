"""What a steered row hands the compiled step (textgen/generation/_kernel.c's `Steer`): its
automaton's arrays, checked once, and where the row stands. No C is called here: kernel.py's
`Runner.run` passes the records to `tg_run`, which masks each steered row before its draw.
"""

from __future__ import annotations

import numpy as np

from textgen.generation.kernel import STEER, address, check


class SteerTables:
    """An automaton's arrays as _kernel.c reads them (int32 tables, uint8 accepting), checked
    once: every next state is one of its states, so C can follow the table without bounds."""

    def __init__(self, table: np.ndarray, distance: np.ndarray, nearest: np.ndarray, accepting: np.ndarray):
        states = len(table)
        top = np.iinfo(np.int32).max
        self.table = np.ascontiguousarray(table, dtype=np.int32)
        if states < 1 or self.table.ndim != 2 or self.table.min() < 0 or self.table.max() >= states:
            raise ValueError("an automaton's table must name only its own states")
        self.distance = np.ascontiguousarray(np.minimum(distance, top), dtype=np.int32)
        self.nearest = np.ascontiguousarray(np.minimum(nearest, top), dtype=np.int32)
        self.accepting = np.ascontiguousarray(accepting, dtype=np.uint8)
        for name, dtype in (("distance", np.int32), ("nearest", np.int32), ("accepting", np.uint8)):
            check(name, getattr(self, name), dtype, (states,))
        self.states = states
        self.addresses = (address(self.table), address(self.distance), address(self.nearest), address(self.accepting))


def steer_rows(records: list) -> np.ndarray:
    """The `STEER` array of a run: per row None (not steered) or (SteerTables, end id or -1, state,
    characters left); the SteerTables must outlive the run."""
    steer = np.zeros(len(records), STEER)
    for r, record in enumerate(records):
        if record is None:
            continue
        tables, end, state, left = record
        if not (0 <= state < tables.states):
            raise ValueError(f"state must be in [0, {tables.states}). Received: state={state}")
        steer[r] = (*tables.addresses, tables.states, end, state, left, 0)
    return steer
