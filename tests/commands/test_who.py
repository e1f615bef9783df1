"""``ppz who`` (spec/cli.md §2.6) against a fake daemon."""

from __future__ import annotations

import json

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    ppz,
    who_reply,
)


def test_who(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    reply = who_reply()
    fake.on("Who", reply)
    r = ppz(capsys, "who")
    assert r.code == 0 and fake.requests == [("Who", {})]
    assert r.out.splitlines()[1].split() == ["a", "online|idle", "claude", "m", "h", "linux/arm64", "-", "foo"]
    assert r.out.splitlines()[2].split() == ["b", "stale", "-", "-", "-", "-", "-", "-"]
    r = ppz(capsys, "who", "--json", "--stale")
    assert json.loads(r.out) == [{"handle": "b", "status": "stale", "owner": "",
                                  "arrived_at": reply["entries"][1]["arrived_at"], "heartbeat": None}]
    assert r.out == json.dumps(json.loads(r.out), indent=2) + "\n"
    r = ppz(capsys, "who", "--harness=claude", "--offline", "--online")
    assert [line.split()[0] for line in r.out.splitlines()] == ["HANDLE", "a"]
    r = ppz(capsys, "who", "--owner", "bar")
    assert r.out.splitlines() == [r.out.splitlines()[0]]
