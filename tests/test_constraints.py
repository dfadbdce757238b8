"""Steering (textgen/generation/constraints.py): --regex and --ban as a mask before each draw.
Every sample matches in full, a banned word never appears, the same seed gives the same text
alone or in a batch, and every pattern that cannot be kept is one clear line before sampling."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import assert_one_line_error, invoke, random_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textgen.errors import ConfigError
from textgen.generation.constraints import allowed_rows, ban_words, compile_regex, steering
from textgen.generation.engine import LSTMEngine
from textgen.generation.session import SamplingSession, StreamSpec

CHARS = list("abcdefg")


@pytest.fixture(scope="module")
def engine():
    return LSTMEngine(random_weights(units=16, scale=1.0), 2)


def texts(engine, specs, max_steps=16):
    session = SamplingSession(engine, CHARS)
    streams = [session.add(spec) for spec in specs]
    while any(s.finish_reason is None for s in streams):
        session.step(max_steps)
    session.close()
    return [s.text for s in streams]


# ----------------------------------------------------------------------------- the automaton


def test_the_automaton_knows_how_far_acceptance_is():
    automaton = compile_regex("ab{2,3}c|g", CHARS)
    assert automaton.distance[automaton.start] == 1  # "g"
    a = automaton.table[automaton.start, CHARS.index("a")]
    assert automaton.distance[a] == 3  # "bbc"
    assert not automaton.accepting[a]
    assert automaton.table[automaton.start, CHARS.index("c")] == automaton.dead


def test_banned_words_are_the_dead_moves():
    automaton = ban_words(["abc", "bd"], CHARS)
    state = automaton.start
    for char in "ab":
        state = automaton.table[state, CHARS.index(char)]
    assert automaton.table[state, CHARS.index("c")] == automaton.dead  # completes "abc"
    assert automaton.table[state, CHARS.index("d")] == automaton.dead  # completes "bd"
    assert automaton.table[state, CHARS.index("a")] != automaton.dead


def test_masks_of_many_rows_at_once_are_each_rows_own_mask():
    """allowed_rows (the session's batched masks) against Cursor.allowed row by row, and a
    cursor's "nothing may follow" against its mask, over every state and remaining length."""
    chars = [*CHARS, "\n"]  # one vocabulary, as in a session
    plain, lines = steering(chars, "(ab|c)+d?", ["cc"]), steering(chars, "a[bc]*", end="\n")
    cursors, remaining = [], []
    for steered in (plain, lines):
        for state in range(steered.automaton.states):
            for left in (1, 2, 3, 7):
                cursor = steered.cursor([], 8)
                cursor.state = state
                cursors.append(cursor)
                remaining.append(left)
    masks = allowed_rows(cursors, np.array(remaining))
    for cursor, left, mask in zip(cursors, remaining, masks):
        assert (mask == cursor.allowed(left)).all()
        ids = np.flatnonzero(cursor.allowed(left + 1))
        for char_id in ids:
            moved = cursor.steering.cursor([], 8)
            moved.state = cursor.state
            complete = moved.advance(int(char_id), left)
            expected = char_id == cursor.steering.end_id or not moved.allowed(left).any()
            assert complete == expected


# ----------------------------------------------------------------------------- sampling under constraints


@pytest.mark.parametrize("pattern", ["(ab|c)+d{2,3}", "[a-c]*g", "a?b?c?", "e[^e]{4}e", "(fa|g)*"])
def test_every_sample_matches_in_full(engine, pattern):
    steered = steering(CHARS, regex=pattern)
    for temperature in (0.0, 1.0, 3.0):
        specs = [StreamSpec(length=24, temperature=temperature, seed=5, index=i, steering=steered) for i in range(8)]
        for text in texts(engine, specs):
            assert re.fullmatch(pattern, text), (pattern, text)


def test_the_prime_is_part_of_the_match_and_top_k_p_keep_to_it(engine):
    steered = steering(CHARS, regex="ab[c-g]{5}")
    specs = [StreamSpec(prime="ab", length=5, temperature=1.0, top_k=2, seed=1, index=0, steering=steered),
             StreamSpec(prime="ab", length=5, temperature=1.0, top_p=0.5, seed=1, index=1, steering=steered)]
    for text in texts(engine, specs):
        assert re.fullmatch("ab[c-g]{5}", "ab" + text), text


def test_a_banned_word_is_never_completed(engine):
    words = ["ab", "ccc", "gf"]
    steered = steering(CHARS, ban=words)
    specs = [StreamSpec(prime="a", length=300, temperature=2.0, seed=2, index=i, steering=steered) for i in range(6)]
    plain = texts(engine, [StreamSpec(prime="a", length=300, temperature=2.0, seed=2, index=i) for i in range(6)])
    assert any(w in "a" + t for t in plain for w in words)  # the model would write them
    for text in texts(engine, specs):
        assert len(text) == 300
        assert not any(w in "a" + text for w in words), text


def test_regex_and_ban_together(engine):
    steered = steering(CHARS, regex="[a-d]+g", ban=["abc", "dd"])
    for text in texts(engine, [StreamSpec(length=40, temperature=2.0, seed=4, index=i, steering=steered)
                               for i in range(8)]):
        assert re.fullmatch("[a-d]+g", text) and "abc" not in text and "dd" not in text, text


def test_same_seed_same_text_alone_or_among_other_rows(engine):
    steered = steering(CHARS, regex="[a-f]+g")

    def spec(index, steer=steered, temperature=1.0):
        return StreamSpec(length=60, temperature=temperature, seed=9, index=index, steering=steer)

    alone = texts(engine, [spec(3)])
    batch = texts(engine, [spec(0, None), spec(1, None, 0.5), spec(3), spec(4, steering(CHARS, ban=["a"]))])
    assert batch[2] == alone[0]
    # the unconstrained rows keep their text bit for bit (they stay on the fast draw)
    assert batch[0] == texts(engine, [spec(0, None)])[0]
    assert batch[1] == texts(engine, [spec(1, None, 0.5)])[0]
    assert texts(engine, [spec(3)], max_steps=1) == alone


def test_the_compiled_run_steers_as_the_one_step_draw_does(engine):
    # Several steps per call (tg_run masks each steered row in C) and one step per call (the
    # numpy masked draw) write the same text, for every kind of steering, mixed with a plain row.
    cases = [steering(CHARS, regex="[a-f]+g"), steering(CHARS, ban=["ab", "ca", "ddd"]),
             steering(CHARS, regex="(ab|c{2,3})*e", ban=["cc"]), steering(CHARS, regex="[abc]{3}")]
    specs = [StreamSpec(length=40, temperature=t, seed=5, index=i, steering=steer)
             for i, (steer, t) in enumerate([(c, t) for c in cases for t in (0.0, 0.7, 2.0)])]
    specs += [StreamSpec(length=40, temperature=1.0, seed=5, index=100)]  # a plain row among them
    many = texts(engine, specs)
    assert many == texts(engine, specs, max_steps=1)
    assert many[-1] == texts(engine, [specs[-1]])[0]
    if engine.compiled is not None:  # the steered rows did run several steps per call
        session = SamplingSession(engine, CHARS)
        session.add(StreamSpec(length=40, temperature=1.0, seed=5, steering=cases[1]))
        session.step(16)
        assert session.steps_done == 16
        session.close()
    # line mode: the end of a line is open only where the line matches, and ends the stream
    chars = [*CHARS, "\n"]
    lines = steering(chars, regex="[a-c]+d?", end="\n")
    engine8 = LSTMEngine(random_weights(units=16, scale=1.0, vocab=8), 2)
    written = []
    for max_steps in (16, 1):
        session = SamplingSession(engine8, chars)
        streams = [session.add(StreamSpec(length=30, temperature=1.0, seed=2, index=i, steering=lines))
                   for i in range(4)]
        while any(s.finish_reason is None for s in streams):
            session.step(max_steps)
        session.close()
        written.append([s.text for s in streams])
    assert written[0] == written[1]
    assert all(re.fullmatch("[a-c]+d?\n?", t) for t in written[0]), written[0]


def test_the_compiled_step_refuses_an_automaton_that_leaves_itself():
    from textgen.generation.kernel_steer import SteerTables, steer_rows

    automaton = compile_regex("[ab]c", CHARS)
    tables = automaton.kernel_tables
    assert tables.table.dtype == np.int32 and tables.states == automaton.states
    with pytest.raises(ValueError, match="own states"):
        SteerTables(automaton.table + 1, automaton.distance, automaton.nearest, automaton.accepting)
    with pytest.raises(ValueError, match="state must be in"):
        steer_rows([None, (tables, -1, automaton.states, 5)])
    assert steer_rows([None, (tables, -1, 0, 5)])["left"].tolist() == [0, 5]


# A small grammar of patterns over the vocabulary and one character it lacks ("x").
ATOMS = st.sampled_from(["a", "b", "c", "x", "[a-c]", "[^ab]", ".", "(a|bc)", "g"])


BRANCHES = st.lists(st.tuples(ATOMS, st.sampled_from(["", "?", "*", "+", "{2}", "{1,3}"])), min_size=1, max_size=4)
patterns = st.lists(BRANCHES.map(lambda parts: "".join(a + q for a, q in parts)), min_size=1, max_size=3) \
    .map("|".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=patterns, seed=st.integers(0, 2**16), temperature=st.sampled_from([0.0, 0.7, 2.0]))
def test_property_every_sample_matches_or_the_pattern_is_refused(engine, pattern, seed, temperature):
    try:
        steered = steering(CHARS, regex=pattern)
        steered.cursor([], 12)
    except ConfigError:
        # refused up front: only when no text of 1 to 12 characters over the vocabulary matches
        assert not any(re.fullmatch(pattern, w) for w in _words(12, pattern))
        return
    specs = [StreamSpec(length=12, temperature=temperature, seed=seed, index=i, steering=steered) for i in range(3)]
    written = texts(engine, specs)
    for text in written:
        assert re.fullmatch(pattern, text), (pattern, text)
    assert texts(engine, specs, max_steps=1) == written  # the compiled run and the one-step draw agree


def _words(limit, pattern):
    """Short texts over the vocabulary that might match (enough to show a refusal was right)."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(CHARS, size=n)) for n in range(1, limit + 1) for _ in range(30)]
    return words + [*CHARS, "bc", "abc", "aa", "bcbc"]


# ----------------------------------------------------------------------------- the command line


def test_sample_regex_on_the_tiny_run(tiny_run):
    result = invoke("sample", "--checkpoints", tiny_run.checkpoints, "--seed", 1, "--num-samples", 4,
                    "--temperature", "0.5,1.5", "--regex", "[A-Z][a-z]+ [a-z]+\\.", "--ban", "the", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["regex"] == "[A-Z][a-z]+ [a-z]+\\." and data["ban"] == ["the"]
    assert len(data["samples"]) == 8
    for sample in data["samples"]:
        assert re.fullmatch("[A-Z][a-z]+ [a-z]+\\.", sample["text"]) and "the" not in sample["text"], sample
    again = invoke("sample", "--checkpoints", tiny_run.checkpoints, "--seed", 1, "--temperature", "0.5",
                   "--regex", "[A-Z][a-z]+ [a-z]+\\.", "--ban", "the", "--json")
    assert json.loads(again.stdout)["samples"][0]["text"] == data["samples"][0]["text"]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--regex", "[0-9]+"], ["No text over the model's 36 characters matches --regex", "'[0-9]+'"]),
    (["--regex", "a(b"], ["not a valid regular expression", "missing )"]),
    (["--regex", "(?=a)a"], ["lookahead or lookbehind"]),
    (["--regex", "^a$"], ["anchors"]),
    (["--regex", "(a)\\1"], ["backreferences"]),
    (["--regex", "(?i)a"], ["inline flags"]),
    (["--regex", "a{20}", "--length", "10"], ["needs at least 20 more characters", "length=10"]),
    (["--regex", "ROMEO", "--prime", "JULIET"], ["The prime cannot begin a text that matches --regex 'ROMEO'"]),
    (["--regex", "ROMEO", "--prime", "ROMEO"], ["Nothing can follow the prime", "nothing is left to sample"]),
    (["--regex", "[a-z]+", "--stop", "e"], ["--stop does not combine with --regex"]),
    (["--ban", ""], ["A banned word must not be empty"]),
    (["--ban", "Zed"], ["characters the model never saw ('Z')", "ban='Zed'"]),
    (["--regex", "[ab]*a[ab]{20}"], ["more than 20,000 states"]),  # 2^21 states: refused within a second
    (["--ban", "ROMEO", "--prime", "ROMEO"], ["The prime cannot begin a text that contains no banned word"]),
    (["--regex", "a+", "--interactive"], ["does not combine with --regex"]),
])
def test_constraints_that_cannot_be_kept_are_one_line(tiny_run, args, fragments):
    result = invoke("sample", "--checkpoints", tiny_run.checkpoints, "--seed", 1, *args)
    assert_one_line_error(result, *fragments)
