"""``ppz heartbeat`` (spec/cli.md §2.15) against a fake daemon: once, wrapped commands, signals."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import pytest

from commands.fakedaemon import (
    SEND_REPLY,
    FakeDaemon,
    cli_process,
    ppz,
)
from ppz import __version__, errors


def test_heartbeat_once_creates_a_missing_pty_source(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_AGENT_HARNESS", "claude")
    monkeypatch.setenv("PPZ_AGENT_MODEL", "opus")
    fake.on("EnsurePTY", errors.PpzError(errors.E_SOURCE_NOT_FOUND, "source 'agent' not found"))
    fake.on("Create", {"handle": "agent", "subject": "x", "pipes": []})
    fake.on("Send", SEND_REPLY)
    r = ppz(capsys, "heartbeat", "agent", "--once", "--interval", "10s", "--state", "working")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert fake.methods() == ["EnsurePTY", "Create", "Send"]
    assert fake.params("Create") == [{"handle": "agent", "kind": "pty", "session": "s1"}]
    send = fake.params("Send")[0]
    assert {k: send[k] for k in ("handle", "channel", "session")} == {"handle": "agent", "channel": "heartbeat",
                                                                      "session": "s1"}
    beat = json.loads(send["payload"])
    assert set(beat) == {"ts", "seq", "harness", "harness_source", "agent_state", "child_pid", "model", "hostname",
                         "os", "arch", "pid", "ppz_version", "started_at", "interval_sec"}
    assert beat["seq"] == 1 and beat["interval_sec"] == 10 and beat["agent_state"] == "working"
    assert (beat["harness"], beat["harness_source"], beat["model"]) == ("claude", "env", "opus")
    assert beat["pid"] == os.getpid() and beat["child_pid"] == 0 and beat["ppz_version"] == __version__
    assert beat["os"] == os.uname().sysname.lower() and beat["hostname"] == os.uname().nodename


def test_heartbeat_once_failure_exits_with_the_code(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", errors.PpzError(errors.E_NATS_UNREACHABLE, "down"))
    r = ppz(capsys, "heartbeat", "agent", "--once", "--harness=", "--interval=500ms")
    assert (r.code, r.out, r.err) == (19, "", "error: E_NATS_UNREACHABLE: down\n")
    beat = json.loads(fake.params("Send")[0]["payload"])
    assert (beat["harness"], beat["harness_source"], beat["interval_sec"]) == ("", "", 1)


@pytest.mark.parametrize("args", [["--state", "busy"], ["--interval", "often"], ["--once", "--", "true"],
                                  ["--", ]])
def test_heartbeat_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert ppz(capsys, "heartbeat", "agent", *args).code == 2
    assert fake.requests == []


def test_heartbeat_wraps_a_command(fake: FakeDaemon, tmp_path: Any) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", SEND_REPLY)
    done = tmp_path / "done"  # the command runs until the second beat was seen (not for a fixed time)
    script = ('import os, sys, time; print(os.environ["PPZ_SESSION"], os.environ["PPZ_CURRENT_HANDLE"], '
              'sys.argv[1])\nwhile not os.path.exists(sys.argv[2]): time.sleep(0.01)\nsys.exit(7)')
    proc = cli_process(["heartbeat", "agent", "--interval=1s", "--", sys.executable, "-c", script, "--json",
                        str(done)])
    deadline = time.monotonic() + 20
    while len(fake.params("Send")) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    done.touch()
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (7, "agent agent --json\n"), err
    beats = [json.loads(p["payload"]) for p in fake.params("Send")]
    seqs = [b["seq"] for b in beats]
    assert seqs[:2] == [1, 2] and seqs == list(range(1, len(seqs) + 1))  # at once, then every interval
    assert beats[0]["child_pid"] > 0 and beats[0]["child_pid"] != beats[0]["pid"]
    assert beats[0]["interval_sec"] == 1 and beats[0]["started_at"] == beats[1]["started_at"]
    assert fake.methods().count("EnsurePTY") == 1


def test_heartbeat_command_not_found(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", SEND_REPLY)
    proc = cli_process(["heartbeat", "agent", "--", "/nonexistent/command"])
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (127, "")
    assert err.startswith("error: heartbeat: cannot run '/nonexistent/command': ")


def test_heartbeat_passes_signals_on_and_survives_failed_beats(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", errors.PpzError(errors.E_NOT_LOGGED_IN))
    script = "import time; print('ready', flush=True); time.sleep(30)"
    proc = cli_process(["heartbeat", "agent", "--", sys.executable, "-c", script])
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "warning: heartbeat failed: E_NOT_LOGGED_IN: not logged in; run 'ppz login URL --apikey KEY'" in err


def test_heartbeat_until_signalled(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", SEND_REPLY)
    proc = cli_process(["heartbeat", "agent"])
    deadline = time.monotonic() + 20
    while not fake.params("Send") and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, ""), err
    assert json.loads(fake.params("Send")[0]["payload"])["interval_sec"] == 60
