"""Names, subjects, stream names and cursor keys (spec/nats.md §1–3, §8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz import names

ACCT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.mark.parametrize(
    "name",
    ["a", "7", "a" * 32, "a" + "-" * 30 + "b", "agent-b", "0abc9", "a-b-c", "x1"],
)
def test_valid_names(name: str) -> None:
    assert names.valid_name(name)
    assert names.valid_pipe(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 33,
        "-a",
        "a-",
        "-",
        "Bob",
        "BOB",
        "a_b",
        "a.b",
        "_presence",
        "a b",
        " a",
        "a\n",
        "é",
        "a/b",
        "a*",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not names.valid_name(name)
    assert not names.valid_pipe(name)
    assert not names.valid_handle(name)


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True))
def test_regex_accepts_everything_it_describes(name: str) -> None:
    assert names.valid_name(name)


@given(st.text(alphabet="abc-", min_size=1, max_size=40))
def test_length_and_hyphen_rules(name: str) -> None:
    expected = len(name) <= 32 and not name.startswith("-") and not name.endswith("-")
    assert names.valid_name(name) is expected


def test_non_strings_are_invalid() -> None:
    assert not names.valid_name(None)  # type: ignore[arg-type]
    assert not names.valid_name(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("handle", ["broadcast", "inbox", "stdin", "stdout", "stdctrl", "system", "db"])
def test_reserved_handles(handle: str) -> None:
    assert names.valid_name(handle)
    assert names.valid_pipe(handle)
    assert not names.valid_handle(handle)


@pytest.mark.parametrize("handle", ["heartbeat", "alice", "inboxes", "my-inbox", "dbx"])
def test_unreserved_handles(handle: str) -> None:
    assert names.valid_handle(handle)


def test_reserved_lists_match_the_spec() -> None:
    assert names.RESERVED_HANDLES == {"broadcast", "inbox", "stdin", "stdout", "stdctrl", "system", "db"}
    assert names.RESERVED_PIPES_FOR_CREATE == {"system", "db", "inbox", "heartbeat"}
    assert names.AUTO_PROVISIONED == {
        "broadcast",
        "inbox",
        "stdin",
        "stdout",
        "stdctrl",
        "system",
        "heartbeat",
    }


def test_auto_pipes_by_kind() -> None:
    assert names.auto_pipes("message") == ("inbox",)
    assert names.auto_pipes("pty") == ("heartbeat", "inbox", "stdctrl", "stdin", "stdout", "system")
    assert names.auto_pipes("robot") == ()
    assert list(names.auto_pipes("pty")) == sorted(names.auto_pipes("pty"))


@pytest.mark.parametrize(
    ("manifold", "bad"),
    [
        ("", None),
        ("team-a", None),
        ("team-a.ops", None),
        ("a.b.c.d", None),
        ("team-a.inbox", "inbox"),
        ("db", "db"),
        ("Team", "Team"),
        ("a..b", ""),
        (".a", ""),
        ("a.", ""),
        ("ok.x_y.z", "x_y"),
        ("ok." + "a" * 33, "a" * 33),
        ("-a.b", "-a"),
        ("stdout.stdin", "stdout"),
    ],
)
def test_invalid_manifold_segment(manifold: str, bad: str | None) -> None:
    assert names.invalid_manifold_segment(manifold) == bad


def test_orgshort() -> None:
    assert names.orgshort(ACCT) == "0b1c2d3e"
    assert names.orgshort("0b1c-2d3e-4f50") == "0b1c2d3e"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ACCT, True),
        (ACCT.upper(), True),
        ("not-a-uuid", False),
        ("", False),
        (ACCT[:-1], False),
    ],
)
def test_is_uuid(value: str, expected: bool) -> None:
    assert names.is_uuid(value) is expected


@pytest.mark.parametrize(
    ("manifold", "handle", "pipe", "subject", "stream"),
    [
        # The spec's table (nats.md §3) ...
        ("", "alice", "inbox", f"{ACCT}.alice.inbox", "pipe_0b1c2d3e_alice_inbox"),
        ("team-a", "bob", "stdout", f"{ACCT}.team-a.bob.stdout", "pipe_0b1c2d3e_team-a_bob_stdout"),
        ("team-a.ops", "", "room", f"{ACCT}.team-a.ops.room", "pipe_0b1c2d3e_team-a_ops_room"),
        ("team-a", "bob", "heartbeat", f"{ACCT}._presence.team-a.bob", "presence_0b1c2d3e_team-a_bob"),
        # ... and the remaining shapes of nats.md §2.
        ("", "", "room", f"{ACCT}.room", "pipe_0b1c2d3e_room"),
        ("", "bob", "heartbeat", f"{ACCT}._presence.bob", "presence_0b1c2d3e_bob"),
        ("a.b.c", "bob", "notes", f"{ACCT}.a.b.c.bob.notes", "pipe_0b1c2d3e_a_b_c_bob_notes"),
        # An uncollared pipe named heartbeat is an ordinary pipe, not presence.
        ("", "", "heartbeat", f"{ACCT}.heartbeat", "pipe_0b1c2d3e_heartbeat"),
    ],
)
def test_subject_and_stream_name(manifold: str, handle: str, pipe: str, subject: str, stream: str) -> None:
    assert names.subject(ACCT, manifold, handle, pipe) == subject
    assert names.stream_name(ACCT, manifold, handle, pipe) == stream
    assert stream.startswith(names.STREAM_PREFIXES)


def test_wildcards() -> None:
    assert names.presence_wildcard(ACCT) == f"{ACCT}._presence.>"
    assert names.account_wildcard(ACCT) == f"{ACCT}.>"


@pytest.mark.parametrize(
    ("manifold", "handle", "pipe", "key"),
    [
        ("", "alice", "inbox", f"{ACCT}.alice.inbox"),
        # Collared keys leave the manifold out so they stay stable.
        ("team-a", "bob", "stdout", f"{ACCT}.bob.stdout"),
        # The heartbeat key is the collared key, not the presence subject.
        ("team-a", "bob", "heartbeat", f"{ACCT}.bob.heartbeat"),
        ("", "", "room", f"uncollared:{ACCT}.room"),
        ("team-a.ops", "", "room", f"uncollared:{ACCT}.team-a.ops.room"),
    ],
)
def test_cursor_key(manifold: str, handle: str, pipe: str, key: str) -> None:
    assert names.cursor_key(ACCT, manifold, handle, pipe) == key


def test_join_path() -> None:
    assert names.join_path("", "room") == "room"
    assert names.join_path("team-a.ops", "room") == "team-a.ops.room"
