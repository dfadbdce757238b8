"""Steering: a regular expression and banned words as a mask over the vocabulary before each draw.

A constraint is an explicit automaton over the model's character ids: `table[state, id]` is the
next state (the last state is dead: every move from it stays there), `accepting[state]` says
whether the text so far is a complete match, and `distance[state]` is the fewest characters
that reach an accepting state from there. A regular expression is compiled by `interegular`;
banned words become the automaton of "no banned word as a substring" (an Aho-Corasick walk); both
together are their product.

A stream with a constraint keeps a `Cursor` and, at each step with `remaining` characters of
its length left, may draw only ids whose next state still reaches acceptance within the
characters left after it (`distance[next] <= remaining - 1`). So every sample ends in an
accepting state: the pattern matches the whole text written (the prime included), whatever the
model prefers. A sample ends at its length, or earlier when it is a complete match and no
character can follow (the pattern `[0-9]{3}` ends after three digits). In line mode the end of
a line is one more choice, open only in an accepting state. Nothing is rejected after the fact,
and the randomness is the stream's own: the same seed and constraint give the same text alone
or in a batch.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np

from textgen.errors import ConfigError

UNREACHABLE = np.iinfo(np.int64).max // 2
MAX_STATES = 20_000  # a pattern whose automaton over the vocabulary is larger is refused
_REFUSED = {"AT": "anchors and word boundaries (^ $ \\b: the pattern always matches the whole text)",
            "ASSERT": "lookahead or lookbehind", "ASSERT_NOT": "lookahead or lookbehind",
            "GROUPREF": "backreferences", "GROUPREF_EXISTS": "conditional groups"}


class Automaton:
    """A deterministic automaton over ids [0, V): `table` (S, V) of next states, the last state dead."""

    def __init__(self, table: np.ndarray, accepting: np.ndarray, start: int):
        self.table = np.asarray(table, dtype=np.int64)
        self.accepting = np.asarray(accepting, dtype=bool)
        self.start = int(start)
        self.distance = _distances(self.table, self.accepting)
        self.nearest = self.distance[self.table].min(axis=1)  # per state: the closest acceptance one move on

    @property
    def states(self) -> int:
        return len(self.table)

    @property
    def kernel_tables(self):
        """This automaton's arrays as the compiled step reads them (made once, then kept)."""
        tables = self.__dict__.get("_kernel_tables")
        if tables is None:
            from textgen.generation.kernel_steer import SteerTables

            tables = self._kernel_tables = SteerTables(self.table, self.distance, self.nearest, self.accepting)
        return tables

    @property
    def dead(self) -> int:
        return len(self.table) - 1


