"""``ppz login``, ``logout``, ``status`` and ``daemon start|stop|restart`` (spec/cli.md §2.1–2.4,
spec/daemon.md §1.3): URL normalisation and ensure-running against a fake daemon."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from commands.fakedaemon import FakeDaemon, ppz
from ppz import errors
from ppz.commands import daemon
from ppz.home import Home


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("localhost:8080/", "http://localhost:8080"),
        ("myhost:8080", "http://myhost:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("0.0.0.0", "http://0.0.0.0"),
        ("ppz.example.com", "https://ppz.example.com"),
        ("http://ppz.example.com/", "http://ppz.example.com"),
        ("https://127.0.0.1:8080", "https://127.0.0.1:8080"),
    ],
)
def test_normalise_url(given: str, want: str) -> None:
    assert daemon.normalise_url(given) == want


# --- ensure running (daemon.md §1.3) ----------------------------------------------------------


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Home]:
    """Record the daemons the CLI spawns instead of spawning them."""
    homes: list[Home] = []
    monkeypatch.setattr(daemon, "spawn", homes.append)
    return homes


def held(seconds: float, reply: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A reply the fake daemon sends only after holding it for ``seconds``."""
    def answer(params: dict[str, Any]) -> dict[str, Any]:
        time.sleep(seconds)
        return reply

    return answer


def test_a_status_held_for_the_login_check_is_a_running_daemon(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], spawned: list[Home]) -> None:
    # Status may hold its reply up to 1 s while the login check probes a slow server
    # (ipc.md §7.1): the probe's 2 s deadline covers it, so no second daemon is spawned.
    fake.on("Status", held(1.0, {"daemon_pid": 4242}))
    fake.on("Login", {"url": "http://127.0.0.1:8080", "key_prefix": "abcd1234", "account_id": "acct"})
    r = ppz(capsys, "login", "127.0.0.1:8080", "--apikey", "ppz_abcd1234xyz")
    assert (r.code, r.out) == (0, "logged in url=http://127.0.0.1:8080 key=abcd1234 account=acct\n"), r
    assert spawned == []
    assert fake.requests == [("Status", {}), ("Login", {"url": "http://127.0.0.1:8080", "api_key": "ppz_abcd1234xyz"})]
    assert ppz(capsys, "daemon", "start").out == "daemon already running pid=4242\n"
    assert spawned == []


def test_an_error_reply_is_a_running_daemon(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                            spawned: list[Home]) -> None:
    fake.on("Status", errors.PpzError(errors.E_INTERNAL, "boom"))
    assert ppz(capsys, "daemon", "start").out == "daemon already running pid=0\n"
    assert spawned == []


def test_no_reply_within_the_deadline_spawns_and_polls_until_a_reply(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A Status held past the probe's deadline is no reply: spawn, then poll until one answers.
    monkeypatch.setattr(daemon, "PROBE_DEADLINE", 0.2)
    fake.on("Status", held(1.0, {"daemon_pid": 1}), {"daemon_pid": 77})
    spawns: list[Home] = []
    monkeypatch.setattr(daemon, "spawn", spawns.append)
    r = ppz(capsys, "daemon", "start")
    assert (r.code, r.out) == (0, "daemon started pid=77\n"), r
    assert [h.socket for h in spawns] == [Path(os.environ["PPZ_IPC_SOCKET"])]


def test_no_daemon_spawns_one_for_login_and_reports_it(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake.stop()
    fake.on("Status", {"daemon_pid": 77})
    fake.on("Login", {"url": "https://ppz.example.com", "key_prefix": "abcd1234", "account_id": "acct"})
    monkeypatch.setattr(daemon, "spawn", lambda home: fake.start())
    r = ppz(capsys, "login", "ppz.example.com/", "--apikey", "ppz_abcd1234xyz")
    assert (r.code, r.out) == (0, "daemon started pid=77\nlogged in url=https://ppz.example.com key=abcd1234 "
                                  "account=acct\n"), r


def test_a_daemon_that_never_comes_up_is_exit_1(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                                spawned: list[Home], monkeypatch: pytest.MonkeyPatch) -> None:
    fake.stop()
    monkeypatch.setattr(daemon, "START_WAIT", 0.2)
    r = ppz(capsys, "daemon", "start")
    log = Path(os.environ["PPZ_HOME"]) / "daemon.log"
    assert (r.code, r.out, r.err) == (1, "", f"error: daemon did not come up within 5s; see {log}\n")
    assert len(spawned) == 1


@pytest.mark.parametrize("args", [["status"], ["who"], ["get", "handle"], ["ls"], ["send", "bob", "hi"]])
def test_other_commands_never_start_a_daemon(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                             spawned: list[Home], args: list[str]) -> None:
    fake.stop()
    assert ppz(capsys, *args).code == errors.exit_status(errors.E_DAEMON_NOT_RUNNING) == 11
    assert spawned == []
