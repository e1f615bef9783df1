"""Login, logout, status, reload and connection recovery end to end (issue 3)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import nats
import pytest
from daemonfixture import DaemonHome, wait_for
from serverfixture import ServerProcess

from ppz.envelope import new_envelope
from ppz.serverclient import ServerClient


def snapshot(h: DaemonHome) -> dict[str, Any]:
    """What must not change when a login fails: files and the daemon's view."""
    files = {}
    for name in ("credentials", "current.json", "namespace.json"):
        path = h.root / name
        files[name] = path.read_bytes() if path.exists() else None
    status = h.status()
    status.pop("last_token_refresh_at", None)
    status.pop("nats_state_since", None)
    return {"files": files, "status": status}


def test_login_status_logout(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    key = ppz_server.add_key("acme")
    out = ppz_home.ppz("login", ppz_server.url, "--apikey", key)
    assert out.returncode == 0, out.stderr
    pid = ppz_home.pid()
    lines = out.stdout.splitlines()
    assert lines[0] == f"daemon started pid={pid}"
    status = ppz_home.status()
    assert lines[1] == f"logged in url={ppz_server.url} key={key[4:12]} account={status['account_id']}"
    ppz_home.wait_connected()
    out = ppz_home.ppz("status")
    assert out.returncode == 0
    text = out.stdout.splitlines()
    assert text[0] == f"daemon: logged in (pid={pid}), 0.3.0"
    assert text[2] == f"server: {ppz_server.url}"
    assert text[3] == "account: acme"
    assert text[4].startswith("nats: connected")
    assert oct(os.stat(ppz_home.home.credentials).st_mode & 0o777) == "0o600"
    creds = json.loads(ppz_home.home.credentials.read_text())
    assert creds["api_key"] == key and creds["account_name"] == "acme"
    assert "nats_url" not in creds

    out = ppz_home.ppz("logout")
    assert (out.returncode, out.stdout) == (0, "logged out\n")
    out = ppz_home.ppz("status")
    assert out.stdout.splitlines()[0] == f"daemon: not logged in (pid={pid}), 0.3.0"
    assert not ppz_home.home.credentials.exists()
    assert "nats_state" not in ppz_home.status()
    assert ppz_home.ppz("logout").returncode == 0


def test_failed_logins_change_nothing(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                      server_factory: Any) -> None:
    key = ppz_server.add_key("acme")
    ppz_home.login(ppz_server.url, key)
    ppz_home.wait_connected()
    before = snapshot(ppz_home)
    nc_before = ppz_home.status()

    out = ppz_home.ppz("login", ppz_server.url, "--apikey", "ppz_" + "0" * 26)
    assert out.returncode == 12 and out.stdout == ""
    assert out.stderr == "error: E_INVALID_API_KEY: invalid api key\n"
    assert snapshot(ppz_home) == before

    down = ServerProcess(ppz_server.data_dir.parent / "nowhere")  # never started: nothing listens
    out = ppz_home.ppz("login", down.url, "--apikey", key)
    assert out.returncode == 18 and out.stdout == ""
    assert out.stderr == "error: E_SERVER_UNREACHABLE: server unreachable\n"
    assert snapshot(ppz_home) == before
    assert ppz_home.status()["nats_state"] == nc_before["nats_state"]
    swaps = [e for e in ppz_home.events() if e["type"] == "swap"]
    assert len(swaps) == 1


def test_login_requires_apikey(ppz_home: DaemonHome) -> None:
    out = ppz_home.ppz("login", "http://127.0.0.1:1")
    assert out.returncode == 2
    assert "--apikey" in out.stderr
    assert not ppz_home.home.socket.exists()


def test_credentials_deleted_logs_out_within_a_second(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    ppz_home.wait_connected()
    ppz_home.home.credentials.unlink()
    start = time.monotonic()
    wait_for(lambda: ppz_home.status()["logged_in"] is False, timeout=1.0, interval=0.02,
             what="logged out")
    assert time.monotonic() - start < 1.0
    wait_for(lambda: any(e["type"] == "swap" and e.get("caller") == "watchState-creds-gone"
                         for e in ppz_home.events()), timeout=2, what="swap to nothing")
    assert "nats_state" not in ppz_home.status()


def test_truncated_credentials_log_out(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    ppz_home.home.credentials.write_text("  \n")
    wait_for(lambda: ppz_home.status()["logged_in"] is False, timeout=2, what="logged out")


def test_corrupt_credentials_are_not_a_logout(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    ppz_home.wait_connected()
    good = ppz_home.home.credentials.read_bytes()
    # Written atomically: a plain write passes through "empty" (= logged out) on the way.
    tmp = ppz_home.root / "credentials.edit"
    tmp.write_text("[1, 2, 3]")
    tmp.replace(ppz_home.home.credentials)
    time.sleep(0.3)
    status = ppz_home.status()
    assert status["logged_in"] is True and status["nats_state"] == "connected"
    ppz_home.home.credentials.write_bytes(good)


def test_sighup_picks_up_current_json(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    assert "current" not in ppz_home.status()
    ppz_home.home.namespace_json.write_text(json.dumps({"test-session": "team-a"}))
    os.kill(ppz_home.pid(), signal.SIGHUP)
    wait_for(lambda: ppz_home.status().get("current_namespace") == "team-a", timeout=2, what="namespace")
    # current.json is polled: an edit is picked up without a signal.
    ppz_home.home.current_json.write_text(json.dumps({"test-session": "alice"}))
    wait_for(lambda: ppz_home.status().get("current") == "alice", timeout=2, what="current handle")


def test_daemon_restart_reconnects_by_itself(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    ppz_home.wait_connected()
    out = ppz_home.ppz("daemon", "restart")
    assert out.returncode == 0, out.stderr
    status = ppz_home.wait_connected()
    assert status["logged_in"] is True


def test_logged_out_daemon_never_dials(ppz_home: DaemonHome) -> None:
    ppz_home.ppz("daemon", "start")
    time.sleep(0.5)
    assert [e["type"] for e in ppz_home.events()] == ["daemon_start"]


def test_nats_child_killed_and_restarted(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    ppz_home.wait_connected()
    old = ppz_server.kill_nats()
    ppz_server.wait_nats_restarted(old)
    wait_for(lambda: any(e["type"] == "disconnect" for e in ppz_home.events()), timeout=5, what="disconnect")
    ppz_home.wait_connected(timeout=20)


async def _publish_beats(server: ServerProcess, key: str, subject: str, stop: asyncio.Event,
                         count: list[int]) -> None:
    """Publish a beat every 250 ms, each short-lived credential used for one second only."""
    client = ServerClient()
    while not stop.is_set():
        reply = await asyncio.to_thread(client.exchange, server.url, key)
        jwt, seed = reply.nats_user_jwt, reply.nats_user_seed
        nc = await nats.connect(server.nats_url, user_jwt_cb=lambda jwt=jwt: jwt.encode(),
                                signature_cb=lambda nonce, seed=seed: _sign(seed, nonce))
        try:
            for _ in range(4):
                env = new_envelope(sender="probe", payload=json.dumps({"seq": count[0] + 1}))
                await nc.publish(subject, env.encode())
                await nc.flush()
                count[0] += 1
                try:
                    await asyncio.wait_for(stop.wait(), 0.25)
                except TimeoutError:
                    pass
        finally:
            await nc.close()


def _sign(seed: str, nonce: str) -> bytes:
    import base64

    import nkeys

    return base64.b64encode(nkeys.from_seed(bytearray(seed.encode())).sign(nonce.encode()))


@pytest.mark.timeout(90)
def test_rotations_keep_the_connection_and_its_subscriptions(server_factory: Any, ppz_home: DaemonHome) -> None:
    server = server_factory(PPZ_NATS_JWT_TTL="6s")
    key = server.add_key("acme")
    ppz_home.login(server.url, key)
    ppz_home.wait_connected()
    first_refresh = ppz_home.status()["last_token_refresh_at"]
    # A separate client with its own long-lived credential publishes presence beats throughout;
    # the daemon's presence subscription must keep receiving them across rotations.
    acct = ppz_home.status()["account_id"]
    seen: list[str] = []
    stop = asyncio.Event()
    count = [0]

    async def scenario() -> None:
        task = asyncio.create_task(_publish_beats(server, key, f"{acct}._presence.probe", stop, count))
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            entries = await asyncio.to_thread(lambda: ppz_home.call("Who", {})["entries"])
            if entries:
                seen.append(entries[0]["payload"])
        stop.set()
        await task

    asyncio.run(scenario())
    events = ppz_home.events()
    kinds = [e["type"] for e in events]
    assert kinds.count("rotate") >= 3, kinds
    first_connect = kinds.index("connect")
    assert "swap" not in kinds[first_connect + 1:], kinds
    assert "closed" not in kinds, kinds
    assert ppz_home.status()["last_token_refresh_at"] > first_refresh
    # Beats kept arriving until the end: the payloads seen late in the run are fresh ones.
    assert len(set(seen)) >= 20, seen
    assert json.loads(seen[-1])["seq"] > count[0] - 10


def test_status_login_check_invalid_after_key_revoked(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    ppz_home.login(ppz_server.url, ppz_server.add_key("acme"))
    creds = json.loads(ppz_home.home.credentials.read_text())
    creds["api_key"] = "ppz_" + "1" * 26
    # Same url and account, another (unknown) key: an identity change on disk.
    tmp = ppz_home.root / "credentials.edit"
    tmp.write_text(json.dumps(creds))
    tmp.replace(ppz_home.home.credentials)
    wait_for(lambda: ppz_home.status().get("login_check") == "invalid", timeout=5, what="login check invalid")
    out = ppz_home.ppz("status")
    assert out.stdout.splitlines() == [
        f"daemon: authentication error (pid={ppz_home.pid()}), 0.3.0",
        f"server: {ppz_server.url}",
        "hint: run 'ppz login URL --apikey KEY' to refresh",
    ]
