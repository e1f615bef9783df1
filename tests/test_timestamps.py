"""RFC 3339 formatting and parsing (spec/README.md conventions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz.timestamps import epoch_seconds, format_rfc3339, now_rfc3339_micro, parse_rfc3339

NOON = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_format_second_precision_truncates() -> None:
    assert format_rfc3339(NOON) == "2026-05-01T12:00:00Z"
    assert format_rfc3339(NOON.replace(microsecond=999999)) == "2026-05-01T12:00:00Z"


def test_format_micro() -> None:
    assert format_rfc3339(NOON, micro=True) == "2026-05-01T12:00:00.123456Z"
    assert format_rfc3339(NOON.replace(microsecond=0), micro=True) == "2026-05-01T12:00:00.000000Z"


def test_format_converts_offsets_to_utc() -> None:
    local = datetime(2026, 5, 1, 14, 30, 0, tzinfo=timezone(timedelta(hours=2, minutes=30)))
    assert format_rfc3339(local) == "2026-05-01T12:00:00Z"


def test_format_naive_datetime_is_utc() -> None:
    assert format_rfc3339(datetime(2026, 5, 1, 12, 0, 0)) == "2026-05-01T12:00:00Z"


def test_format_epoch() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert format_rfc3339(1777636800.5, micro=True) == "2026-05-01T12:00:00.500000Z"


def test_format_pads_early_years() -> None:
    assert format_rfc3339(datetime(33, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0033-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("2026-05-01t12:00:00z", datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("2026-05-01T12:00:00.1Z", datetime(2026, 5, 1, 12, 0, 0, 100000, tzinfo=UTC)),
        ("2026-05-01T12:00:00.123456Z", NOON),
        ("2026-05-01T12:00:00.123456789Z", NOON),
        ("2026-05-01T12:00:00.1234567891Z", NOON),
        ("2026-05-01T14:00:00+02:00", datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("2026-05-01T07:30:00.5-04:30", datetime(2026, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-05-01T12:00:00+00:00", datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)),
        ("2026-05-01T00:30:00+01:00", datetime(2026, 4, 30, 23, 30, 0, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_parse(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-05-01",
        "2026-05-01T12:00:00",
        "2026-05-01 12:00:00Z",
        "2026-05-01T12:00Z",
        "2026-05-01T12:00:00.Z",
        "2026-05-01T12:00:00+0200",
        "2026-05-01T12:00:00+24:00",
        "2026-05-01T12:00:00+02:60",
        "2026-13-01T12:00:00Z",
        "2026-02-30T12:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-05-01T25:00:00Z",
        "2026-05-01T12:60:00Z",
        "2026-05-01T12:00:61Z",
        " 2026-05-01T12:00:00Z",
        "2026-05-01T12:00:00Z ",
        "2026-05-01T12:00:00Z\n",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "２０２６-05-01T12:00:00Z",
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(1234)  # type: ignore[arg-type]


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_micro_round_trip(value: datetime) -> None:
    assert parse_rfc3339(format_rfc3339(value, micro=True)) == value
    assert parse_rfc3339(format_rfc3339(value)) == value.replace(microsecond=0)


def test_now_rfc3339_micro_shape_and_value() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    text = now_rfc3339_micro()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", text)
    assert before <= parse_rfc3339(text) <= after


def test_epoch_seconds() -> None:
    assert epoch_seconds("1970-01-01T00:01:00Z") == 60.0
    assert epoch_seconds(datetime(1970, 1, 1, 0, 1)) == 60.0
    assert epoch_seconds(datetime(1970, 1, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 60.0
    assert epoch_seconds(60) == 60.0
    with pytest.raises(ValueError):
        epoch_seconds("yesterday")
