"""Daemon lifecycle end to end (spec/daemon.md §1; behaviours 79–84)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat

import pytest
from daemonfixture import DaemonHome, wait_for

from ppz import home


def test_start_status_stop(ppz_home: DaemonHome) -> None:
    out = ppz_home.ppz("status")
    assert out.returncode == 11 and out.stdout == "daemon: not running\n"
    out = ppz_home.ppz("daemon", "start")
    assert out.returncode == 0, out.stderr
    pid = ppz_home.pid()
    assert out.stdout == f"daemon started pid={pid}\n"
    assert ppz_home.ppz("daemon", "start").stdout == f"daemon already running pid={pid}\n"
    assert stat.S_IMODE(os.stat(ppz_home.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ppz_home.home.socket).st_mode) == 0o600
    out = ppz_home.ppz("status")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        f"daemon: not logged in (pid={pid}), 0.3.0",
        "hint: run 'ppz login URL --apikey KEY'",
    ]
    out = ppz_home.ppz("daemon", "stop")
    assert (out.returncode, out.stdout) == (0, f"daemon stopped pid={pid}\n")
    assert not ppz_home.home.socket.exists() and not ppz_home.home.pid.exists()
    assert ppz_home.home.lock.exists()
    assert ppz_home.ppz("daemon", "stop").stdout == "daemon not running\n"


def test_restart_prints_both_lines(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    old = ppz_home.pid()
    out = ppz_home.ppz("daemon", "restart")
    new = ppz_home.pid()
    assert out.returncode == 0 and new != old
    assert out.stdout == f"daemon stopped pid={old}\ndaemon started pid={new}\n"


def test_other_commands_never_start_a_daemon(ppz_home: DaemonHome) -> None:
    for args in (["status"], ["logout"]):
        ppz_home.ppz(*args)
    assert not ppz_home.home.socket.exists()
    assert ppz_home.pid() == 0


def test_second_daemon_is_refused_and_first_keeps_answering(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    pid = ppz_home.pid()
    sock_inode = os.stat(ppz_home.home.socket).st_ino
    events_before = ppz_home.home.events.read_bytes()
    out = ppz_home.ppz("daemon", "start", "--foreground")
    assert out.returncode == 1
    assert out.stderr.strip().endswith(
        f"ppz daemon: another daemon is already running for {ppz_home.root} (pid {pid})"
    )
    assert out.stdout == ""
    assert ppz_home.pid() == pid
    assert os.stat(ppz_home.home.socket).st_ino == sock_inode
    assert ppz_home.home.events.read_bytes() == events_before
    assert ppz_home.status()["daemon_pid"] == pid


def test_sigterm_is_a_graceful_stop_and_restart_reseeds(ppz_home: DaemonHome) -> None:
    proc = ppz_home.start_foreground()
    pid = proc.pid
    assert ppz_home.pid() == pid
    os.kill(pid, signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not ppz_home.home.socket.exists()
    assert not ppz_home.home.pid.exists()
    lifecycle = [json.loads(line) for line in ppz_home.home.lifecycle.read_text().splitlines()]
    assert [e["type"] for e in lifecycle] == ["daemon_start", "daemon_stop"]
    assert lifecycle[1]["reason"] == "graceful"
    ppz_home.start_foreground()
    ring = ppz_home.call("Diag", {})["nats_events"]
    types = [e["type"] for e in ring]
    assert types == ["daemon_start", "daemon_stop", "daemon_start"]


def test_sigint_also_stops_gracefully(ppz_home: DaemonHome) -> None:
    proc = ppz_home.start_foreground()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert not ppz_home.home.socket.exists()


def test_stale_socket_is_replaced_and_non_socket_refused(ppz_home: DaemonHome) -> None:
    ppz_home.root.mkdir(mode=0o755)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(ppz_home.home.socket))
    stale.close()
    ppz_home.start_foreground()
    assert stat.S_IMODE(os.stat(ppz_home.root).st_mode) == 0o700
    assert ppz_home.status()["logged_in"] is False
    ppz_home.kill()
    ppz_home.home.socket.write_text("not a socket")
    out = ppz_home.ppz("daemon", "start", "--foreground")
    assert out.returncode == 1
    assert "is not a socket" in out.stderr
    assert ppz_home.home.socket.read_text() == "not a socket"


def test_unloadable_state_fails_startup(ppz_home: DaemonHome) -> None:
    ppz_home.root.mkdir(mode=0o700)
    ppz_home.home.current_json.write_text("{not json")
    out = ppz_home.ppz("daemon", "start", "--foreground")
    assert out.returncode == 1
    assert "ppz daemon: cannot load state: " in out.stderr
    assert not ppz_home.home.pid.exists()
    lifecycle = [json.loads(line) for line in ppz_home.home.lifecycle.read_text().splitlines()]
    assert lifecycle[-1]["type"] == "daemon_stop"
    assert lifecycle[-1]["reason"].startswith("startup failed: ")


def test_stop_with_unreadable_pid(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    pid = ppz_home.pid()
    ppz_home.home.pid.write_text("garbage")
    out = ppz_home.ppz("daemon", "stop")
    assert out.returncode == 1
    assert out.stderr == "error: daemon is running but daemon.pid is unreadable\n"
    ppz_home.home.pid.write_text(str(pid))


def test_two_clis_racing_agree_on_the_winner(ppz_home: DaemonHome) -> None:
    import subprocess

    from daemonfixture import CLI

    procs = [subprocess.Popen([*CLI, "daemon", "start"], env=ppz_home.env, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=30)[0] for p in procs]
    pid = ppz_home.pid()
    assert pid > 0
    for out in outs:
        assert out.strip().endswith(f"pid={pid}")


@pytest.mark.parametrize("payload", [b"{not json}\n", b"[1,2]\n", b'{"method":"Status","params":[]}\n',
                                     b'{"method":"Frobnicate"}\n', b'{"method":"Status","params":{"session":7}}\n'])
def test_malformed_requests_get_e_protocol(ppz_home: DaemonHome, payload: bytes) -> None:
    ppz_home.ppz("daemon", "start")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(ppz_home.home.socket))
        s.sendall(payload)
        reply = json.loads(s.makefile("rb").readline())
    assert reply["error"]["code"] == "E_PROTOCOL"


def test_thousand_bad_requests_then_status_answers(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    path = str(ppz_home.home.socket)
    big = b"x" * (1024 * 1024)
    for i in range(1000):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            if i % 100 == 0:
                try:
                    s.sendall(big)
                except OSError:
                    pass
                reply = s.makefile("rb").readline()
                if reply:
                    assert json.loads(reply) == {"error": {"code": "E_PROTOCOL", "message": "request too large"}}
                continue
            s.sendall(b'{"method": 12}\n' if i % 2 else b"\x00garbage\n")
            reply = json.loads(s.makefile("rb").readline())
            assert reply["error"]["code"] == "E_PROTOCOL"
    assert ppz_home.status()["logged_in"] is False


def test_reserved_and_unknown_verbs(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    from ppz import errors

    with pytest.raises(errors.PpzError) as info:
        ppz_home.call("SubsList", {})
    assert (info.value.code, info.value.message) == ("E_NOT_IMPLEMENTED", "SubsList not implemented")
    with pytest.raises(errors.PpzError) as info:
        ppz_home.call("Frobnicate", {})
    assert (info.value.code, info.value.message) == ("E_PROTOCOL", "unknown method Frobnicate")


def test_logout_without_daemon_deletes_files(ppz_home: DaemonHome) -> None:
    ppz_home.root.mkdir(mode=0o700)
    h = ppz_home.home
    h.credentials.write_text('{"url":"http://x","api_key":"ppz_1"}')
    h.current_json.write_text('{"default":"a"}')
    h.legacy_current.write_text("a")
    h.namespace_json.write_text('{"default":"ns"}')
    (h.cursors_dir).mkdir()
    (h.cursors_dir / "default.json").write_text("{}")
    out = ppz_home.ppz("logout")
    assert (out.returncode, out.stdout) == (0, "logged out\n")
    assert not h.credentials.exists() and not h.current_json.exists()
    assert not h.legacy_current.exists() and not h.cursors_dir.exists()
    assert h.namespace_json.exists()
    assert ppz_home.ppz("logout").returncode == 0


def test_wait_for_helper_reports_timeouts() -> None:
    with pytest.raises(AssertionError):
        wait_for(lambda: False, timeout=0.1, what="never")


def test_lock_file_mode(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    assert stat.S_IMODE(os.stat(ppz_home.home.lock).st_mode) == 0o600
    assert home.lock_is_held(ppz_home.home.lock)
