"""The NATS event log (spec/daemon.md §8; behaviours.md 73–78)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppz import eventlog
from ppz.eventlog import (
    Event,
    EventLog,
    count_on_disk,
    detect_patterns,
    drops_last_hour,
    events_since,
    state_since,
    tail_events,
)
from ppz.timestamps import format_rfc3339

T0 = 1777636800  # 2026-05-01T12:00:00Z
STORM_TAIL = "concurrent NATS connection mutation"
STORM_LINK = "see docs/diagnostics.md#burst-swap-storm"
AUTH_DETAIL = (
    "server-kick at jwt_exp ±{d}s → stale-jwt reconnect rejected; proactive rotate did not fire in "
    "time. See docs/diagnostics.md#post-rotation-auth-violation"
)


def at(offset: float) -> str:
    return format_rfc3339(T0 + offset, micro=True)


def ev(type_: str, offset: float, **fields: Any) -> Event:
    return Event(type=type_, at=at(offset), **fields)


def swap(offset: float, caller: str = "ensureNATS", reason: str = "old=- new=-") -> Event:
    return ev("swap", offset, caller=caller, reason=reason)


def storm(n: int, width: str, callers: str) -> str:
    return f"{n} swaps in {width} — {STORM_TAIL} (callers: {callers}); {STORM_LINK}"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def make_log(home: Path, clock: Clock | None = None, **kwargs: int) -> EventLog:
    events, lifecycle = home / "nats-events.jsonl", home / "diagnostics-lifecycle.jsonl"
    return EventLog(events, lifecycle, clock=clock or Clock(), **kwargs)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, *items: object) -> None:
    """Write raw lines: bytes as they are, anything else JSON-encoded."""
    path.write_bytes(b"".join((i if isinstance(i, bytes) else orjson.dumps(i)) + b"\n" for i in items))


def record_json(type_: str, offset: float, **fields: object) -> dict[str, object]:
    return {"v": 1, "type": type_, "at": at(offset), **fields}


# --- the record -----------------------------------------------------------------------------------


def test_to_json_puts_v_first_and_omits_empty_fields() -> None:
    full = Event(
        type="swap",
        at="2026-05-01T12:00:00.123456Z",
        caller="OnRefreshed-callback",
        nc_id="nc-48213-3",
        jwt_exp=1777636200,
        reason="old=nc-48213-2 new=nc-48213-3",
    )
    assert full.to_line() == (
        b'{"v":1,"type":"swap","at":"2026-05-01T12:00:00.123456Z","caller":"OnRefreshed-callback",'
        b'"nc_id":"nc-48213-3","jwt_exp":1777636200,"reason":"old=nc-48213-2 new=nc-48213-3"}\n'
    )
    assert list(ev("closed", 0).to_json()) == ["v", "type", "at"]


@pytest.mark.parametrize(
    "obj",
    [
        [1],
        "swap",
        None,
        {"type": "swap", "at": "2026-05-01T12:00:00Z"},
        {"v": 2, "type": "swap", "at": "2026-05-01T12:00:00Z"},
        {"v": True, "type": "swap", "at": "2026-05-01T12:00:00Z"},
        {"v": 1.0, "type": "swap", "at": "2026-05-01T12:00:00Z"},
        {"v": 1, "at": "2026-05-01T12:00:00Z"},
        {"v": 1, "type": "", "at": "2026-05-01T12:00:00Z"},
        {"v": 1, "type": 7, "at": "2026-05-01T12:00:00Z"},
        {"v": 1, "type": "swap"},
        {"v": 1, "type": "swap", "at": "yesterday"},
        {"v": 1, "type": "swap", "at": 1777636800},
    ],
)
def test_from_json_rejects_what_readers_skip(obj: object) -> None:
    assert Event.from_json(obj) is None


def test_from_json_ignores_unknown_fields_and_empties_wrong_types() -> None:
    obj = {"v": 1, "type": "disconnect", "at": "2026-05-01T12:00:00Z", "extra": {"x": 1}, "caller": 5,
           "nc_id": None, "jwt_exp": "1777636200", "reason": ["eof"]}
    assert Event.from_json(obj) == Event(type="disconnect", at="2026-05-01T12:00:00Z")
    assert Event.from_json({**obj, "jwt_exp": True}) == Event(type="disconnect", at="2026-05-01T12:00:00Z")


def test_at_is_parsed_at_full_precision_with_any_offset() -> None:
    utc = Event(type="connect", at="2026-05-01T12:00:00.123456789Z")
    shifted = Event(type="connect", at="2026-05-01T14:00:00.123456789+02:00")
    assert utc.at_ns == shifted.at_ns == T0 * 10**9 + 123456789
    assert Event(type="connect", at="2026-05-01T12:00:00Z").at_epoch == T0
    assert Event(type="connect", at="2026-05-01T12:00:00.5Z").at_epoch == T0 + 0.5
    with pytest.raises(ValueError):
        Event(type="connect", at="2026-05-01 12:00:00Z")


@given(
    type_=st.sampled_from(["connect", "swap", "warn"]),
    micros=st.integers(min_value=0, max_value=4_000_000_000_000_000),
    caller=st.text(),
    nc_id=st.text(),
    jwt_exp=st.integers(min_value=0, max_value=2**40),
    reason=st.text(),
)
def test_records_round_trip_through_a_line(
    type_: str, micros: int, caller: str, nc_id: str, jwt_exp: int, reason: str
) -> None:
    event = Event(type=type_, at=format_rfc3339(micros / 1e6, micro=True), caller=caller, nc_id=nc_id,
                  jwt_exp=jwt_exp, reason=reason)
    assert Event.from_json(orjson.loads(event.to_line())) == event


# --- burst-swap-storm --------------------------------------------------------------------------------


def test_three_swaps_in_two_seconds_fire_once_at_the_first() -> None:
    events = [
        ev("connect", -5, caller="ensureNATS"),
        swap(0, "ensureNATS"),
        swap(0.5, ""),
        swap(1.2, "OnRefreshed-callback"),
    ]
    detail = storm(3, "1.2s", "ensureNATS, ?, OnRefreshed-callback")
    assert detect_patterns(events) == [{"name": "burst-swap-storm", "at": at(0), "detail": detail}]


def test_other_events_between_swaps_do_not_break_the_cluster() -> None:
    events = [
        swap(0, "handleLogin"),
        ev("disconnect", 0.1, caller="nats-client"),
        ev("closed", 0.2, caller="nats-client"),
        swap(0.25, "ensureNATS"),
        ev("warn", 0.3, caller="subscribePresence"),
        swap(0.5, "handleLogin"),
    ]
    hits = detect_patterns(events)
    assert [h["detail"] for h in hits] == [storm(3, "500ms", "handleLogin, ensureNATS")]
    assert hits[0]["at"] == at(0)


@pytest.mark.parametrize("offsets", [[0, 5, 10], [0, 0.1], [0, 1.0, 2.001]])
def test_swaps_too_few_or_too_spread_do_not_fire(offsets: list[float]) -> None:
    assert detect_patterns([swap(t) for t in offsets]) == []


def test_window_is_inclusive_and_width_rounds_to_100ms() -> None:
    assert detect_patterns([swap(0), swap(1), swap(2)])[0]["detail"] == storm(3, "2s", "ensureNATS")
    assert detect_patterns([swap(0), swap(0.01), swap(0.04)])[0]["detail"] == storm(3, "0s", "ensureNATS")
    assert detect_patterns([swap(0), swap(0.01), swap(0.05)])[0]["detail"] == storm(3, "100ms", "ensureNATS")


def test_six_swaps_in_one_second_are_one_storm() -> None:
    hits = detect_patterns([swap(t / 5) for t in range(6)])
    assert [(h["at"], h["detail"]) for h in hits] == [(at(0), storm(6, "1s", "ensureNATS"))]


def test_walk_continues_after_the_clusters_last_swap() -> None:
    # The first cluster ends at 0.2 s; the next one starts at the following swap.
    events = [swap(t) for t in (0, 0.1, 0.2, 2.15, 2.2, 2.3)]
    assert [h["at"] for h in detect_patterns(events)] == [at(0), at(2.15)]


def test_walk_advances_by_one_when_a_swap_starts_no_storm() -> None:
    # From 0 only two swaps fall within 2 s; from 1.5 three do.
    hits = detect_patterns([swap(0), swap(1.5), swap(2.5), swap(3.0)])
    assert [(h["at"], h["detail"]) for h in hits] == [(at(1.5), storm(3, "1.5s", "ensureNATS"))]


# --- post-rotation-auth-violation ----------------------------------------------------------------


def kick(disconnect_at: float, jwt_exp: int, reason: str = "nats: Authorization Violation") -> list[Event]:
    return [
        ev("disconnect", disconnect_at, caller="nats-client", nc_id="nc-1-1", jwt_exp=jwt_exp),
        ev("reconnect", disconnect_at + 1, caller="nats-client", nc_id="nc-1-1"),
        ev("closed", disconnect_at + 2, caller="nats-client", nc_id="nc-1-1", reason=reason),
    ]


def test_auth_violation_close_after_disconnect_at_jwt_exp_fires() -> None:
    assert detect_patterns(kick(0, T0)) == [
        {"name": "post-rotation-auth-violation", "at": at(0), "detail": AUTH_DETAIL.format(d=0)}
    ]


def test_an_expired_credential_close_fires_too() -> None:
    # nats-py's close reason when the server expires the user JWT (daemon.md §8.7).
    hits = detect_patterns(kick(0, T0, reason="nats: user authentication expired"))
    assert [h["name"] for h in hits] == ["post-rotation-auth-violation"]


@pytest.mark.parametrize(("offset", "shown"), [(12.4, 12), (-12.5, 13), (60, 60)])
def test_auth_violation_reports_distance_from_jwt_exp(offset: float, shown: int) -> None:
    hits = detect_patterns(kick(offset, T0, reason="authorization VIOLATION"))
    assert [h["detail"] for h in hits] == [AUTH_DETAIL.format(d=shown)]


@pytest.mark.parametrize(
    "events",
    [
        kick(600, T0),
        kick(60.5, T0),
        kick(0, 0),
        kick(0, T0, reason="nats: stale connection"),
        # The nearest earlier disconnect is the one judged, not an older one at jwt_exp.
        [
            *kick(0, T0)[:2],
            ev("disconnect", 300, jwt_exp=T0),
            ev("closed", 301, reason="authorization violation"),
        ],
        [ev("closed", 0, reason="Authorization Violation")],
    ],
)
def test_auth_violation_does_not_fire(events: list[Event]) -> None:
    assert detect_patterns(events) == []


def test_hits_of_both_detectors_come_back_in_time_order() -> None:
    # The first kick's closed comes after the storm it precedes in time.
    events = [
        ev("disconnect", -1, jwt_exp=T0 - 1),
        *(swap(t) for t in (0, 0.1, 0.2)),
        ev("closed", 0.5, reason="Authorization Violation"),
        *kick(10, T0 + 10),
        *(swap(t) for t in (20, 20.1, 20.2)),
    ]
    assert [(h["name"], h["at"]) for h in detect_patterns(events)] == [
        ("post-rotation-auth-violation", at(-1)),
        ("burst-swap-storm", at(0)),
        ("post-rotation-auth-violation", at(10)),
        ("burst-swap-storm", at(20)),
    ]


# --- drops_last_hour and state_since ---------------------------------------------------------------


def test_drops_last_hour_excludes_swap_closes_and_rotation() -> None:
    now = T0 + 3600
    events = [
        ev("disconnect", 0, caller="nats-client", nc_id="nc-1-1"),  # exactly an hour ago: counts
        ev("disconnect", -1, caller="nats-client", nc_id="nc-1-1"),  # older: does not
        swap(100, reason="old=nc-1-1 new=nc-1-2"),
        ev("disconnect", 104, caller="nats-client", nc_id="nc-1-1"),  # the swap closed it
        ev("force_close", 200, caller="reportNATSFailure", nc_id="nc-1-2"),
        ev("disconnect", 201, caller="nats-client", nc_id="nc-1-2"),  # after a force close: counts
        ev("disconnect", 300, caller="rotate", nc_id="nc-1-2"),  # in-place rotation
        ev("disconnect", 400, caller="nats-client", nc_id="nc-1-2"),  # genuine drop
    ]
    assert drops_last_hour(sorted(events, key=lambda e: e.at_ns), now) == 3


def test_swap_attribution_needs_the_exact_id_within_five_seconds() -> None:
    now = T0 + 60
    events = [
        swap(0, reason="old=nc-1-10 new=nc-1-11"),
        ev("disconnect", 1, nc_id="nc-1-1"),  # nc-1-1 is not nc-1-10
        swap(10, reason="old=nc-1-3 new=nc-1-4"),
        ev("disconnect", 15.5, nc_id="nc-1-3"),  # 5.5 s after the swap
        swap(20, reason="old=nc-1-4 new=nc-1-5"),
        ev("warn", 21),
        ev("disconnect", 25, nc_id="nc-1-4"),  # exactly 5 s: attributed
        ev("disconnect", 26),  # no id: a drop
    ]
    assert drops_last_hour(events, now) == 3


def test_behaviour_74_three_disconnects_one_from_a_swap() -> None:
    events = [
        swap(0, reason="old=nc-7-1 new=nc-7-2"),
        ev("disconnect", 2, caller="nats-client", nc_id="nc-7-1"),
        ev("disconnect", 50, caller="nats-client", nc_id="nc-7-2"),
        ev("disconnect", 90, caller="nats-client", nc_id="nc-7-3"),
    ]
    assert drops_last_hour(events, T0 + 100) == 2


def test_state_since_connected_skips_rotation_reconnects() -> None:
    connect = ev("connect", 0, caller="ensureNATS")
    rebuilt = ev("reconnect", 10, caller="ensureNATS", reason="rebuilt connection")
    events = [connect, rebuilt, ev("rotate", 20), ev("reconnect", 21, caller="rotate"), swap(30)]
    assert state_since(events, "connected") == rebuilt
    assert state_since(events[:1] + events[2:], "connected") == connect


def test_state_since_disconnected_and_none() -> None:
    events = [ev("daemon_start", 0, reason="pid=1 version=0.3.0"), ev("connect", 1), ev("closed", 5), swap(6)]
    assert state_since(events, "disconnected") == events[2]
    assert state_since(events[:2], "disconnected") == events[0]
    assert state_since([ev("disconnect", 0), swap(1)], "connected") is None
    assert state_since(events, "connecting") is None
    assert state_since(events, None) is None
    assert state_since([], "connected") is None


# --- the log on disk -------------------------------------------------------------------------------


def test_record_stamps_now_keeps_it_in_the_ring_and_appends_a_v1_line(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "nats-events.jsonl", tmp_path / "lc.jsonl", clock=lambda: T0 + 0.123456)
    event = log.record("connect", caller="ensureNATS", nc_id="nc-1-1", jwt_exp=T0 + 300,
                       reason="initial connection")
    log.record("disconnect")
    assert event.at == "2026-05-01T12:00:00.123456Z"
    assert log.snapshot()[0] == event
    assert lines(tmp_path / "nats-events.jsonl") == [
        {"v": 1, "type": "connect", "at": event.at, "caller": "ensureNATS", "nc_id": "nc-1-1",
         "jwt_exp": T0 + 300, "reason": "initial connection"},
        {"v": 1, "type": "disconnect", "at": event.at},
    ]
    assert not (tmp_path / "lc.jsonl").exists()  # only lifecycle events go there


def test_ring_keeps_the_newest_events_in_order(tmp_path: Path) -> None:
    log = make_log(tmp_path, ring_size=4)
    for n in range(6):
        log.record("warn", reason=str(n))
    assert [e.reason for e in log.snapshot()] == ["2", "3", "4", "5"]


def test_files_are_private(tmp_path: Path) -> None:
    log = make_log(tmp_path, rotate_bytes=1)
    log.record("daemon_start", reason="pid=1 version=0.3.0")
    log.record("daemon_stop", reason="graceful")
    for name in ("nats-events.jsonl", "nats-events.jsonl.1", "diagnostics-lifecycle.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_write_failures_are_ignored_and_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog(tmp_path / "gone" / "nats-events.jsonl", tmp_path / "gone" / "lc.jsonl")
    log.record("daemon_start")
    log.record("connect")
    assert [e.type for e in log.snapshot()] == ["daemon_start", "connect"]
    path = log.events_path
    assert count_on_disk(path) == 0 and events_since(path, 0) == [] and tail_events(path, 5) == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_a_failed_rotation_does_not_stop_the_append(tmp_path: Path) -> None:
    (tmp_path / "nats-events.jsonl.2").mkdir()
    (tmp_path / "nats-events.jsonl.2" / "x").touch()
    log = make_log(tmp_path, rotate_bytes=1)
    log.record("connect")
    log.record("disconnect")
    assert [e.type for e in tail_events(log.events_path, 5)] == ["connect", "disconnect"]


def test_rotation_at_the_threshold_keeps_two_generations(tmp_path: Path) -> None:
    active = tmp_path / "nats-events.jsonl"
    log = make_log(tmp_path, rotate_bytes=200)
    line_len = len(log.record("warn", reason="0" * 40).to_line())
    per_file = -(-200 // line_len)  # appends until the file reaches the threshold
    for n in range(1, per_file):
        log.record("warn", reason=f"{n:040d}")
    assert active.stat().st_size >= 200 and not (tmp_path / "nats-events.jsonl.1").exists()
    log.record("warn", reason=f"{per_file:040d}")  # rotates first, then appends
    assert len(lines(active)) == 1 and len(lines(tmp_path / "nats-events.jsonl.1")) == per_file
    for n in range(per_file + 1, 5 * per_file):
        log.record("warn", reason=f"{n:040d}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "nats-events.jsonl", "nats-events.jsonl.1", "nats-events.jsonl.2"
    ]
    kept = [int(str(e.reason)) for e in events_since(log.events_path, 0)]
    assert kept == list(range(2 * per_file, 5 * per_file))
    assert all(line["v"] == 1 for p in tmp_path.iterdir() for line in lines(p))


def test_readers_skip_bad_lines(tmp_path: Path) -> None:
    active = tmp_path / "nats-events.jsonl"
    write_lines(
        active,
        record_json("connect", 0),
        b"not json",
        b"[1, 2]",
        b"",
        {"v": 2, "type": "swap", "at": at(1)},
        {"type": "swap", "at": at(1)},
        {"v": 1, "at": at(1)},
        {"v": 1, "type": "swap"},
        b'{"v":1,"type":"warn","at":"' + at(2).encode() + b'","reason":"' + b"x" * (1 << 20) + b'"}',
        record_json("disconnect", 3, nc_id="nc-1-1"),
        b'{"v":1,"type":"trunc',
    )
    log = make_log(tmp_path)
    assert [e.type for e in events_since(log.events_path, 0)] == ["connect", "disconnect"]
    assert [e.type for e in tail_events(log.events_path, 10)] == ["connect", "disconnect"]
    assert count_on_disk(log.events_path) == 2


def test_a_line_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    head = b'{"v":1,"type":"warn","at":"' + at(0).encode() + b'","reason":"'
    padded = head + b"x" * ((1 << 20) - len(head) - 2) + b'"}'
    assert len(padded) == 1 << 20
    write_lines(tmp_path / "nats-events.jsonl", padded, padded + b" ")
    log = make_log(tmp_path)
    assert count_on_disk(log.events_path) == 1 and len(tail_events(log.events_path, 5)) == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=999).map(lambda n: orjson.dumps(record_json("warn", n))),
            st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
            st.integers(min_value=40, max_value=120).map(lambda n: b"{" + b" " * n + b"}"),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_tail_reads_backwards_what_a_forward_scan_reads(
    tmp_path_factory: pytest.TempPathFactory, raw: list[bytes], final_newline: bool
) -> None:
    # Small caps so that lines straddle read blocks and some exceed the line cap.
    home = tmp_path_factory.mktemp("tail")
    (home / "nats-events.jsonl").write_bytes(b"\n".join(raw) + (b"\n" if final_newline else b""))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eventlog, "LINE_CAP", 90)
        mp.setattr(eventlog, "_READ_BLOCK", 16)
        log = make_log(home)
        forward = events_since(log.events_path, 0)
        assert tail_events(log.events_path, len(forward) + 1) == forward
        assert tail_events(log.events_path, 3) == forward[-3:]
        assert count_on_disk(log.events_path) == len(forward)


def test_since_scans_generations_in_file_order(tmp_path: Path) -> None:
    active = tmp_path / "nats-events.jsonl"
    write_lines(tmp_path / "nats-events.jsonl.2", record_json("connect", 0), record_json("swap", 10))
    write_lines(tmp_path / "nats-events.jsonl.1", record_json("disconnect", 20), record_json("warn", 5))
    write_lines(active, record_json("reconnect", 30), record_json("closed", 10))
    log = make_log(tmp_path)
    assert [e.type for e in events_since(log.events_path, T0 + 10)] == ["swap", "disconnect", "reconnect", "closed"]
    assert [e.type for e in events_since(log.events_path, 0)] == [
        "connect", "swap", "disconnect", "warn", "reconnect", "closed"]
    assert count_on_disk(log.events_path) == 2
    assert [e.type for e in tail_events(log.events_path, 1)] == ["closed"]


def test_lifecycle_log_keeps_the_newest_32_lines(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    for n in range(40):
        log.record("daemon_start", reason=f"pid={n} version=0.3.0")
        log.record("connect")
    log.record("daemon_stop", reason="graceful")
    kept = lines(tmp_path / "diagnostics-lifecycle.jsonl")
    assert len(kept) == 32
    assert [k["reason"] for k in kept] == [f"pid={n} version=0.3.0" for n in range(9, 40)] + ["graceful"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diagnostics-lifecycle.jsonl", "nats-events.jsonl"]


def test_reseed_after_restart_shows_earlier_events_once_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    first = make_log(tmp_path, clock)
    first.reseed()
    first.record("daemon_start", reason="pid=1 version=0.3.0")
    first.record("connect", caller="ensureNATS", nc_id="nc-1-1", reason="initial connection")
    first.record("disconnect", caller="nats-client", nc_id="nc-1-1")
    first.record("daemon_stop", reason="graceful")
    before = first.snapshot()

    second = make_log(tmp_path, clock)
    second.reseed()
    assert second.snapshot() == before
    second.record("daemon_start", reason="pid=2 version=0.3.0")
    third = make_log(tmp_path, clock)
    third.reseed()
    assert [e.reason for e in third.snapshot()] == [e.reason for e in before] + ["pid=2 version=0.3.0"]


def test_reseed_merges_old_lifecycle_events_and_drops_duplicates(tmp_path: Path) -> None:
    # The lifecycle log remembers a start whose event line was rotated away, and one that is in
    # both files, written with another offset but the same instant.
    write_lines(
        tmp_path / "diagnostics-lifecycle.jsonl",
        record_json("daemon_start", -100, reason="pid=1"),
        {"v": 1, "type": "daemon_start", "at": "2026-05-01T14:00:00.000000000+02:00", "reason": "pid=2"},
        b"garbage",
    )
    write_lines(
        tmp_path / "nats-events.jsonl",
        record_json("daemon_start", 0, reason="pid=2"),
        record_json("connect", 1),
        record_json("daemon_start", 0, reason="pid=3"),  # same instant, other reason: kept
    )
    log = make_log(tmp_path)
    log.reseed()
    assert [(e.type, e.reason) for e in log.snapshot()] == [
        ("daemon_start", "pid=1"), ("daemon_start", "pid=2"), ("daemon_start", "pid=3"), ("connect", "")
    ]


def test_reseed_fills_at_most_the_ring_from_the_last_1024_lines(tmp_path: Path) -> None:
    write_lines(tmp_path / "nats-events.jsonl", *(record_json("warn", n, reason=str(n)) for n in range(1100)))
    log = make_log(tmp_path)
    log.reseed()
    assert [e.reason for e in log.snapshot()] == [str(n) for n in range(1100 - 256, 1100)]
    small = make_log(tmp_path, ring_size=2000)
    small.reseed()
    assert [e.reason for e in small.snapshot()] == [str(n) for n in range(1100 - 1024, 1100)]
