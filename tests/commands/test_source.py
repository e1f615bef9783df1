"""``ppz source create|destroy`` (spec/cli.md §2.11), globs included, against a fake daemon."""

from __future__ import annotations

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    ppz,
)
from ppz import errors


def test_source_create(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Create", {"handle": "bob", "subject": "acct.bob", "pipes": ["inbox"]})
    r = ppz(capsys, "source", "create", "bob")
    assert (r.code, r.out) == (0, "created handle=bob subject=acct.bob\n")
    assert fake.requests == [("Create", {"handle": "bob", "kind": "message", "session": "s1"})]
    fake.script["Create"] = [errors.PpzError(errors.E_SOURCE_TAKEN, "source 'bob' already exists in this account")]
    r = ppz(capsys, "source", "create", "bob")
    assert (r.code, r.out) == (13, "")


def test_source_destroy_literal(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("SourceDestroy", {"handle": "bob", "manifold": "team-a"})
    fake.on("PipeDestroy", {"handle": "bob", "name": "notes"})
    assert ppz(capsys, "source", "destroy", "bob").out == "destroyed source=team-a.bob\n"
    assert ppz(capsys, "source", "destroy", "bob.notes").out == "destroyed pipe=bob.notes\n"
    assert fake.requests == [("SourceDestroy", {"handle": "bob", "session": "s1"}),
                             ("PipeDestroy", {"handle": "bob", "name": "notes", "session": "s1"})]


GLOB_LIST = {"sources": [
    {"handle": "agent-b", "kind": "pty", "pipes": ["heartbeat", "inbox", "notes", "stdctrl", "stdin", "stdout",
                                                  "system"], "pipe_infos": []},
    {"handle": "agent-a", "kind": "message", "pipes": ["inbox", "logs"], "pipe_infos": []},
    {"handle": "bob", "kind": "message", "pipes": ["inbox"], "pipe_infos": []},
], "uncollared_pipes": [{"name": "agent-room", "info": {}}]}


def test_source_destroy_glob_of_sources(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    fake.on("SourceDestroy", lambda p: {"handle": p["handle"]})
    r = ppz(capsys, "source", "destroy", "agent-%")
    assert (r.code, r.out) == (0, "destroyed source=agent-a\ndestroyed source=agent-b\n")
    assert fake.requests[0] == ("List", {})
    assert [p["handle"] for p in fake.params("SourceDestroy")] == ["agent-a", "agent-b"]


def test_source_destroy_glob_of_pipes_skips_auto_pipes(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    fake.on("PipeDestroy", lambda p: {"handle": p["handle"], "name": p["name"], "manifold": "m"})
    r = ppz(capsys, "source", "destroy", "agent-?.*")
    assert (r.code, r.out) == (0, "destroyed pipe=m.agent-a.logs\ndestroyed pipe=m.agent-b.notes\n")


def test_source_destroy_glob_stops_at_the_first_error(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    fake.on("SourceDestroy", {"handle": "agent-a"}, errors.PpzError(errors.E_INTERNAL, "boom"), {"handle": "bob"})
    r = ppz(capsys, "source", "destroy", "*")
    assert (r.code, r.out, r.err) == (1, "destroyed source=agent-a\n", "error: E_INTERNAL: boom\n")
    assert len(fake.params("SourceDestroy")) == 2


def test_source_destroy_glob_without_match(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    r = ppz(capsys, "source", "destroy", "zz*")
    assert (r.code, r.out, r.err) == (14, "", "error: E_SOURCE_NOT_FOUND: no source matches 'zz*'\n")
    r = ppz(capsys, "source", "destroy", "bob.i%")
    assert (r.code, r.out, r.err) == (22, "", "error: E_PIPE_NOT_FOUND: no pipe matches 'bob.i%'\n")
