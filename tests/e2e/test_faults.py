"""Fault tolerance end to end (issue: performance, fault tolerance and scale-out, part 2)."""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from daemonfixture import DaemonHome, setup_world, wait_for
from serverfixture import ServerProcess

from ppz import errors, home, ipc


def follower(h: DaemonHome, handle: str, session: str, got: list[int], stop: threading.Event) -> None:
    """``ppz read --tail``: follow, redial 200 ms after a non-error end of stream."""
    while not stop.is_set():
        try:
            for ev in ipc.stream("Read", {"handle": handle, "channel": "inbox", "session": session,
                                          "follow": True}, path=str(h.home.socket)):
                if "msg" in ev:
                    got.append(int(ev["msg"]["payload"]))
                if stop.is_set():
                    return
        except errors.PpzError:
            time.sleep(0.8)
        time.sleep(0.2)


def sender(h: DaemonHome, handle: str, base: int, count: int, acked: list[int], failed: list[str],
           stop: threading.Event, pause: float) -> None:
    for i in range(count):
        if stop.is_set():
            return
        n = base + i
        try:
            h.call("Send", {"handle": handle, "channel": "inbox", "payload": str(n), "session": f"s{base}"},
                   timeout=15)
            acked.append(n)
        except errors.PpzError as exc:
            failed.append(exc.code)
        time.sleep(pause)


def check_exactly_once(acked: list[int], got: list[int]) -> None:
    assert len(got) == len(set(got)), "a message was delivered twice"
    missing = set(acked) - set(got)
    assert not missing, f"{len(missing)} acknowledged messages never arrived"


@pytest.mark.timeout(240)
def test_rotation_under_load(server_factory: Any, ppz_home: DaemonHome) -> None:
    setup_world(server_factory(PPZ_NATS_JWT_TTL="5s"), ppz_home, handles=("bob",))
    h = ppz_home
    # About 9 000 messages in 60 s: lift the inbox's 5 000-message retention, or a follower that
    # falls behind loses the oldest to retention (which is not what this test is about).
    h.call("PipeSet", {"handle": "bob", "name": "inbox", "max_msgs": -1, "max_bytes": -1})
    stop = threading.Event()
    # The followers stop only after the checks: one that stopped with the senders would return
    # on its next message and miss the sends still in flight (and whatever it had not yet got).
    stop_followers = threading.Event()
    received: dict[str, list[int]] = defaultdict(list)
    followers = [threading.Thread(target=follower, args=(h, "bob", f"f{i}", received[f"f{i}"], stop_followers),
                                  daemon=True) for i in range(4)]
    for t in followers:
        t.start()
    time.sleep(1.0)
    acked: list[int] = []
    failed: list[str] = []
    senders = [threading.Thread(target=sender, args=(h, "bob", k * 100_000, 100_000, acked, failed, stop, 0.05),
                                daemon=True) for k in range(8)]
    for t in senders:
        t.start()
    time.sleep(60)
    stop.set()
    for t in senders:
        t.join(20)
    try:
        assert failed == [], failed[:10]
        assert len(acked) > 1000
        for name, got in received.items():
            wait_for(lambda got=got: set(acked) <= set(got), timeout=90, what=f"{name} to catch up")
            check_exactly_once(acked, got)
    finally:
        stop_followers.set()
    diag = h.call("Diag", {"since_unix": int(time.time()) - 600})
    assert not [p for p in diag["patterns"] if p["name"] == "post-rotation-auth-violation"]
    kinds = [e["type"] for e in diag["nats_events"]]
    assert kinds.count("rotate") >= 8


