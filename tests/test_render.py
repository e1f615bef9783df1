"""Pure renderings of the CLI (spec/cli.md §1.5, §1.6, §2.5–2.13), globs and presence."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ppz import globs, presence, render
from ppz.render import AMBER, BOLD_CYAN, DIM, GREEN, RED, RESET

NOW = 1_777_636_800.0  # 2026-05-01T12:00:00Z


def iso(seconds_before_now: float) -> str:
    t = time.gmtime(NOW - seconds_before_now)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


def clock(value: str) -> str:
    from ppz.timestamps import epoch_seconds

    return time.strftime("%H:%M:%S", time.localtime(epoch_seconds(value)))


# --- globs (cli.md §1.5, behaviours 57) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "want"),
    [
        ("apple", "apple.stdout", False),
        ("stdout", "apple.stdout", False),
        ("*.stdout", "apple.stdout", True),
        ("%.stdout", "apple.stdout", True),
        ("%stdout", "apple.stdout", True),
        ("agent-*", "agent-b.inbox", True),
        ("team-*.chat", "team-a.chat", True),
        ("*", "a.b.c", True),
        ("%", "", True),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "a.c", True),
        ("[ab]x", "bx", True),
        ("[ab]x", "cx", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("[^a-c]x", "dx", True),
        ("[!a]x", "bx", True),
        ("[]]x", "]x", True),
        ("[x", "[x", True),
        ("a.b", "aXb", False),
        ("a+b", "a+b", True),
        ("(a)", "(a)", True),
        ("[z-a]", "m", False),
        ("[&&]x", "&x", True),
        ("x\\y", "x\\y", True),
        ("bob.inbox", "bob.inbox", True),
        ("*.inbox", "bob.inbox\nx", False),
        ("*", "line\nbreak", True),
    ],
)
def test_glob_match(pattern: str, name: str, want: bool) -> None:
    assert globs.glob_match(pattern, name) is want


def test_is_literal() -> None:
    assert globs.is_literal("bob.inbox")
    assert globs.is_literal("")
    for p in ("bob*", "b?b", "[ab]", "bob%"):
        assert not globs.is_literal(p)


def test_match_any() -> None:
    assert globs.match_any([], "anything")
    assert globs.match_any(["x", "b*"], "bob")
    assert not globs.match_any(["x"], "bob")


# --- presence (daemon.md §7.4) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "interval", "want"),
    [
        (-5, 60, "online"),
        (0, 60, "online"),
        (89.9, 60, "online"),
        (90, 60, "stale"),
        (179.9, 60, "stale"),
        (180, 60, "offline"),
        (14, 10, "online"),
        (15, 10, "stale"),
        (30, 10, "offline"),
    ],
)
def test_classify(age: float, interval: float, want: str) -> None:
    assert presence.classify(iso(age) if age == int(age) else NOW - age, interval, NOW) == want


def test_classify_never_seen_or_unparseable_is_offline() -> None:
    assert presence.classify("", 60, NOW) == "offline"
    assert presence.classify(None, 60, NOW) == "offline"
    assert presence.classify("yesterday", 60, NOW) == "offline"


@pytest.mark.parametrize(
    ("payload", "want"),
    [
        ('{"interval_sec": 10}', 10.0),
        ('{"interval_sec": 0}', 60.0),
        ('{"interval_sec": -3}', 60.0),
        ('{"interval_sec": "10"}', 60.0),
        ('{"interval_sec": true}', 60.0),
        ("{}", 60.0),
        ("not json", 60.0),
        ("[1]", 60.0),
    ],
)
def test_beat_interval(payload: str, want: float) -> None:
    assert presence.beat_interval(presence.heartbeat_payload(payload)) == want


def test_heartbeat_payload() -> None:
    assert presence.heartbeat_payload('{"a": 1}') == {"a": 1}
    assert presence.heartbeat_payload("[1]") is None
    assert presence.heartbeat_payload("x") is None
    assert presence.heartbeat_payload(None) is None
    assert presence.heartbeat_payload({"a": 1}) == {"a": 1}


# --- tables (cli.md §1.6) ----------------------------------------------------------------------


def test_table_pads_all_but_the_last_column_and_strips_trailing_spaces() -> None:
    rows = [["A", "BB", "C"], ["aaaa", "b", ""], ["a", "bbbbb", "last"]]
    assert render.table(rows) == [
        "A     BB     C",
        "aaaa  b",
        "a     bbbbb  last",
    ]


def test_table_measures_width_without_ansi() -> None:
    coloured = f"{GREEN}online{RESET}"
    lines = render.table([["STATUS", "X"], [coloured, "y"], ["stale", "z"]])
    assert lines[1] == f"{coloured}  y"
    assert lines[2] == "stale   z"
    assert render.visible_len(coloured) == 6


def test_table_empty() -> None:
    assert render.table([]) == []


# --- send / read (cli.md §2.7, §2.8) ---------------------------------------------------------


def test_sent_line() -> None:
    reply = {"id": "3f0c1111-2222-4333-8444-a6b7c8d9", "subject": "0b1c2d3e-uuid.bob.inbox", "bytes": 2}
    assert render.sent_line(reply, False) == "sent id=a6b7c8d9 to=bob.inbox bytes=2"
    assert render.sent_line(reply, True) == "sent id=a6b7c8d9 to=bob.inbox bytes=2 ack=requested"
    assert render.sent_line({"id": "x", "subject": "acct.team-a.room", "bytes": 0}, False) == (
        "sent id=x to=team-a.room bytes=0"
    )


MSG: dict[str, Any] = {
    "id": "3f0c-uuid", "sender": "alice", "subject": "", "payload": "hi", "created_at": "2026-05-01T12:00:00Z",
    "in_reply_to": "", "ack_requested": False, "priority": 0,
}


def test_render_message_modes() -> None:
    assert render.render_message(MSG, "json", True) == json.dumps(MSG, separators=(",", ":")) + "\n"
    assert render.render_message({**MSG, "payload": "a\nb"}, "raw", True) == "a\nb"
    assert render.render_message(MSG, "bare", True) == "hi\n"
    assert render.render_message(MSG, "", False) == "hi\n"
    assert render.render_message(MSG, "", True) == f"{clock(MSG['created_at'])}  alice         hi\n"


def test_render_message_json_keeps_non_ascii() -> None:
    assert "héllo" in render.render_message({**MSG, "payload": "héllo"}, "json", False)


def test_tabular_badges_subject_and_continuation_lines() -> None:
    t = clock(MSG["created_at"])
    assert render.tabular_message({**MSG, "priority": 1}) == f"{t}  alice         P1 hi\n"
    assert render.tabular_message({**MSG, "priority": 2}) == f"{t}  alice         hi\n"
    assert render.tabular_message({**MSG, "priority": 3, "subject": "s"}) == f"{t}  alice         P3 [s] hi\n"
    body = render.tabular_message({**MSG, "payload": "one\ntwo\n\nthree"})
    indent = " " * (8 + 2 + 12 + 2)
    assert body == f"{t}  alice         one\n{indent}two\n\n{indent}three\n"


def test_tabular_empty_and_long_senders() -> None:
    t = clock(MSG["created_at"])
    assert render.tabular_message({**MSG, "sender": ""}) == f"{t}  -             hi\n"
    long = "a-very-long-sender-name"
    text = render.tabular_message({**MSG, "sender": long, "payload": "x\ny"})
    assert text == f"{t}  {long}  x\n{' ' * (8 + 2 + len(long) + 2)}y\n"


def test_tabular_ack() -> None:
    msg = {**MSG, "subject": "ack:read", "in_reply_to": "3f0c1111-2222-4333-8444-a6b7c8d9", "payload": "ignored"}
    assert render.tabular_message(msg) == f"{clock(MSG['created_at'])}  alice         ack:read → a6b7c8d9\n"


def test_tabular_colour_and_bad_time() -> None:
    text = render.tabular_message({**MSG, "created_at": "garbage"}, colour=True)
    assert text == f"{DIM}--:--:--{RESET}  {BOLD_CYAN}alice{RESET}         hi\n"


def test_is_tabular_and_trailer() -> None:
    assert render.is_tabular("inbox", False)
    assert render.is_tabular("broadcast", False)
    assert render.is_tabular("", True)
    assert not render.is_tabular("notes", False)
    assert render.more_unread_line(17) == "(17 more unread - run again to continue)"


# --- ls (cli.md §2.10) -------------------------------------------------------------------------

LIST_REPLY = {
    "sources": [
        {"handle": "zed", "manifold": "team-a", "kind": "message", "created_by": "bar", "pipes": ["inbox"],
         "pipe_infos": [{"pipe": "inbox", "total": 0, "unread": 0, "created_by": "bar"}]},
        {"handle": "alice", "kind": "pty", "created_by": "foo", "pipes": ["inbox", "notes"],
         "pipe_infos": [
             {"pipe": "notes", "total": 0, "unread": 0},
             {"pipe": "inbox", "total": 3, "unread": 1, "last_seq": 3, "last_at": iso(120),
              "preview": "hello there", "payload": "hello there", "created_by": "foo"},
         ]},
    ],
    "uncollared_pipes": [{"manifold": "team-a", "name": "room", "info": {"pipe": "room", "total": 0, "unread": 0,
                                                                         "created_by": "bar"}}],
}


def test_render_ls() -> None:
    assert render.render_ls(LIST_REPLY, now=NOW) == [
        "NAMESPACE  PIPE         UNREAD  BUFFERED  LAST           PAYLOAD      CREATOR",
        "-          alice.inbox  1       3         2 minutes ago  hello there  foo",
        "-          alice.notes  0       0         -              -            -",
        "team-a     room         0       0         -              -            bar",
        "team-a     zed.inbox    0       0         -              -            bar",
    ]


def test_render_ls_empty_prints_the_header() -> None:
    assert render.render_ls({"sources": [], "uncollared_pipes": []}, now=NOW) == [
        "NAMESPACE  PIPE  UNREAD  BUFFERED  LAST  PAYLOAD  CREATOR"
    ]


def test_render_ls_long() -> None:
    reply = {"sources": [{"handle": "bob", "pipe_infos": [
        {"pipe": "inbox", "total": 1, "unread": 0, "ttl_seconds": 86400, "max_msgs": 5000, "max_bytes": -1},
        {"pipe": "notes", "total": 0, "unread": 0, "ttl_seconds": 0, "max_msgs": -1, "max_bytes": 16777216},
    ]}], "uncollared_pipes": []}
    assert render.render_ls(reply, long=True, now=NOW) == [
        "NAMESPACE  PIPE       UNREAD  BUFFERED  LAST  TTL        MAX_MSGS   MAX_BYTES  PAYLOAD  CREATOR",
        "-          bob.inbox  0       1         -     24h0m0s    5000       unlimited  -        -",
        "-          bob.notes  0       0         -     unlimited  unlimited  16777216   -        -",
    ]


def test_ls_warnings_for_literal_patterns_that_match_nothing() -> None:
    pats = ["alice.inbox", "room", "team-a.room", "nobody", "nobody%", "alice"]
    assert render.ls_warnings(pats, LIST_REPLY) == [
        'ppz ls: no pipe matches "nobody" — use a glob like "nobody%" to match speculatively',
        'ppz ls: no pipe matches "alice" — use a glob like "alice%" to match speculatively',
    ]


# --- pipes (cli.md §2.13) --------------------------------------------------------------------


def test_pipe_path_and_retention() -> None:
    reply = {"handle": "bob", "manifold": "team-a", "name": "notes", "ttl_seconds": 86400, "max_msgs": 5000,
             "max_bytes": 16777216}
    assert render.pipe_path(reply) == "team-a.bob.notes"
    assert render.pipe_path({"handle": "", "name": "room"}) == "room"
    assert render.pipe_path({"name": "room", "manifold": "x.y"}) == "x.y.room"
    assert render.retention_text(reply) == "retention=ttl=24h0m0s,msgs=5000,bytes=16777216"
    assert render.retention_text({"ttl_seconds": 0, "max_msgs": -1, "max_bytes": -1}) == (
        "retention=ttl=0s,msgs=-1,bytes=-1"
    )
    assert render.qualified("", "bob") == "bob"
    assert render.qualified("m", "bob") == "m.bob"


# --- who (cli.md §2.6) -----------------------------------------------------------------------


def beat(**over: object) -> str:
    payload = {"ts": iso(0), "seq": 1, "harness": "claude", "harness_source": "env", "agent_state": "working",
               "child_pid": 0, "model": "opus-4", "hostname": "build1", "os": "linux", "arch": "amd64",
               "pid": 42, "ppz_version": "0.3.0", "started_at": iso(7200), "interval_sec": 60}
    payload.update(over)
    return json.dumps(payload)


WHO_REPLY = {"entries": [
    {"handle": "agent-b", "owner": "foo", "payload": beat(), "arrived_at": iso(10)},
    {"handle": "bob", "payload": "not json", "arrived_at": iso(1000)},
    {"handle": "carol", "payload": beat(agent_state="", os="darwin", arch="", harness="codex"),
     "arrived_at": iso(100)},
    {"handle": "dave", "payload": beat(), "arrived_at": iso(500)},
]}


def test_who_entries_and_filters() -> None:
    entries = render.who_entries(WHO_REPLY, NOW)
    assert [(e["handle"], e["status"]) for e in entries] == [
        ("agent-b", "online"), ("bob", "offline"), ("carol", "stale"), ("dave", "offline")]
    assert entries[1]["heartbeat"] is None and entries[1]["owner"] == ""
    assert [e["handle"] for e in render.filter_who(entries, ["online", "stale"])] == ["agent-b", "carol"]
    assert [e["handle"] for e in render.filter_who(entries, [], harness="claude")] == ["agent-b", "dave"]
    assert [e["handle"] for e in render.filter_who(entries, ["offline"], harness="claude")] == ["dave"]
    assert [e["handle"] for e in render.filter_who(entries, [], owner="foo")] == ["agent-b"]
    assert render.filter_who(entries, [], owner="fo") == []


def test_render_who() -> None:
    entries = render.who_entries(WHO_REPLY, NOW)
    assert render.render_who(entries, now=NOW) == [
        "HANDLE   STATUS          HARNESS  MODEL   HOST    OS/ARCH      CREATED      OWNER",
        "agent-b  online|working  claude   opus-4  build1  linux/amd64  2 hours ago  foo",
        "bob      offline         -        -       -       -            -            -",
        "carol    stale           codex    opus-4  build1  darwin       2 hours ago  -",
        "dave     offline         claude   opus-4  build1  linux/amd64  2 hours ago  -",
    ]


def test_render_who_colours_the_liveness_word_after_alignment() -> None:
    lines = render.render_who(render.who_entries(WHO_REPLY, NOW), colour=True, now=NOW)
    assert lines[1].startswith(f"agent-b  {GREEN}online{RESET}|working  claude")
    assert lines[2].startswith(f"bob      {RED}offline{RESET}         -")
    assert lines[3].startswith(f"carol    {AMBER}stale{RESET}           codex")


# --- diagnostics (cli.md §2.5) -------------------------------------------------------------------


def diag_reply(**over: object) -> dict[str, object]:
    reply: dict[str, object] = {
        "summary": {"state": "connected", "state_since": iso(302), "url": "nats://127.0.0.1:4222",
                    "refresh_last_at": iso(125), "refresh_next_due_at": iso(-145)},
        "patterns": [{"name": "burst-swap-storm", "at": iso(420),
                      "detail": "3 swaps in 500ms — concurrent NATS connection mutation"}],
        "nats_state": "connected",
        "nats_drops_last_hour": 0,
        "nats_events": [
            {"v": 1, "type": "connect", "at": "2026-05-01T12:03:04.123456Z", "caller": "ensureNATS",
             "nc_id": "nc-4242-1", "jwt_exp": 1, "reason": "initial connection"},
            {"v": 1, "type": "disconnect", "at": "2026-05-01T12:04:00Z", "caller": "nats-client",
             "nc_id": "nc-4242-1", "reason": ""},
        ],
        "on_disk_count": 42,
    }
    reply.update(over)
    return reply


def test_render_diagnostics() -> None:
    lines = render.render_diagnostics(diag_reply(), now=NOW)
    assert lines == [
        f"nats: connected  (since {clock(iso(302))}, 5m2s ago)  drops_last_hour=0",
        f"refresh: last {clock(iso(125))} (2m5s ago), next due in 2m25s",
        "url: nats://127.0.0.1:4222",
        "",
        f"⚠ burst-swap-storm  {clock(iso(420))}",
        "    3 swaps in 500ms — concurrent NATS connection mutation",
        "",
        "Recent events (2 shown, scope=ring, 40 older on disk):",
        'connect      2026-05-01T12:03:04.123Z caller=ensureNATS                   nc=nc-4242-1 '
        'reason="initial connection"',
        'disconnect   2026-05-01T12:04:00.000Z caller=nats-client                  nc=nc-4242-1 reason=""',
        "",
        "→ Full history:  ppz diagnostics --since=1h",
        "→ Bug report:    ppz diagnostics --bundle  (writes ~/ppz-diag-<ts>.tgz)",
    ]


def test_render_diagnostics_bare() -> None:
    reply = {"summary": {}, "patterns": [], "nats_drops_last_hour": 3, "nats_events": [], "on_disk_count": 0}
    assert render.render_diagnostics(reply, now=NOW) == [
        "nats: unknown  (—)  drops_last_hour=3",
        "refresh: —",
        "url: —",
        "",
        "Recent events: (none)",
        "",
        *render.DIAG_FOOTER,
    ]


def test_render_diagnostics_past_due_and_scopes() -> None:
    events = [{"type": "x", "at": iso(i), "caller": "", "nc_id": "", "reason": 'a"b'} for i in range(30, 0, -1)]
    reply = diag_reply(nats_events=events, on_disk_count=25,
                       summary={"refresh_last_at": iso(600), "refresh_next_due_at": iso(30)})
    lines = render.render_diagnostics(reply, now=NOW)
    assert lines[1] == f"refresh: last {clock(iso(600))} (10m0s ago), next due in 0s"
    assert "Recent events (20 shown, scope=ring, 5 older on disk):" in lines
    assert lines[lines.index("Recent events (20 shown, scope=ring, 5 older on disk):") + 1].startswith(
        f"x            {iso(20)[:-1]}.000Z caller=?                            nc=— reason=\"a\\\"b\"")
    lines = render.render_diagnostics(reply, since="1h", now=NOW)
    assert "Recent events (30 shown, scope=--since=1h, 0 older on disk):" in lines


def test_utc_millis_and_local_clock() -> None:
    assert render.utc_millis("2026-05-01T14:03:04.987654+02:00") == "2026-05-01T12:03:04.987Z"
    assert render.utc_millis("nope") == "nope"
    assert render.local_clock("nope") == "--:--:--"
    assert render.local_clock(None) == "--:--:--"
