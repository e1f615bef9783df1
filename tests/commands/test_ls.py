"""``ppz ls`` (spec/cli.md §2.10) against a fake daemon."""

from __future__ import annotations

import json

import pytest

from commands.fakedaemon import (
    LIST_REPLY,
    FakeDaemon,
    ppz,
)


def test_ls_table_patterns_and_warnings(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", LIST_REPLY)
    r = ppz(capsys, "ls", "alice.inbox", "ghost", "--long")
    assert r.code == 0
    assert r.out.splitlines()[0].split() == ["NAMESPACE", "PIPE", "UNREAD", "BUFFERED", "LAST", "TTL", "MAX_MSGS",
                                             "MAX_BYTES", "PAYLOAD", "CREATOR"]
    assert r.err == 'ppz ls: no pipe matches "ghost" — use a glob like "ghost%" to match speculatively\n'
    assert fake.params("List") == [{"session": "s1", "patterns": ["alice.inbox", "ghost"], "long": True}]


def test_ls_json(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", LIST_REPLY)
    r = ppz(capsys, "ls", "--json")
    assert (r.code, r.out, r.err) == (0, json.dumps(LIST_REPLY, indent=2) + "\n", "")
    assert fake.params("List") == [{"session": "s1", "patterns": [], "long": False}]


def test_ls_watch_uses_listwatch(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("ListWatch", LIST_REPLY)
    r = ppz(capsys, "ls", "--watch", "al%")
    assert r.code == 0 and "alice.inbox" in r.out and r.err == ""
    assert fake.requests == [("ListWatch", {"session": "s1", "patterns": ["al%"], "long": False})]
