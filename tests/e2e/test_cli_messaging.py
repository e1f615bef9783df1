"""The messaging commands of the real ``ppz`` CLI against a real daemon, ppz-server and NATS
(spec/cli.md §2.5–2.15)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from typing import Any

import pytest
from daemonfixture import DaemonHome, background, wait_for
from serverfixture import ServerProcess

INVALID_TARGET = ("error: E_INVALID_PIPE: invalid target 'a.b.c': use HANDLE.PIPE or PIPE "
                  "(uncollared pipes resolve in the current namespace)\n")
SENT_RE = re.compile(r"^sent id=[0-9a-f-]{8} to=(\S+) bytes=(\d+)( ack=requested)?\n$")


@pytest.fixture
def alice(ppz_server: ServerProcess, ppz_home: DaemonHome) -> DaemonHome:
    """A logged-in, connected home whose session's current handle is ``alice``."""
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    ppz_home.wait_connected()
    out = ppz_home.ppz("source", "create", "alice")
    assert out.returncode == 0, out.stderr
    return ppz_home


def ok(h: DaemonHome, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = h.ppz(*args, **kw)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def body_column(line: str) -> str:
    """The body of a tabular read line (after ``HH:MM:SS  <sender:12>  ``)."""
    assert re.match(r"^\d\d:\d\d:\d\d  ", line), line
    return line[8 + 2 + 12 + 2:]


# --- send / read / reread ----------------------------------------------------------------------


def test_source_create_send_read(alice: DaemonHome) -> None:
    out = alice.ppz("source", "create", "alice")
    assert (out.returncode, out.stdout) == (13, "")
    assert out.stderr.startswith("error: E_SOURCE_TAKEN: ")
    out = ok(alice, "source", "create", "bob")
    assert re.fullmatch(r"created handle=bob subject=\S+\.bob(\.inbox)?\n", out.stdout), out.stdout
    assert ok(alice, "get", "handle").stdout == "bob\n"  # a created source becomes current
    ok(alice, "set", "handle", "alice")

    out = ok(alice, "send", "alice", "007")
    assert out.stdout == ""
    m = SENT_RE.match(out.stderr)
    assert m and m.group(1) == "alice.inbox" and m.group(2) == "3", out.stderr
    ok(alice, "send", "alice.inbox", "hi there", "--priority", "LOW", "--subject", "greeting")
    ok(alice, "send", "alice", "[1, 2]", "--priority=high")

    out = ok(alice, "read", "inbox")
    lines = out.stdout.splitlines()
    # the inbox is sorted by priority for presentation: high, unset (medium), low
    assert [body_column(line) for line in lines] == ["P1 [1, 2]", "007", "P3 [greeting] hi there"]
    assert all(line[10:22] == "alice       " for line in lines)  # the session's current handle sent them
    out = ok(alice, "read", "inbox")
    assert out.stdout == ""

    out = ok(alice, "reread", "alice.inbox", "--json")
    msgs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [m["payload"] for m in msgs] == ["[1, 2]", "007", "hi there"]  # inboxes show by priority
    assert [m["priority"] for m in msgs] == [1, 0, 3]
    out = ok(alice, "reread", "alice.inbox", "--bare", "--skip", "1", "-l", "1")  # skip, then the last 1
    assert out.stdout == "[1, 2]\n"
    out = ok(alice, "reread", "alice.inbox", "--raw", "--since", "1h")
    assert out.stdout == "[1, 2]007hi there"


def test_read_limit_trailer_and_custom_pipes(alice: DaemonHome) -> None:
    ok(alice, "pipe", "create", "alice.notes")
    for i in range(5):
        ok(alice, "send", "alice.notes", f"line {i}\nsecond")
    out = ok(alice, "read", "alice.notes", "--limit", "2")
    assert out.stdout == "line 0\nsecond\nline 1\nsecond\n(3 more unread - run again to continue)\n"
    out = ok(alice, "read", "alice.notes", "-l", "0", "--bare")
    assert out.stdout == "line 2\nsecond\nline 3\nsecond\nline 4\nsecond\n"


def test_send_and_read_errors(alice: DaemonHome) -> None:
    out = alice.ppz("send", "a.b.c", "x")
    assert (out.returncode, out.stdout, out.stderr) == (20, "", INVALID_TARGET)
    out = alice.ppz("read", "a.b.c")
    assert (out.returncode, out.stdout, out.stderr) == (20, "", INVALID_TARGET)
    out = alice.ppz("send", "nobody", "x")
    assert (out.returncode, out.stdout) == (14, "")
    out = alice.ppz("send", "alice", "x", "--priority", "0")
    assert (out.returncode, out.stdout) == (27, "")
    out = alice.ppz("send", "alice", "x", "--subject", "ack:x")
    assert (out.returncode, out.stdout) == (23, "")
    out = alice.ppz("read", "alice.nopipe")
    assert (out.returncode, out.stdout) == (22, "")
    assert out.stderr == "error: E_PIPE_NOT_FOUND: pipe 'nopipe' not found on source 'alice'\n"
    out = alice.ppz("read", "alice.inbox", "--tail", "--limit", "3")
    assert (out.returncode, out.stdout) == (2, "")


def test_request_ack_and_receipt(alice: DaemonHome) -> None:
    ok(alice, "source", "create", "bob")  # bob is now the session's current handle
    out = ok(alice, "send", "alice", "please ack", "--request-ack")
    assert out.stderr.endswith(" ack=requested\n")
    sent_id = json.loads(ok(alice, "reread", "alice.inbox", "--json").stdout.splitlines()[-1])["id"]
    ok(alice, "read", "alice.inbox")  # reading sends the receipt to bob's inbox
    lines = wait_for(lambda: ok(alice, "reread", "bob.inbox").stdout.splitlines(), what="a read receipt")
    assert body_column(lines[-1]).startswith("ack:")
    assert body_column(lines[-1]).endswith(f" → {sent_id[-8:]}")
    out = alice.ppz("send", "alice", "x", "--request-ack", env={"PPZ_SESSION": "no-current"})
    assert (out.returncode, out.stdout) == (16, "")


def test_uncollared_pipe_in_a_namespace(alice: DaemonHome) -> None:
    assert ok(alice, "set", "namespace", "team-a").stdout == "namespace=team-a\n"
    out = ok(alice, "pipe", "create", "room", "--ttl", "24h", "--max-msgs", "5000")
    assert out.stdout.startswith("created pipe=team-a.room retention=ttl=24h0m0s,msgs=5000,bytes=")
    out = ok(alice, "send", "room", "hello room")
    assert SENT_RE.match(out.stderr).group(1) == "team-a.room"  # type: ignore[union-attr]
    out = ok(alice, "read", "room")
    assert [body_column(line) for line in out.stdout.splitlines()] == ["hello room"]
    out = ok(alice, "ls", "team-*.room")
    assert out.stdout.splitlines()[1].split()[:4] == ["team-a", "room", "0", "1"]
    out = ok(alice, "pipe", "set", "room", "--max-bytes", "1048576")
    assert out.stdout.startswith("updated pipe=team-a.room retention=ttl=24h0m0s,msgs=5000,bytes=1048576")
    assert ok(alice, "pipe", "destroy", "room").stdout == "destroyed pipe=team-a.room\n"
    assert ok(alice, "unset", "namespace").stdout == "unset\n"


def test_read_tail_streams_and_survives_a_daemon_restart(alice: DaemonHome) -> None:
    ok(alice, "send", "alice", "before")
    with background(alice, "read", "inbox", "--tail") as proc:
        assert proc.stdout is not None
        assert body_column(proc.stdout.readline().rstrip("\n")) == "before"
        ok(alice, "send", "alice", "live")
        assert body_column(proc.stdout.readline().rstrip("\n")) == "live"
        ok(alice, "daemon", "restart")
        alice.wait_connected()
        ok(alice, "send", "alice", "after restart")
        assert body_column(proc.stdout.readline().rstrip("\n")) == "after restart"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out, err) == (0, "", "")


