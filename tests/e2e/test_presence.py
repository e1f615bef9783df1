"""Presence end to end: ``ppz heartbeat`` on one daemon, ``ppz who`` on others, across real
daemons, a real ppz-server and NATS (spec/daemon.md §7, cli.md §2.6 and §2.15, ipc.md §7.20,
behaviours 68–72)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonfixture import CLI, DaemonHome, wait_for
from serverfixture import ServerProcess

from ppz.serverclient import ServerClient

WHO_HEADER = ["HANDLE", "STATUS", "HARNESS", "MODEL", "HOST", "OS/ARCH", "CREATED", "OWNER"]
WHO_KEYS = {"handle", "status", "owner", "arrived_at", "heartbeat"}
BEAT_KEYS = {"ts", "seq", "harness", "harness_source", "agent_state", "child_pid", "model", "hostname", "os",
             "arch", "pid", "ppz_version", "started_at", "interval_sec"}
NOT_RUNNING = "warning: heartbeat failed: E_DAEMON_NOT_RUNNING: daemon not running; run 'ppz daemon start'"
BEAT_FAILED = re.compile(r"warning: heartbeat failed: E_[A-Z_]+: .+")


def ok(h: DaemonHome, *args: str) -> subprocess.CompletedProcess[str]:
    out = h.ppz(*args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def logged_in(home_factory: Callable[..., DaemonHome], name: str, server: ServerProcess, key: str) -> DaemonHome:
    h = home_factory(name)
    h.login(server.url, key)
    h.wait_connected()
    return h


def who(h: DaemonHome, *flags: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(ok(h, "who", "--json", *flags).stdout)
    return entries


def handles(h: DaemonHome, *flags: str) -> list[str]:
    return [e["handle"] for e in who(h, *flags)]


def who_row(h: DaemonHome, handle: str) -> list[str]:
    """The cells of ``handle``'s row of the ``ppz who`` table (CREATED, which has spaces, is
    kept whole), or ``[]`` when it has no row."""
    lines = ok(h, "who").stdout.splitlines()
    assert lines[0].split() == WHO_HEADER, lines
    for line in lines[1:]:
        cells = re.split(r" {2,}", line)
        if cells[0] == handle:
            return cells
    return []


def wait_listed(h: DaemonHome, handle: str, timeout: float = 10.0) -> dict[str, Any]:
    return wait_for(lambda: next((e for e in who(h) if e["handle"] == handle), None), timeout=timeout,
                    what=f"{handle} in who on {h.root.name}")


def rewrite_credentials(h: DaemonHome, url: str, key: str) -> None:
    """Replace ``credentials`` on disk (atomically) with ``key``'s identity and wait until the
    daemon is connected with it."""
    account_id = ServerClient().exchange(url, key).account_id
    tmp = h.home.credentials.with_name("credentials.test-tmp")
    tmp.write_text(json.dumps({"url": url, "api_key": key, "account_id": account_id}))
    tmp.chmod(0o600)
    os.replace(tmp, h.home.credentials)
    wait_for(lambda: (s := h.status_or_none()) and s.get("account_id") == account_id
             and s.get("key_prefix") == key.removeprefix("ppz_")[:8] and s.get("nats_state") == "connected",
             what="the daemon to connect with the new credential")


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def beat_once(h: DaemonHome, handle: str, *args: str) -> None:
    out = h.ppz("heartbeat", handle, "--once", *args)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), out


@contextlib.contextmanager
def heartbeating(h: DaemonHome, *args: str, stderr: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    """``ppz heartbeat ARGS…`` as a background process of home ``h`` (killed if still running);
    stdout is a pipe, stderr a pipe or the file ``stderr``."""
    with contextlib.ExitStack() as stack:
        err: Any = stack.enter_context(open(stderr, "w")) if stderr else subprocess.PIPE  # noqa: SIM115
        proc = subprocess.Popen([*CLI, "heartbeat", *args], env=h.env, text=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


# --- who across daemons --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_beats_of_another_daemon_go_online_stale_offline(ppz_server: ServerProcess,
                                                         home_factory: Callable[..., DaemonHome]) -> None:
    a = logged_in(home_factory, "a", ppz_server, ppz_server.add_key("acme", user="ann"))
    b = logged_in(home_factory, "b", ppz_server, ppz_server.add_key("acme", user="bob"))
    c = logged_in(home_factory, "c", ppz_server, ppz_server.add_key("other"))
    assert a.status()["account_id"] == b.status()["account_id"] != c.status()["account_id"]

    with heartbeating(b, "agent-b", "--interval=1s", "--state=working", "--harness=claude",
                      "--model=opus") as proc:
        wait_for(lambda: (e := next(iter(who(a)), None)) and e["heartbeat"]["seq"] >= 2, what="two beats on a")
        [entry] = who(a)
        assert set(entry) == WHO_KEYS
        assert (entry["handle"], entry["status"], entry["owner"]) == ("agent-b", "online", "bob")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["arrived_at"]), entry
        beat = entry["heartbeat"]
        assert set(beat) == BEAT_KEYS
        assert (beat["interval_sec"], beat["agent_state"], beat["harness"], beat["harness_source"],
                beat["model"], beat["pid"], beat["child_pid"]) == (1, "working", "claude", "env", "opus", proc.pid, 0)
        cells = who_row(a, "agent-b")
        assert cells[:4] == ["agent-b", "online|working", "claude", "opus"]
        assert cells[4:6] == [os.uname().nodename, f"{beat['os']}/{beat['arch']}"] and cells[7] == "bob"
        assert re.fullmatch(r"just now|\d+ seconds? ago", cells[6]), cells

        # filters: statuses OR-combined, --harness/--owner exact and AND-combined
        assert handles(a, "--online") == handles(a, "--online", "--stale") == ["agent-b"]
        assert handles(a, "--stale") == handles(a, "--offline") == handles(a, "--stale", "--offline") == []
        assert handles(a, "--harness=claude") == handles(a, "--owner=bob", "--online") == ["agent-b"]
        assert handles(a, "--harness=claud") == handles(a, "--owner=ann") == []
        assert handles(a, "--harness=claude", "--owner=ann") == handles(a, "--harness=claude", "--offline") == []

        # another account never sees the beats, though several were published while it listened
        assert who(c) == [] and c.call("Who", {}) == {"entries": []}

        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0

    # The row ages: online below 1.5 × interval, stale below 3 ×, then offline. A beat in flight
    # at the SIGINT may still land, so the row can be online for a moment longer.
    # (An offline row shows no agent state.)
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while not seen or seen[-1] != "offline":
        assert time.monotonic() < deadline, f"agent-b never went offline: {seen}"
        status = who_row(a, "agent-b")[1]
        if not seen or seen[-1] != status:
            seen.append(status)
    assert seen in (["online|working", "stale|working", "offline"], ["stale|working", "offline"]), seen
    assert handles(a, "--offline") == handles(a, "--stale", "--offline") == ["agent-b"]
    assert handles(a, "--online") == handles(a, "--stale") == []
    assert who(c) == []

    # the owner comes from a best-effort listing: with the server gone it is empty, the row stays
    ppz_server.stop()
    assert [(e["handle"], e["status"], e["owner"]) for e in who(a)] == [("agent-b", "offline", "")]
    assert handles(a, "--owner=bob") == []


def test_who_is_scoped_to_the_account_logged_in(ppz_server: ServerProcess,
                                                home_factory: Callable[..., DaemonHome]) -> None:
    key = ppz_server.add_key("acme")
    a = logged_in(home_factory, "a", ppz_server, key)
    b = logged_in(home_factory, "b", ppz_server, key)  # the same key on two daemons
    beat_once(b, "agent-b")
    wait_listed(a, "agent-b")

    # a namespaced beat (<acct>._presence.team-a.agent-n) is listed under its handle
    ok(b, "set", "namespace", "team-a")
    beat_once(b, "agent-n")
    wait_listed(a, "agent-n")
    assert handles(a) == handles(b) == ["agent-b", "agent-n"]
    assert [s["manifold"] for s in b.call("List", {})["sources"] if s["handle"] == "agent-n"] == ["team-a"]

    # a beat whose payload is not a JSON object: listed with a null heartbeat, 60 s assumed
    b.call("Send", {"handle": "agent-b", "channel": "heartbeat", "payload": "not json", "session": "test-session"})
    wait_for(lambda: who(a)[0]["heartbeat"] is None, what="the raw beat on a")
    assert [(e["handle"], e["status"]) for e in who(a)] == [("agent-b", "online"), ("agent-n", "online")]
    assert who_row(a, "agent-b") == ["agent-b", "online", "-", "-", "-", "-", "-", "admin"]

    # logging in again to the same account, or another key of it appearing on disk, keeps the rows
    a.login(ppz_server.url, key)
    assert handles(a) == ["agent-b", "agent-n"]
    rewrite_credentials(a, ppz_server.url, ppz_server.add_key("acme"))
    assert handles(a) == ["agent-b", "agent-n"]

    # logout clears them; beats published later arrive again after the next login
    ok(a, "logout")
    assert who(a) == [] and a.call("Who", {}) == {"entries": []}
    assert ok(a, "who").stdout.split() == WHO_HEADER
    a.login(ppz_server.url, key)
    assert who(a) == []
    beat_once(b, "agent-b")
    wait_listed(a, "agent-b")

    # a login into another account drops them: they stay gone after coming back
    a.login(ppz_server.url, ppz_server.add_key("other"))
    assert who(a) == []
    a.login(ppz_server.url, key)
    assert who(a) == []

    # so does another account's credential appearing on disk
    beat_once(b, "agent-b")
    wait_listed(a, "agent-b")
    rewrite_credentials(a, ppz_server.url, ppz_server.add_key("other"))
    assert who(a) == []
    rewrite_credentials(a, ppz_server.url, key)
    assert who(a) == []


def test_beats_reaching_the_old_connection_after_an_account_switch_are_dropped(
        ppz_server: ServerProcess, home_factory: Callable[..., DaemonHome]) -> None:
    key = ppz_server.add_key("acme")
    a = logged_in(home_factory, "a", ppz_server, key)
    b = logged_in(home_factory, "b", ppz_server, key)
    beat_once(b, "agent-b")
    wait_listed(a, "agent-b")
    old_nc = [e for e in a.events() if e["type"] == "swap"][-1]["nc_id"]

    a.call("Login", {"url": ppz_server.url, "api_key": ppz_server.add_key("other")})
    # an acme beat published right after the switch, while the replaced connection is still open
    b.call("Send", {"handle": "agent-b", "channel": "heartbeat", "payload": '{"interval_sec":60}',
                    "session": "test-session"})
    wait_for(lambda: any(e["type"] == "closed" and e.get("nc_id") == old_nc for e in a.events()),
             what="the replaced connection to close")
    a.call("Login", {"url": ppz_server.url, "api_key": key})
    assert who(a) == []  # every acme row was dropped by the switch; none arrived since


# --- heartbeat ------------------------------------------------------------------------------------


def test_heartbeat_command_exit_status(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    out = ppz_home.ppz("heartbeat", "agent-c", "--", "sh", "-c", "exit 3")
    assert out.returncode == 3, out.stderr
    out = ppz_home.ppz("heartbeat", "agent-c", "--", "sh", "-c", "kill -TERM $$")
    assert out.returncode == 128 + signal.SIGTERM, out.stderr


@pytest.mark.timeout(60)
def test_heartbeat_outlives_its_daemon(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    h = ppz_home
    h.login(ppz_server.url, ppz_server.add_key("acme"))
    with heartbeating(h, "agent-d", "--interval=1s", "--", "sh", "-c", "sleep 4; echo done") as proc:
        [entry] = wait_for(lambda: h.call("Who", {})["entries"], what="the first beat")
        beat = json.loads(entry["payload"])
        assert beat["pid"] == proc.pid and parent_pid(beat["child_pid"]) == proc.pid  # the wrapped command
        assert ok(h, "daemon", "stop").stdout.startswith("daemon stopped")
        stdout, stderr = proc.communicate(timeout=20)
    assert (proc.returncode, stdout) == (0, "done\n"), stderr
    warnings = stderr.splitlines()
    # (a beat cut off by the stop itself may fail otherwise)
    assert NOT_RUNNING in warnings and all(BEAT_FAILED.fullmatch(line) for line in warnings), stderr
    assert h.status_or_none() is None  # a failed beat never starts a daemon


def test_beats_resume_when_the_daemon_comes_back(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                                 tmp_path: Path) -> None:
    h = ppz_home
    h.login(ppz_server.url, ppz_server.add_key("acme"))
    stderr = tmp_path / "heartbeat.err"
    with heartbeating(h, "agent-r", "--interval=1s", stderr=stderr) as proc:
        wait_for(lambda: h.call("Who", {})["entries"], what="the first beat")
        ok(h, "daemon", "stop")
        wait_for(lambda: NOT_RUNNING in stderr.read_text(), what="a failed beat")
        ok(h, "daemon", "start")
        # the new daemon's cache starts empty: a row means the beats went on, on schedule
        row = wait_listed(h, "agent-r")
        assert row["heartbeat"]["seq"] >= 3 and row["status"] == "online"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert all(BEAT_FAILED.fullmatch(line) for line in stderr.read_text().splitlines())


def test_signals_are_passed_on_to_the_command(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    h = ppz_home
    h.login(ppz_server.url, ppz_server.add_key("acme"))
    script = 'trap "exit 7" INT; trap "exit 9" TERM; echo ready; while :; do sleep 0.05; done'
    for sig, code in ((signal.SIGINT, 7), (signal.SIGTERM, 9)):
        with heartbeating(h, "agent-s", "--", "sh", "-c", script) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            proc.send_signal(sig)
            assert proc.wait(10) == code


def test_heartbeat_once_publishes_one_beat(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    h = ppz_home
    h.login(ppz_server.url, ppz_server.add_key("acme"))
    ok(h, "source", "create", "carol")  # a message source, the current handle
    out = h.ppz("heartbeat", "carol", "--once", "--interval=500ms", env={"PPZ_AGENT_HARNESS": "codex",
                                                                         "PPZ_AGENT_MODEL": "gpt-5"})
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    [entry] = who(h)
    assert entry["handle"] == "carol"
    beat = entry["heartbeat"]
    assert (beat["seq"], beat["interval_sec"], beat["harness"], beat["harness_source"], beat["model"],
            beat["agent_state"], beat["child_pid"]) == (1, 1, "codex", "env", "gpt-5", "", 0)
    out = ok(h, "reread", "carol.heartbeat", "--limit=0", "--json")
    assert [json.loads(json.loads(line)["payload"]) for line in out.stdout.splitlines()] == [beat]
    # the source was promoted to a pty source; it stays the current handle
    [carol] = h.call("List", {"patterns": ["carol.*"]})["sources"]
    assert carol["kind"] == "pty" and "heartbeat" in carol["pipes"]
    assert ok(h, "get", "handle").stdout == "carol\n"

    beat_once(h, "agent-e")  # no harness anywhere
    beat = next(e["heartbeat"] for e in who(h) if e["handle"] == "agent-e")
    assert (beat["harness"], beat["harness_source"], beat["model"], beat["interval_sec"]) == ("", "", "", 60)

