"""Duration parsing (spec/README.md conventions) and rendering (cli.md §1.6)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz.durations import MAX_DURATION_SECONDS, format_duration, parse_duration, relative_time


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("0", 0.0),
        ("0s", 0.0),
        ("2h45m30.5s", 9930.5),
        ("1m1m", 120.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("100ns", 1e-7),
        ("3us", 3e-6),
        ("3µs", 3e-6),
        ("3μs", 3e-6),
        ("-1.5h", -5400.0),
        ("+5s", 5.0),
        ("24h", 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "10", "s", "1x", "1d", "10 s", "1h 30m", "-", "+", "1.5.s", "h1", "abc", "１s", "99999999999h"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_duration(5)  # type: ignore[arg-type]


def test_parse_duration_range_is_gos() -> None:
    assert parse_duration("2562047h") == 2562047 * 3600.0
    assert 2562048 * 3600 > MAX_DURATION_SECONDS
    with pytest.raises(ValueError):
        parse_duration("2562048h")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (0.5, "500ms"),
        (0.25, "250ms"),
        (0.001, "1ms"),
        (0.0015, "1ms"),
        (0.9999, "999ms"),
        (0.0004, "0ms"),
        (1, "1s"),
        (45, "45s"),
        (59, "59s"),
        (60, "1m0s"),
        (125, "2m5s"),
        (3600, "1h0m0s"),
        (3661, "1h1m1s"),
        (86400, "24h0m0s"),
        (1.2, "1.2s"),
        (1.5, "1.5s"),
        (61.25, "1m1.25s"),
        (3600.5, "1h0m0.5s"),
        (1.000000001, "1.000000001s"),
        (302.0, "5m2s"),
        (-90, "-1m30s"),
        (-0.5, "-500ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_duration_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        format_duration(value)


@given(st.integers(min_value=1_000_000_000, max_value=10**15))
def test_format_then_parse_round_trips_whole_nanoseconds(ns: int) -> None:
    text = format_duration(ns / 1e9)
    assert round(parse_duration(text) * 1e9) == pytest.approx(ns, abs=2)


NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(0), "just now"),
        (timedelta(milliseconds=999), "just now"),
        (timedelta(seconds=-30), "just now"),
        (timedelta(days=-3), "just now"),
        (timedelta(seconds=1), "1 second ago"),
        (timedelta(seconds=1.9), "1 second ago"),
        (timedelta(seconds=2), "2 seconds ago"),
        (timedelta(seconds=59.9), "59 seconds ago"),
        (timedelta(seconds=60), "1 minute ago"),
        (timedelta(seconds=119), "1 minute ago"),
        (timedelta(minutes=5), "5 minutes ago"),
        (timedelta(minutes=59, seconds=59), "59 minutes ago"),
        (timedelta(hours=1), "1 hour ago"),
        (timedelta(hours=2, minutes=59), "2 hours ago"),
        (timedelta(hours=23, minutes=59), "23 hours ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(days=1, hours=23), "1 day ago"),
        (timedelta(days=400), "400 days ago"),
    ],
)
def test_relative_time(age: timedelta, text: str) -> None:
    assert relative_time(NOW - age, NOW) == text


def test_relative_time_accepts_epoch_seconds_and_rfc3339() -> None:
    assert relative_time(1000.0, 1300.0) == "5 minutes ago"
    assert relative_time("2026-05-01T11:00:00Z", "2026-05-01T12:00:00.5Z") == "1 hour ago"
    assert relative_time("2026-05-01T13:00:00+02:00", NOW) == "1 hour ago"
    with pytest.raises(ValueError):
        relative_time("not a time", NOW)


def test_relative_time_defaults_to_the_current_time() -> None:
    assert relative_time(datetime.now(UTC) - timedelta(minutes=3)) == "3 minutes ago"
    assert relative_time(datetime.now(UTC) + timedelta(minutes=3)) == "just now"