# --- ls ----------------------------------------------------------------------------------------


def test_ls(alice: DaemonHome) -> None:
    ok(alice, "send", "alice", "hello there")
    out = ok(alice, "ls")
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "PIPE", "UNREAD", "BUFFERED", "LAST", "PAYLOAD", "CREATOR"]
    row = next(line for line in lines if " alice.inbox " in line)
    assert re.match(r"^-\s+alice\.inbox\s+1\s+1\s+(just now|\d+ seconds? ago)\s+hello there\s+\S+$", row), row
    assert not any(line != line.rstrip() for line in lines)
    out = ok(alice, "ls", "alice", "%.inbox", "--long")
    assert out.stderr == 'ppz ls: no pipe matches "alice" — use a glob like "alice%" to match speculatively\n'
    assert out.stdout.splitlines()[0].split()[5:8] == ["TTL", "MAX_MSGS", "MAX_BYTES"]
    reply = json.loads(ok(alice, "ls", "--json").stdout)
    assert {s["handle"] for s in reply["sources"]} == {"alice"}


def test_ls_watch_returns_when_something_is_unread(alice: DaemonHome) -> None:
    ok(alice, "read", "inbox")
    with background(alice, "ls", "--watch", "alice.inbox") as proc:
        time.sleep(1.0)
        assert proc.poll() is None
        ok(alice, "send", "alice", "wake up")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "alice.inbox" in out and "wake up" in out