@pytest.mark.timeout(180)
def test_nats_kill_under_load(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    setup_world(ppz_server, ppz_home, handles=("bob",))
    h = ppz_home
    stop = threading.Event()
    got: list[int] = []
    threading.Thread(target=follower, args=(h, "bob", "f", got, stop), daemon=True).start()
    time.sleep(0.5)
    acked: list[int] = []
    outcomes: list[tuple[float, float, str]] = []
    restarted_at: list[float] = []

    def chaos() -> None:
        time.sleep(3)
        old = ppz_server.kill_nats()
        ppz_server.wait_nats_restarted(old)
        restarted_at.append(time.monotonic())

    threading.Thread(target=chaos, daemon=True).start()
    end = time.monotonic() + 20
    n = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            h.call("Send", {"handle": "bob", "channel": "inbox", "payload": str(n), "session": "s"}, timeout=30)
            acked.append(n)
            outcomes.append((t0, time.monotonic(), "ok"))
        except errors.PpzError as exc:
            outcomes.append((t0, time.monotonic(), exc.code))
        n += 1
        time.sleep(0.02)
    assert restarted_at, "nats-server did not come back"
    for start, finish, code in outcomes:
        assert finish - start < 12, "a send hung past its deadline"
        assert code in ("ok", "E_NATS_UNREACHABLE", "E_DELIVERY_UNCONFIRMED"), code
    assert any(code == "E_NATS_UNREACHABLE" for _, _, code in outcomes)
    # recovered within 5 s of the restart, with no command
    later = [(s, code) for s, _, code in outcomes if s > restarted_at[0] + 5]
    assert later and all(code == "ok" for _, code in later), later[:5]
    wait_for(lambda: set(acked) <= set(got), timeout=20, what="follower to catch up")
    stop.set()
    check_exactly_once(acked, got)


@pytest.mark.timeout(180)
def test_daemon_sigkill_during_sends(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    world = setup_world(ppz_server, ppz_home, handles=("bob",))
    h = ppz_home
    creds_before = json.loads(h.home.credentials.read_text())
    h.call("Switch", {"handle": "bob", "session": "s"})
    for i in range(20):
        h.call("Send", {"handle": "bob", "channel": "inbox", "payload": f"pre{i}", "session": "s"})
    assert len(list(ipc.stream("Read", {"handle": "bob", "channel": "inbox", "session": "reader"},
                               path=str(h.home.socket)))) == 20
    acked: list[int] = []
    failed: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=sender, args=(h, "bob", 0, 1000, acked, failed, stop, 0.0), daemon=True)
    t.start()
    wait_for(lambda: len(acked) > 100, timeout=30, what="sends in flight")
    os.kill(h.pid(), signal.SIGKILL)
    t.join(30)
    # Every state file parses after the crash.
    assert home.read_credentials(h.home.credentials) is not None
    assert json.loads(h.home.credentials.read_text()) == creds_before | {
        "nats_user_jwt": json.loads(h.home.credentials.read_text())["nats_user_jwt"],
        "nats_user_seed": json.loads(h.home.credentials.read_text())["nats_user_seed"]}
    home.load_state(h.home)
    for f in h.home.cursors_dir.glob("*.json"):
        json.loads(f.read_text())
    out = h.ppz("daemon", "start")
    assert out.returncode == 0, out.stderr
    h.wait_connected()
    # The reader's cursor resumes: nothing read before is repeated, everything acked since arrives.
    msgs = [e["msg"]["payload"] for e in ipc.stream("Read", {"handle": "bob", "channel": "inbox",
                                                              "session": "reader"}, path=str(h.home.socket))]
    assert not [m for m in msgs if m.startswith("pre")]
    numbers = [int(m) for m in msgs]
    assert len(numbers) == len(set(numbers))
    assert set(acked) <= set(numbers)
    del world


@pytest.mark.timeout(120)
def test_server_down_messaging_continues(server_factory: Any, ppz_home: DaemonHome) -> None:
    server = server_factory(PPZ_NATS_JWT_TTL="20s")
    setup_world(server, ppz_home, handles=("bob",))
    h = ppz_home
    h.call("Send", {"handle": "bob", "channel": "inbox", "payload": "warm", "session": "s"})
    # Stop only the HTTP side: keep its nats-server child running by suspending the server process.
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for i in range(5):
            h.call("Send", {"handle": "bob", "channel": "inbox", "payload": f"m{i}", "session": "s"})
        wait_for(lambda: any(e["type"] == "refresh_error" for e in h.events()), timeout=30, what="refresh_error")
        time.sleep(6)
        errors_seen = [e for e in h.events() if e["type"] == "refresh_error"]
        reasons = defaultdict(int)
        for e in errors_seen:
            reasons[e["reason"]] += 1
        assert all(count == 1 for count in reasons.values()), reasons
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    before = h.status()["last_token_refresh_at"]
    wait_for(lambda: h.status()["last_token_refresh_at"] != before, timeout=30, what="a refresh after recovery")
    h.call("Send", {"handle": "bob", "channel": "inbox", "payload": "after", "session": "s"})


def _fuzz_requests(rng: random.Random) -> list[bytes]:
    from ppz.verbs import SCHEMAS

    values: list[Any] = [None, True, 0, -1, 2**70, 1.5, "", "x" * 100, [], ["a"], [1], {}, {"a": 1}]
    out: list[bytes] = []
    for _ in range(2000):
        kind = rng.randrange(6)
        if kind == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\n")
        elif kind == 1:
            line = json.dumps({"method": rng.choice(list(SCHEMAS)), "params": {"session": "s"}})
            out.append(line[: rng.randrange(1, len(line))].encode() + b"\n")
        else:
            verb = rng.choice([v for v in SCHEMAS if v not in ("Login", "Logout", "Read", "ListWatch")])
            params = {f: rng.choice(values) for f in SCHEMAS[verb] if rng.random() < 0.5}
            out.append(json.dumps({"method": verb, "params": params}).encode() + b"\n")
    return out


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.timeout(300)
def test_ipc_fuzzing_keeps_daemon_alive_and_memory_flat(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    setup_world(ppz_server, ppz_home, handles=("bob",))
    h = ppz_home
    pid = h.pid()
    rng = random.Random(1234)
    requests = _fuzz_requests(rng)
    path = str(h.home.socket)

    def one(data: bytes) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(20)
            s.connect(path)
            try:
                s.sendall(data)
                reply = s.makefile("rb").readline()
            except OSError:
                return
            if reply:
                obj = json.loads(reply)
                assert "result" in obj or "error" in obj

    for data in requests[:500]:  # warm up caches and thread pools before measuring
        one(data)
    base = rss_kb(pid)
    for i in range(10_000):
        one(requests[i % len(requests)])
        if i % 1000 == 0:
            one(b"y" * (1024 * 1024 + 10))
    grown = rss_kb(pid) - base
    assert h.status()["logged_in"] is True
    assert grown < 20 * 1024, f"RSS grew by {grown} kB"


def test_other_local_user_cannot_connect_or_read(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    setup_world(ppz_server, ppz_home, handles=("bob",))
    nobody = pwd.getpwnam("nobody")
    code = (
        "import socket, sys, os\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(ppz_home.home.socket)!r})\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
        "try:\n"
        f"    open({str(ppz_home.home.credentials)!r}).read()\n"
        "    print('read')\n"
        "except OSError as e:\n"
        "    print('denied', e.errno)\n"
    )

    def demote() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    # The test venv's interpreter may live where nobody cannot reach it: use the system one.
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
    if python is None:
        pytest.skip("no system python3 for the unprivileged client")
    out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=30,
                         preexec_fn=demote, cwd="/")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0].startswith("refused"), out.stdout
    assert lines[1].startswith("denied"), out.stdout
