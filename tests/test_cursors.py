"""Cursor arithmetic (spec/nats.md §8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz.cursors import CursorEntry, advance, effective, unread

T1 = 1777636200123456789
T2 = 1777636299000000000

# ---------------------------------------------------------------------------- CursorEntry


def test_entry_round_trip() -> None:
    entry = CursorEntry(12, T1)
    assert entry.to_json() == {"seq": 12, "created": T1}
    assert CursorEntry.from_json(entry.to_json()) == entry


def test_legacy_bare_integer_reads_as_created_zero() -> None:
    assert CursorEntry.from_json(12) == CursorEntry(12, 0)


def test_missing_created_reads_as_zero_and_unknown_fields_are_ignored() -> None:
    assert CursorEntry.from_json({"seq": 3}) == CursorEntry(3, 0)
    assert CursorEntry.from_json({"seq": 3, "created": 7, "extra": "x"}) == CursorEntry(3, 7)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -1,
        1.5,
        "12",
        [12],
        {},
        {"created": 5},
        {"seq": "3"},
        {"seq": 3, "created": "x"},
        {"seq": 3, "created": -1},
        {"seq": True, "created": 0},
        {"seq": 3, "created": None},
    ],
)
def test_malformed_entry_is_rejected(value: object) -> None:
    with pytest.raises(ValueError):
        CursorEntry.from_json(value)


# ---------------------------------------------------------------------------- advance


def test_advance_without_entry_creates_one() -> None:
    assert advance(None, 5, T1) == CursorEntry(5, T1)


@pytest.mark.parametrize("entry", [None, CursorEntry(5, T1)])
def test_advance_seq_zero_is_ignored(entry: CursorEntry | None) -> None:
    assert advance(entry, 0, T1) is None
    assert advance(entry, 0, T2) is None


def test_advance_is_monotonic_within_one_incarnation() -> None:
    entry = CursorEntry(10, T1)
    assert advance(entry, 11, T1) == CursorEntry(11, T1)
    assert advance(entry, 10, T1) is None
    assert advance(entry, 3, T1) is None


def test_advance_overwrites_on_new_incarnation_even_backwards() -> None:
    assert advance(CursorEntry(10, T1), 2, T2) == CursorEntry(2, T2)


def test_advance_overwrites_legacy_entry_when_creation_becomes_known() -> None:
    assert advance(CursorEntry(10, 0), 2, T1) == CursorEntry(2, T1)


def test_advance_keeps_legacy_entry_when_creation_still_unknown() -> None:
    assert advance(CursorEntry(10, 0), 2, 0) is None
    assert advance(CursorEntry(10, 0), 11, 0) == CursorEntry(11, 0)


# ---------------------------------------------------------------------------- effective


@pytest.mark.parametrize(
    ("entry", "stream_created", "last_seq", "expected"),
    [
        (None, T1, 10, 0),
        (CursorEntry(0, T1), T1, 10, 0),
        (CursorEntry(5, T1), T1, 10, 5),
        (CursorEntry(10, T1), T1, 10, 10),
        # stream destroyed and recreated
        (CursorEntry(5, T1), T2, 10, 0),
        # creation time unknown on one side: not a recreation
        (CursorEntry(5, 0), T2, 10, 5),
        (CursorEntry(5, T1), 0, 10, 5),
        # stream reset: cursor above the last sequence
        (CursorEntry(11, T1), T1, 10, 0),
        (CursorEntry(3, T1), T1, 0, 0),
    ],
)
def test_effective(entry: CursorEntry | None, stream_created: int, last_seq: int, expected: int) -> None:
    assert effective(entry, stream_created, last_seq) == expected


# ---------------------------------------------------------------------------- unread


@pytest.mark.parametrize(
    ("last_seq", "eff", "total", "expected"),
    [
        (10, 0, 10, 10),
        (10, 4, 10, 6),
        # retention removed the oldest messages: they never count
        (10, 0, 3, 3),
        (10, 4, 2, 2),
        (10, 10, 10, 0),
        (10, 12, 10, 0),
        (0, 0, 0, 0),
        (5, 0, 0, 0),
    ],
)
def test_unread(last_seq: int, eff: int, total: int, expected: int) -> None:
    assert unread(last_seq, eff, total) == expected


def test_recreated_stream_counts_everything_retained_as_unread() -> None:
    eff = effective(CursorEntry(50, T1), T2, 8)
    assert unread(8, eff, 8) == 8


# ---------------------------------------------------------------------------- invariants

seqs = st.integers(min_value=0, max_value=10**6)
created_values = st.sampled_from([0, T1, T2])


@given(st.lists(seqs, max_size=30), created_values)
def test_cursor_never_moves_backwards_within_an_incarnation(steps: list[int], created: int) -> None:
    entry: CursorEntry | None = None
    for seq in steps:
        new = advance(entry, seq, created)
        if new is not None:
            assert entry is None or new.seq > entry.seq
            entry = new
    positive = [s for s in steps if s > 0]
    assert (entry.seq if entry else 0) == max(positive, default=0)


@given(st.lists(st.tuples(seqs, created_values), max_size=30))
def test_latest_delivery_of_a_new_incarnation_always_lands(steps: list[tuple[int, int]]) -> None:
    entry: CursorEntry | None = None
    for seq, created in steps:
        new = advance(entry, seq, created)
        if seq > 0 and (entry is None or entry.created != created):
            assert new == CursorEntry(seq, created)
        entry = new or entry


@given(st.none() | st.builds(CursorEntry, seqs, created_values), created_values, seqs, seqs)
def test_effective_and_unread_stay_in_range(
    entry: CursorEntry | None, stream_created: int, last_seq: int, total: int
) -> None:
    eff = effective(entry, stream_created, last_seq)
    assert 0 <= eff <= last_seq
    assert eff in (0, entry.seq if entry else 0)
    count = unread(last_seq, eff, total)
    assert 0 <= count <= min(total, last_seq)