# --- sources, handles, pipes -----------------------------------------------------------------------


def test_handles(alice: DaemonHome) -> None:
    ok(alice, "source", "create", "bob")
    assert ok(alice, "get", "handle").stdout == "bob\n"
    assert ok(alice, "set", "handle", "alice").stdout == "handle=alice\n"
    assert ok(alice, "get", "handle").stdout == "alice\n"
    out = ok(alice, "get", "handle", env={"PPZ_CURRENT_HANDLE": "bob"})
    assert out.stdout == "bob\n"
    assert out.stderr == "warning: PPZ_CURRENT_HANDLE=bob overrides the current source in this shell\n"
    out = alice.ppz("set", "handle", "nobody")
    assert (out.returncode, out.stdout) == (14, "")
    assert ok(alice, "unset", "handle").stdout == "unset\n"
    out = alice.ppz("get", "handle")
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "")
    out = alice.ppz("read", "inbox")
    assert (out.returncode, out.stdout) == (16, "")


def test_pipes_and_destroy(alice: DaemonHome) -> None:
    out = ok(alice, "pipe", "create", "alice.notes", "--ttl=1h", "--max_msgs=10", "--max-bytes=-1")
    assert re.fullmatch(r"created pipe=alice\.notes retention=ttl=1h0m0s,msgs=10,bytes=-?\d+\n", out.stdout)
    out = alice.ppz("pipe", "create", "alice.notes")
    assert (out.returncode, out.stdout) == (21, "")
    out = alice.ppz("pipe", "set", "alice.notes")
    assert (out.returncode, out.stdout) == (20, "")
    out = ok(alice, "pipe", "set", "alice.inbox", "--max-msgs", "100")
    assert out.stdout.startswith("updated pipe=alice.inbox retention=ttl=")
    assert ok(alice, "pipe", "destroy", "alice.notes").stdout == "destroyed pipe=alice.notes\n"
    out = alice.ppz("pipe", "destroy", "alice.notes")
    assert (out.returncode, out.stdout) == (22, "")

    ok(alice, "source", "create", "carol")
    assert ok(alice, "pipe", "destroy", "carol", "--recursive").stdout == "destroyed source=carol\n"
    assert ok(alice, "source", "destroy", "alice").stdout == "destroyed source=alice\n"
    out = alice.ppz("source", "destroy", "alice")
    assert (out.returncode, out.stdout) == (14, "")


def test_glob_destroy(alice: DaemonHome) -> None:
    for h in ("agent-a", "agent-b"):
        ok(alice, "source", "create", h)
        ok(alice, "pipe", "create", f"{h}.logs")
    out = ok(alice, "source", "destroy", "agent-?.%")
    assert out.stdout == "destroyed pipe=agent-a.logs\ndestroyed pipe=agent-b.logs\n"
    out = alice.ppz("source", "destroy", "agent-?.%")
    assert (out.returncode, out.stdout) == (22, "")
    assert out.stderr == "error: E_PIPE_NOT_FOUND: no pipe matches 'agent-?.%'\n"
    out = ok(alice, "source", "destroy", "agent-*")
    assert out.stdout == "destroyed source=agent-a\ndestroyed source=agent-b\n"
    out = alice.ppz("source", "destroy", "agent-*")
    assert (out.returncode, out.stdout) == (14, "")
    assert out.stderr == "error: E_SOURCE_NOT_FOUND: no source matches 'agent-*'\n"
    assert ok(alice, "ls", "agent-%").stdout.count("\n") == 1  # the header only