def _distances(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """Fewest characters from each state to an accepting one (UNREACHABLE when none), by a
    breadth-first walk backwards from the accepting states."""
    states, vocab = table.shape
    distance = np.full(states, UNREACHABLE, dtype=np.int64)
    sources = np.repeat(np.arange(states), vocab)
    targets = table.reshape(-1)
    order = np.argsort(targets, kind="stable")
    sorted_targets, sorted_sources = targets[order], sources[order]
    frontier = np.flatnonzero(accepting)
    distance[frontier] = 0
    level = 0
    while len(frontier):
        level += 1
        lo = np.searchsorted(sorted_targets, frontier, "left")
        hi = np.searchsorted(sorted_targets, frontier, "right")
        preceding = np.concatenate([sorted_sources[a:b] for a, b in zip(lo, hi)] or [np.zeros(0, np.int64)])
        preceding = np.unique(preceding)
        frontier = preceding[distance[preceding] == UNREACHABLE]
        distance[frontier] = level
    return distance


def _check_syntax(pattern: str) -> None:
    """A Python syntax error, or a construct no automaton can hold, as one clear line."""
    if re.search(r"\[:[a-z]+:\]", pattern):
        raise ConfigError(f"--regex does not support POSIX classes such as [:alpha:]; write the set itself, such as "
                          f"[A-Za-z]. Received: regex={pattern!r}")
    if re.search(r"(?<!\\)(\\\\)*\\[uUN]", pattern):
        raise ConfigError(f"--regex: \\u, \\U and \\N escapes are not supported; type the character itself. "
                          f"Received: regex={pattern!r}")
    try:
        with warnings.catch_warnings():  # Python's FutureWarnings (nested sets) are not for the user
            warnings.simplefilter("ignore")
            parsed = re._parser.parse(pattern)  # the parser behind re.compile
    except re.error as e:
        raise ConfigError(f"--regex is not a valid regular expression ({e}). Received: regex={pattern!r}") from None
    if parsed.state.flags & ~re.UNICODE:
        raise ConfigError(f"--regex takes no inline flags such as (?i). Received: regex={pattern!r}")

    def walk(items) -> None:
        for op, value in items:
            name = str(op)
            if name in _REFUSED:
                raise ConfigError(f"--regex cannot use {_REFUSED[name]}. Received: regex={pattern!r}")
            for part in value if isinstance(value, (tuple, list)) else ():
                if isinstance(part, re._parser.SubPattern):
                    walk(part)
                elif isinstance(part, (tuple, list)):
                    for inner in part:
                        if isinstance(inner, re._parser.SubPattern):
                            walk(inner)
    walk(parsed)


class _TooManyStates(Exception):
    pass


def _key(state):
    """A hashable stand-in for an interegular state (a set, dict, list or tuple of states, or a
    value) that is equal where the states are equal."""
    if isinstance(state, dict):
        return ("dict", frozenset((k, _key(v)) for k, v in state.items()))
    if isinstance(state, (set, frozenset)):
        return frozenset(_key(s) for s in state)
    if isinstance(state, (list, tuple)):
        return (type(state) is list, tuple(_key(s) for s in state))
    return state


def _bounded_crawl(alphabet, initial, final, follow):
    """interegular's `crawl` (how it builds every automaton, intermediate ones included) with its
    states found by a dict rather than a list, and stopped past MAX_STATES: a pattern like
    `[ab]*a[ab]{20}` (2^21 states) is refused in a moment instead of running for hours."""
    from interegular.fsm import FSM, OblivionError

    states, index, finals, moves = [initial], {_key(initial): 0}, set(), {}
    for i, state in enumerate(states):  # grows while it is walked
        if final(state):
            finals.add(i)
        moves[i] = {}
        for transition in alphabet.by_transition:
            try:
                target = follow(state, transition)
            except OblivionError:
                continue
            key = _key(target)
            j = index.get(key)
            if j is None:
                if len(states) >= MAX_STATES:
                    raise _TooManyStates()
                j = index[key] = len(states)
                states.append(target)
            moves[i][transition] = j
    return FSM(alphabet=alphabet, states=range(len(states)), initial=0, finals=finals, map=moves,
               __no_validation__=True)


def compile_regex(pattern: str, chars: Sequence[str], exclude: Sequence[str] = ()) -> Automaton:
    """The automaton of `pattern` (full match, Python syntax) over `chars`; characters in
    `exclude` never move (line mode keeps the newline for the end of a line)."""
    _check_syntax(pattern)
    import interegular
    import interegular.fsm

    interegular.fsm.crawl = _bounded_crawl
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fsm = interegular.parse_pattern(pattern).to_fsm()
    except _TooManyStates:
        raise ConfigError(f"--regex compiles to more than {MAX_STATES:,} states. Received: regex={pattern!r}") from None
    except Exception as e:  # interegular's InvalidSyntax / Unsupported, and anything it cannot build
        raise ConfigError(f"--regex uses something textgen cannot compile ({str(e).rstrip('.') or type(e).__name__}). "
                          f"Received: regex={pattern!r}") from None
    names = {state: i for i, state in enumerate(sorted(fsm.states))}
    if len(names) > MAX_STATES:
        raise ConfigError(f"--regex compiles to {len(names):,} states, more than {MAX_STATES:,}. "
                          f"Received: regex={pattern!r}")
    dead = len(names)
    table = np.full((dead + 1, len(chars)), dead, dtype=np.int64)
    symbols = [fsm.alphabet[c] for c in chars]
    for state, moves in fsm.map.items():
        row = table[names[state]]
        for i, symbol in enumerate(symbols):
            if symbol in moves:
                row[i] = names[moves[symbol]]
    accepting = np.zeros(dead + 1, dtype=bool)
    accepting[[names[s] for s in fsm.finals]] = True
    excluded = [i for i, c in enumerate(chars) if c in exclude]
    whole = table.copy()
    table[:, excluded] = dead
    automaton = Automaton(table, accepting, names[fsm.initial])
    if automaton.distance[automaton.start] >= UNREACHABLE:
        if excluded and Automaton(whole, accepting, names[fsm.initial]).distance[names[fsm.initial]] < UNREACHABLE:
            raise ConfigError(f"With --lines a line cannot contain a line end, and every text --regex matches has "
                              f"one. Received: regex={pattern!r}")
        raise ConfigError(f"No text over the model's {len(chars)} characters matches --regex "
                          f"(it needs characters the model never saw). Received: regex={pattern!r}")
    return automaton


def ban_words(words: Sequence[str], chars: Sequence[str]) -> Automaton:
    """The automaton of texts that contain none of `words`: a state is the longest end of the
    text that begins a banned word; a move that completes one goes to the dead state."""
    words = list(dict.fromkeys(words))
    for word in words:
        if not word:
            raise ConfigError("A banned word must not be empty. Received: ban=''")
        unseen = sorted(set(word) - set(chars))
        if unseen:
            raise ConfigError(f"A banned word has characters the model never saw ({', '.join(map(repr, unseen))}), "
                              f"so it could never be written. Received: ban={word!r}")
    prefixes = sorted({w[:k] for w in words for k in range(len(w))}, key=lambda p: (len(p), p))
    index = {p: i for i, p in enumerate(prefixes)}
    dead = len(prefixes)
    table = np.full((dead + 1, len(chars)), dead, dtype=np.int64)
    for prefix, state in index.items():
        for i, char in enumerate(chars):
            text = prefix + char
            if any(text.endswith(w) for w in words):
                continue
            table[state, i] = next(index[text[k:]] for k in range(len(text) + 1) if text[k:] in index)
    accepting = np.ones(dead + 1, dtype=bool)
    accepting[dead] = False
    return Automaton(table, accepting, index[""])


def product(first: Automaton, second: Automaton) -> Automaton:
    """The automaton of texts both accept (their reachable pairs of states)."""
    pairs = {(first.start, second.start): 0}
    order = [(first.start, second.start)]
    rows = []
    for a, b in order:  # grows while it is walked
        targets = zip(first.table[a].tolist(), second.table[b].tolist())
        row = []
        for pair in targets:
            if pair[0] == first.dead or pair[1] == second.dead:
                row.append(-1)
                continue
            if pair not in pairs:
                if len(pairs) >= MAX_STATES:
                    raise ConfigError(f"--regex with --ban compiles to more than {MAX_STATES:,} states.")
                pairs[pair] = len(pairs)
                order.append(pair)
            row.append(pairs[pair])
        rows.append(row)
    dead = len(pairs)
    table = np.array(rows + [[dead] * first.table.shape[1]], dtype=np.int64)
    table[table < 0] = dead
    accepting = np.array([first.accepting[a] and second.accepting[b] for a, b in order] + [False])
    return Automaton(table, accepting, 0)


class Steering:
    """What a stream is steered by: an automaton over the vocabulary, and in line mode the id
    that ends a line (allowed only where the text so far matches)."""

    def __init__(self, automaton: Automaton, end_id: int | None = None, description: str = "",
                 includes_prime: bool = True):
        self.automaton, self.end_id, self.description = automaton, end_id, description
        self.includes_prime = includes_prime  # False: only the generated text must match (the server's completions)

    def cursor(self, prime_ids: Sequence[int], length: int) -> Cursor:
        """A cursor after the prime; a prime or length that leaves no match is a ConfigError."""
        cursor = Cursor(self)
        prime_ids = list(prime_ids) if self.includes_prime else []
        if self.end_id in prime_ids:  # line mode: the line begins after the prime's last line end
            prime_ids = prime_ids[len(prime_ids) - prime_ids[::-1].index(self.end_id):]
        for i in prime_ids:
            cursor.state = int(self.automaton.table[cursor.state, i])
        needed = int(self.automaton.distance[cursor.state])
        if needed >= UNREACHABLE:
            raise ConfigError(f"The prime cannot begin a text that {self.description}.")
        if needed > length:
            raise ConfigError(f"A text that {self.description} needs at least {needed} more characters after "
                              f"the prime. Received: length={length}")
        if not cursor.allowed(length).any():
            raise ConfigError(f"Nothing can follow the prime in a text that {self.description}: nothing is left to sample.")
        return cursor


class Cursor:
    """Where one stream stands in its automaton."""

    def __init__(self, steering: Steering):
        self.steering = steering
        self.state = steering.automaton.start

    def allowed(self, remaining: int) -> np.ndarray:
        """Which ids may come next with `remaining` characters left (this one included)."""
        automaton = self.steering.automaton
        mask = automaton.distance[automaton.table[self.state]] < remaining
        end = self.steering.end_id
        if end is not None:
            mask[end] = bool(automaton.accepting[self.state])
        return mask

    def advance(self, char_id: int, remaining: int) -> bool:
        """Move past `char_id`; True when the text is complete (the end of a line was drawn, or
        nothing may follow with `remaining` characters left)."""
        if char_id == self.steering.end_id:
            return True
        automaton = self.steering.automaton
        self.state = state = int(automaton.table[self.state, char_id])
        # `not self.allowed(remaining).any()` without the row: the end-of-line column never moves
        may_go_on = automaton.nearest[state] < remaining or (self.steering.end_id is not None
                                                              and automaton.accepting[state])
        return remaining > 0 and not may_go_on


def allowed_rows(cursors: Sequence[Cursor], remaining: np.ndarray) -> np.ndarray:
    """`Cursor.allowed` of many cursors at once, `remaining[i]` for cursor i: one array
    operation per steering rather than one per row (the same mask, row for row)."""
    mask = np.empty((len(cursors), cursors[0].steering.automaton.table.shape[1]), dtype=bool)
    groups: dict = {}
    for i, cursor in enumerate(cursors):
        groups.setdefault(id(cursor.steering), (cursor.steering, []))[1].append(i)
    for steering, rows in groups.values():
        automaton = steering.automaton
        states = np.fromiter((cursors[i].state for i in rows), np.int64, len(rows))
        mask[rows] = automaton.distance[automaton.table[states]] < np.asarray(remaining)[rows, None]
        if steering.end_id is not None:
            mask[rows, steering.end_id] = automaton.accepting[states]
    return mask


def steering(chars: Sequence[str], regex: str | None = None, ban: Sequence[str] = (),
             end: str | None = None, includes_prime: bool = True) -> Steering | None:
    """The steering of `--regex` and `--ban` over `chars` (None when neither is given); `end`:
    the character that ends a line in line mode; `includes_prime` False: the prime is not part
    of the match (only what is generated must match)."""
    ban = list(ban or [])
    if regex is None and not ban:
        return None
    exclude = () if end is None else (end,)
    automata, said = [], []
    if regex is not None:
        automata.append(compile_regex(regex, chars, exclude))
        said.append(f"matches --regex {regex!r}")
    if ban:
        automata.append(ban_words(ban, chars))
        said.append(f"contains no banned word ({', '.join(map(repr, ban))})")
    automaton = automata[0] if len(automata) == 1 else product(*automata)
    description = " and ".join(said)
    if automaton.distance[automaton.start] >= UNREACHABLE:
        raise ConfigError(f"No text over the model's characters {description}.")
    end_id = list(chars).index(end) if end is not None and end in chars else None
    return Steering(automaton, end_id, description, includes_prime)


def checked_steering(chars: Sequence[str], regex: str | None, ban: Sequence[str], stops: Sequence[str],
                     prime_ids: Sequence[int], length: int, lines: bool = False) -> Steering | None:
    """The steering of `textgen sample --regex/--ban` (per line with `lines`), checked against
    the prime and length before anything is sampled (one ConfigError for what cannot be kept);
    the CLI and the Python API both take it from here."""
    from textgen.generation.lines import BOUNDARY, check_boundary

    if regex is not None and not isinstance(regex, str):
        raise ConfigError(f"--regex must be a str. Received: regex={regex!r}")
    if isinstance(ban, str) or any(not isinstance(word, str) for word in ban or ()):
        raise ConfigError(f"--ban takes a list of words (str). Received: ban={ban!r}")
    if regex is not None and stops:
        raise ConfigError("--stop does not combine with --regex: the pattern decides where a sample ends.")
    if lines:
        check_boundary(chars)
    steered = steering(chars, regex, ban, end=BOUNDARY if lines else None)
    if steered is not None:
        steered.cursor([*([list(chars).index(BOUNDARY)] if lines else []), *prime_ids], length)
    return steered


def masked_logits(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """`logits` with the ids not `allowed` at -inf (a copy, float64)."""
    return np.where(allowed, np.asarray(logits, dtype=np.float64), -np.inf)


def masked_sample(logits: np.ndarray, allowed: np.ndarray, temperature: float, uniforms: np.ndarray,
                  top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """`draw.sample` over the `allowed` ids of each row. Where rounding would carry a draw past
    the last id (`sample` then gives V - 1), it is the last allowed id, as _kernel.c's draw_one."""
    from textgen.generation.draw import sample

    ids = sample(masked_logits(logits, allowed), temperature, uniforms, top_k, top_p)
    outside = ~allowed[np.arange(len(ids)), ids]
    if outside.any():
        ids[outside] = allowed.shape[1] - 1 - np.argmax(allowed[outside, ::-1], axis=1)
    return ids
