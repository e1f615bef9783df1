"""What every command shares (spec/cli.md §1): session ids, the home and socket the CLI dials
(the same as the daemon's, also without ``HOME``), colour."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import types

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    Stream,
    msg,
    ppz,
    read_bundle,
    who_reply,
)
from ppz import __version__, ipc
from ppz.commands import client


def test_session_id_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_SESSION", "agent-7")
    assert client.session_id() == "agent-7"
    monkeypatch.delenv("PPZ_SESSION")
    assert client.session_id() == f"sid-{os.getsid(0)}"


def test_socket_path_follows_home_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from ppz import home

    cases = [{"PPZ_IPC_SOCKET": "/x/s.sock"}, {"PPZ_HOME": "/h"}, {"HOME": "/u"}, {"HOME": ""}, {"PPZ_HOME": ""},
             {"HOME": None}]
    for env in cases:
        for name in ("PPZ_IPC_SOCKET", "PPZ_HOME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", "/u")
        for k, v in env.items():
            if v is None:
                monkeypatch.delenv(k)
            else:
                monkeypatch.setenv(k, v)
        assert ipc.socket_path() == str(home.Home.from_env().socket), env
        assert ipc.home_dir() == str(home.resolve_home()), env


@pytest.mark.parametrize("user_home", [None, ""])
def test_without_home_the_cli_reaches_the_daemons_socket(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], user_home: str | None) -> None:
    """HOME unset: ``~/.ppz`` of the password entry; HOME empty: ``.ppz`` in the working
    directory. The CLI dials the socket the daemon listens on (``Home.from_env``), and the
    diagnostics bundle lands in the same home directory."""
    import pwd
    from pathlib import Path

    from ppz.home import Home

    root = Path(tempfile.mkdtemp(prefix="ppzhome", dir="/tmp"))
    for name in ("PPZ_IPC_SOCKET", "PPZ_HOME", "PPZ_CURRENT_HANDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: types.SimpleNamespace(pw_dir=str(root / "pw")))
    monkeypatch.chdir(root)
    if user_home is None:
        monkeypatch.delenv("HOME", raising=False)
        want = root / "pw" / ".ppz"
    else:
        monkeypatch.setenv("HOME", user_home)
        want = root / ".ppz"
    want.mkdir(parents=True)
    daemon_home = Home.from_env()
    assert (daemon_home.root.resolve(), daemon_home.socket.resolve()) == (want, want / "daemon.sock")
    daemon = FakeDaemon(str(daemon_home.socket))
    try:
        daemon.on("Status", {"daemon_pid": 42, "logged_in": False, "daemon_version": __version__})
        r = ppz(capsys, "status")
        assert (r.code, r.out.splitlines()[0]) == (0, f"daemon: not logged in (pid=42), {__version__}")
        (want / "daemon.pid").write_text("42\n")
        daemon.on("Diag", {"summary": {}, "patterns": [], "nats_events": [], "on_disk_count": 0})
        r = ppz(capsys, "diagnostics", "--bundle")
        assert r.code == 0, r
        bundle = Path(r.out.strip())
        assert bundle.parent == (want.parent if user_home is None else root)
        assert read_bundle(str(bundle))["daemon.pid"] == b"42\n"
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_colour_only_on_a_tty_without_no_color(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ppz.render import BOLD_CYAN, DIM, GREEN

    fake.on("Read", Stream({"msg": msg("hi")}))
    fake.on("Who", who_reply())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" not in ppz(capsys, "read", "bob.inbox").out  # capsys is not a TTY
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    out = ppz(capsys, "read", "bob.inbox").out
    assert out.startswith(DIM) and f"{BOLD_CYAN}alice" in out
    assert "\x1b[" not in ppz(capsys, "read", "bob.inbox", "--json").out
    assert f"{GREEN}online" in ppz(capsys, "who").out
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in ppz(capsys, "read", "bob.inbox").out + ppz(capsys, "who").out
