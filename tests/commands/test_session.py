"""``ppz set|get|unset handle`` and ``set|unset namespace`` (spec/cli.md §2.12) against a fake daemon."""

from __future__ import annotations

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    ppz,
)


def test_set_get_unset_handle(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake.on("Switch", {"handle": "bob"})
    fake.on("Disconnect", {})
    fake.on("Status", {"daemon_pid": 1, "logged_in": True, "current": "bob"})
    assert (ppz(capsys, "set", "handle", "bob").out) == "handle=bob\n"
    assert fake.params("Switch") == [{"handle": "bob", "session": "s1"}]
    assert ppz(capsys, "get", "handle").out == "bob\n"
    assert ppz(capsys, "unset", "handle").out == "unset\n"
    assert fake.params("Disconnect") == [{"session": "s1"}]
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "alice")
    warning = "warning: PPZ_CURRENT_HANDLE=alice overrides the current source in this shell\n"
    r = ppz(capsys, "set", "handle", "bob")
    assert (r.out, r.err) == ("handle=bob\n", warning)
    r = ppz(capsys, "get", "handle")
    assert (r.code, r.out, r.err) == (0, "alice\n", warning)
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "bob")
    assert ppz(capsys, "get", "handle").err == ""


def test_get_handle_without_current_prints_nothing_and_exits_1(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Status", {"daemon_pid": 1, "logged_in": True})
    r = ppz(capsys, "get", "handle")
    assert (r.code, r.out, r.err) == (1, "", "")


def test_namespace(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("SetNamespace", {"namespace": "team-a.x"})
    fake.on("UnsetNamespace", {})
    assert ppz(capsys, "set", "namespace", "team-a.x").out == "namespace=team-a.x\n"
    assert ppz(capsys, "unset", "namespace").out == "unset\n"
    assert fake.requests == [("SetNamespace", {"namespace": "team-a.x", "session": "s1"}),
                             ("UnsetNamespace", {"session": "s1"})]


def test_get_handle_without_a_daemon_is_11_even_with_the_env_handle(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # cli.md §1.2: only login, daemon start and daemon restart work without a daemon.
    fake.stop()
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "alice")
    r = ppz(capsys, "get", "handle")
    assert (r.code, r.out) == (11, "")
    assert r.err == "error: E_DAEMON_NOT_RUNNING: daemon not running; run 'ppz daemon start'\n"


def test_get_handle_env_handle_wins_over_a_daemon_without_one(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake.on("Status", {"daemon_pid": 1, "logged_in": True})
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "alice")
    r = ppz(capsys, "get", "handle")
    assert (r.code, r.out, r.err) == (0, "alice\n", "")
    assert fake.params("Status") == [{"session": "s1"}]
