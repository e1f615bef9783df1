"""``ppz pipe create|set|destroy`` (spec/cli.md §2.13) against a fake daemon."""

from __future__ import annotations

import pytest

from commands.fakedaemon import (
    PIPE_REPLY,
    FakeDaemon,
    ppz,
)


def test_pipe_create_with_hyphen_and_underscore_flags(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("PipeCreate", PIPE_REPLY)
    r = ppz(capsys, "pipe", "create", "bob.notes", "--ttl", "24h", "--max-msgs", "5000", "--max_bytes=-1")
    assert (r.code, r.out) == (0, "created pipe=bob.notes retention=ttl=24h0m0s,msgs=5000,bytes=16777216\n")
    assert fake.params("PipeCreate") == [{"handle": "bob", "name": "notes", "ttl_seconds": 86400, "max_msgs": 5000,
                                          "max_bytes": -1, "session": "s1"}]
    ppz(capsys, "pipe", "create", "room", "--ttl=0")
    assert fake.params("PipeCreate")[1] == {"handle": "", "name": "room", "ttl_seconds": 0, "session": "s1"}


def test_pipe_set_and_destroy(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("PipeSet", {**PIPE_REPLY, "manifold": "team-a"})
    fake.on("PipeDestroy", {"handle": "", "name": "room", "manifold": "team-a"})
    fake.on("SourceDestroy", {"handle": "bob"})
    r = ppz(capsys, "pipe", "set", "bob.notes", "--max-msgs", "5000")
    assert r.out == "updated pipe=team-a.bob.notes retention=ttl=24h0m0s,msgs=5000,bytes=16777216\n"
    assert fake.params("PipeSet") == [{"handle": "bob", "name": "notes", "max_msgs": 5000, "session": "s1"}]
    assert ppz(capsys, "pipe", "destroy", "room").out == "destroyed pipe=team-a.room\n"
    assert ppz(capsys, "pipe", "destroy", "bob", "--recursive").out == "destroyed source=bob\n"
    assert fake.requests[1:] == [("PipeDestroy", {"handle": "", "name": "room", "session": "s1"}),
                                 ("SourceDestroy", {"handle": "bob", "session": "s1"})]


def test_pipe_set_needs_a_flag(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    r = ppz(capsys, "pipe", "set", "bob.notes")
    assert (r.code, r.out, fake.requests) == (20, "", [])
    assert r.err == "error: E_INVALID_PIPE: pipe set: name at least one of --ttl, --max-msgs, --max-bytes\n"


@pytest.mark.parametrize("args", [["--ttl", "forever"], ["--max-msgs", "-2"], ["--max-bytes", "1.5"], ["--ttl"]])
def test_pipe_flag_errors_are_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                           args: list[str]) -> None:
    assert ppz(capsys, "pipe", "create", "bob.notes", *args).code == 2
    assert fake.requests == []