def test_complete_and_completion(alice: DaemonHome) -> None:
    ok(alice, "pipe", "create", "alice.notes")
    out = ok(alice, "__complete", "al")
    assert out.stdout.splitlines() == ["alice", "alice.inbox", "alice.notes"]
    assert "ppz __complete" in ok(alice, "completion", "bash").stdout
    assert ok(alice, "__complete", "zz").stdout == ""


# --- presence, diagnostics ------------------------------------------------------------------------


def test_heartbeat_and_who(alice: DaemonHome) -> None:
    out = ok(alice, "heartbeat", "agent-b", "--once", "--state", "working", "--harness", "claude", "--model", "opus")
    assert (out.stdout, out.stderr) == ("", "")
    lines = wait_for(lambda: [line for line in ok(alice, "who").stdout.splitlines() if line.startswith("agent-b ")],
                     what="agent-b in who")
    assert lines[0].split()[:4] == ["agent-b", "online|working", "claude", "opus"]
    entries = json.loads(ok(alice, "who", "--json", "--online").stdout)
    assert [e["handle"] for e in entries] == ["agent-b"]
    assert entries[0]["heartbeat"]["harness_source"] == "env" and entries[0]["status"] == "online"
    assert json.loads(ok(alice, "who", "--json", "--offline").stdout) == []
    assert ok(alice, "get", "handle").stdout == "alice\n"  # a pty source never becomes current

    # the command lives long enough for the first beat (beats run beside it, never before it)
    script = "import os, time; print(os.environ['PPZ_CURRENT_HANDLE']); time.sleep(2); raise SystemExit(3)"
    out = alice.ppz("heartbeat", "agent-c", "--", sys.executable, "-c", script)
    assert (out.returncode, out.stdout) == (3, "agent-c\n"), out.stderr
    wait_for(lambda: '"agent-c"' in ok(alice, "who", "--json").stdout, what="agent-c in who")


def test_diagnostics(alice: DaemonHome, tmp_path: Any) -> None:
    out = ok(alice, "diagnostics")
    lines = out.stdout.splitlines()
    assert re.match(r"^nats: connected  \(since \d\d:\d\d:\d\d, \S+ ago\)  drops_last_hour=\d+$", lines[0]), lines[0]
    assert lines[1].startswith("refresh: ")
    assert lines[2].startswith("url: nats://")
    assert lines[-2:] == ["→ Full history:  ppz diagnostics --since=1h",
                          "→ Bug report:    ppz diagnostics --bundle  (writes ~/ppz-diag-<ts>.tgz)"]
    assert any(line.startswith("connect ") for line in lines)
    reply = json.loads(ok(alice, "diagnostics", "--json", "--since", "1h").stdout)
    assert reply["nats_events"] and "on_disk_count" in reply
    assert "scope=--since=1h" in ok(alice, "diagnostics", "--since=1h").stdout

    out = ok(alice, "diagnostics", "--bundle", env={"HOME": str(tmp_path)})
    path = out.stdout.strip()
    assert path.startswith(str(tmp_path) + "/ppz-diag-") and path.endswith(".tgz")
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        manifest = tar.extractfile("MANIFEST").read().decode()  # type: ignore[union-attr]
    assert {"nats-events.jsonl", "daemon.pid", "diagnostics.json", "version.txt", "MANIFEST"} <= names
    assert not names & {"credentials", "current.json"}
    assert "+ diagnostics.json" in manifest


def test_diagnostics_bundle_without_daemon(ppz_home: DaemonHome, tmp_path: Any) -> None:
    out = ppz_home.ppz("diagnostics")
    assert (out.returncode, out.stdout) == (11, "")
    out = ok(ppz_home, "diagnostics", "--bundle", env={"HOME": str(tmp_path)})
    with tarfile.open(out.stdout.strip()) as tar:
        manifest = tar.extractfile("MANIFEST").read().decode()  # type: ignore[union-attr]
    assert "- diagnostics.json (daemon not running)" in manifest.splitlines()


@pytest.mark.parametrize("args", [["send", "bob", "x"], ["read", "bob.inbox"], ["ls"], ["who"],
                                  ["source", "create", "x"], ["get", "handle"], ["pipe", "create", "x.y"]])
def test_no_daemon_is_11_and_starts_none(ppz_home: DaemonHome, args: list[str]) -> None:
    out = ppz_home.ppz(*args)
    assert (out.returncode, out.stdout) == (11, "")
    assert out.stderr == "error: E_DAEMON_NOT_RUNNING: daemon not running; run 'ppz daemon start'\n"
    assert ppz_home.status_or_none() is None

