"""Process lifecycle of ppz-server: signals, restarts, the supervised nats-server child, the data
directory (spec/server-api.md §2, §5, §6)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from server_testkit import ApiClient, assert_error, connect_exchanged, stream_config, stream_names
from serverfixture import ServerProcess, nats_server_pids, pid_alive, wait_until

from ppz.server import natsjwt


def short(acct: str) -> str:
    return acct.replace("-", "")[:8]


async def _publish(server: ServerProcess, reply: dict[str, str], subject: str, data: bytes) -> int:
    nc = await connect_exchanged(server, reply)
    try:
        return int((await nc.jetstream().publish(subject, data)).seq)
    finally:
        await nc.close()


async def _read_all(server: ServerProcess, reply: dict[str, str], subject: str, count: int) -> list[bytes]:
    nc = await connect_exchanged(server, reply)
    try:
        sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        return [(await sub.next_msg(timeout=5)).data for _ in range(count)]
    finally:
        await nc.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_server_and_nats_child(ppz_server: ServerProcess, sig: signal.Signals) -> None:
    nats_pid = ppz_server.nats_pid()
    assert pid_alive(nats_pid)
    assert ppz_server.proc is not None
    ppz_server.proc.send_signal(sig)
    assert ppz_server.proc.wait(15) == 0
    wait_until(lambda: not pid_alive(nats_pid), 5, message="nats-server exit")
    assert nats_server_pids(ppz_server.data_dir) == []
    assert not ppz_server.nats_pid_path.exists()


def test_hard_killed_server_takes_its_child_along(ppz_server: ServerProcess) -> None:
    nats_pid = ppz_server.nats_pid()
    assert ppz_server.proc is not None
    ppz_server.proc.kill()
    ppz_server.proc.wait(10)
    wait_until(lambda: not pid_alive(nats_pid), 5, message="nats-server to die with its parent")


@pytest.mark.parametrize("delay", [0.0, 0.004, 0.01, 0.02, 0.05])
def test_sigterm_during_startup_leaves_no_orphan(tmp_path: Path, delay: float) -> None:
    server = ServerProcess(tmp_path / "data")
    proc = server.spawn()
    try:
        wait_until(server.nats_pid_path.exists, 20, interval=0.001, message="nats-server spawn")
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (0, -signal.SIGTERM)
        wait_until(lambda: nats_server_pids(server.data_dir) == [], 5, message="no orphan nats-server")
    finally:
        server.kill()


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_sigterm_at_any_early_moment_leaves_no_orphan(tmp_path: Path, delay: float) -> None:
    server = ServerProcess(tmp_path / "data")
    proc = server.spawn()
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        wait_until(lambda: nats_server_pids(server.data_dir) == [], 5, message="no orphan nats-server")
    finally:
        server.kill()


@pytest.mark.parametrize("taken", ["http", "nats"])
def test_startup_failure_leaves_no_orphan(tmp_path: Path, taken: str) -> None:
    """A port is taken. With the HTTP port, the NATS child was already started half-way and
    must be stopped; with the NATS port, the child never gets ready."""
    server = ServerProcess(tmp_path / "data")
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port is reserved (serverfixture)
        blocker.bind(("127.0.0.1", server.http_port if taken == "http" else server.nats_port))
        blocker.listen()
        proc = server.spawn()
        try:
            assert proc.wait(20) == 1
        finally:
            server.kill()
    assert not server.nats_pid_path.exists()
    assert nats_server_pids(server.data_dir) == []
    assert "ppz-server failed" in server.log_text()


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    for env in ({"PPZ_NATS_JWT_TTL": "0s"}, {"PPZ_NATS_JWT_TTL": "soon"}, {"PPZ_HTTP_ADDR": "nowhere"}):
        server = ServerProcess(tmp_path / "data", env=env)
        proc = server.spawn()
        assert proc.wait(20) == 2
        assert nats_server_pids(server.data_dir) == []


def test_killed_nats_child_is_restarted_and_everything_recovers(ppz_server: ServerProcess) -> None:
    client = ApiClient(ppz_server.url, ppz_server.add_key())
    created = client.post("/api/v1/sources", json={"handle": "bob"}).json()
    before = client.exchange().json()
    asyncio.run(_publish(ppz_server, before, created["subject"], b"before"))

    for round_ in range(2):
        old_pid = ppz_server.kill_nats()
        new_pid = ppz_server.wait_nats_restarted(old_pid, timeout=5)
        assert new_pid != old_pid
        assert ppz_server.nats_pid() == new_pid

        # The server's own connections reconnect: stream management works with no command.
        handle = f"after{round_}"
        resp = wait_for_status(lambda h=handle: client.post("/api/v1/sources", json={"handle": h}), 201)
        assert resp.json()["handle"] == handle  # type: ignore[attr-defined]
        fresh = client.exchange().json()
        asyncio.run(_publish(ppz_server, fresh, created["subject"], f"after{round_}".encode()))

    got = asyncio.run(_read_all(ppz_server, client.exchange().json(), created["subject"], 3))
    assert got == [b"before", b"after0", b"after1"]
    # The old credential is still valid against the restarted child.
    asyncio.run(_publish(ppz_server, before, created["subject"], b"old-cred"))


def wait_for_status(call: Callable[[], object], status: int, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        resp = call()
        if getattr(resp, "status_code", None) == status or time.monotonic() > deadline:
            assert getattr(resp, "status_code", None) == status, getattr(resp, "text", resp)
            return resp
        time.sleep(0.05)


def test_restart_keeps_accounts_keys_sources_streams_and_credentials(ppz_server: ServerProcess) -> None:
    key = ppz_server.add_key("acme", "admin")
    client = ApiClient(ppz_server.url, key)
    created = client.post(
        "/api/v1/sources", json={"handle": "bob", "manifold": "team-a", "kind": "pty"}
    ).json()
    client.post("/api/v1/sources/bob/pipes", json={"name": "notes", "max_msgs": 9})
    client.post("/api/v1/pipes", json={"name": "room", "ttl_seconds": 120})
    reply = client.exchange().json()
    asyncio.run(_publish(ppz_server, reply, created["subject"], b"kept"))
    sources_before = client.get("/api/v1/sources").json()
    pipes_before = client.get("/api/v1/pipes").json()
    trust_before = (ppz_server.data_dir / "trust.json").read_bytes()
    streams_before = stream_names(ppz_server, client)

    ppz_server.restart()

    assert (ppz_server.data_dir / "trust.json").read_bytes() == trust_before
    # The credential minted before the restart still connects (same operator, same account keys).
    assert asyncio.run(_read_all(ppz_server, reply, created["subject"], 1)) == [b"kept"]
    assert client.get("/api/v1/sources").json() == sources_before
    assert client.get("/api/v1/pipes").json() == pipes_before
    assert stream_names(ppz_server, client) == streams_before
    again = client.exchange().json()
    assert again["account_id"] == reply["account_id"]
    assert natsjwt.decode(again["nats_user_jwt"])["iss"] == natsjwt.decode(reply["nats_user_jwt"])["iss"]
    assert_error(client.post("/api/v1/sources", json={"handle": "bob"}), 409, "E_SOURCE_TAKEN")


def test_lost_jetstream_store_heals_on_first_use(ppz_server: ServerProcess) -> None:
    client = ApiClient(ppz_server.url, ppz_server.add_key())
    client.post("/api/v1/sources", json={"handle": "bob", "kind": "pty"})
    client.post("/api/v1/sources/bob/pipes", json={"name": "notes", "max_msgs": 9})
    client.patch("/api/v1/sources/bob/pipes/inbox", json={"ttl_seconds": 60})
    client.post("/api/v1/pipes", json={"name": "room", "manifold": "m"})
    before = stream_names(ppz_server, client)
    assert len(before) == 8
    ppz_server.stop()
    shutil.rmtree(ppz_server.data_dir / "jetstream")
    ppz_server.start()
    assert client.get("/api/v1/sources").status_code == 200
    assert stream_names(ppz_server, client) == before
    acct = client.exchange().json()["account_id"]
    notes = stream_config(ppz_server, client, f"pipe_{short(acct)}_bob_notes")
    inbox = stream_config(ppz_server, client, f"pipe_{short(acct)}_bob_inbox")
    assert notes is not None and notes["max_msgs"] == 9
    assert inbox is not None and inbox["max_age"] == 60 * 10**9


def test_lost_trust_is_reminted_and_accounts_are_reissued(ppz_server: ServerProcess) -> None:
    """A stored account JWT not signed by the current operator is never pushed as is: it is
    re-issued for the same account and signing key."""
    client = ApiClient(ppz_server.url, ppz_server.add_key())
    client.post("/api/v1/sources", json={"handle": "bob"})
    old_operator = json.loads((ppz_server.data_dir / "trust.json").read_text())["operator_seed"]
    ppz_server.stop()
    (ppz_server.data_dir / "trust.json").unlink()
    ppz_server.start()
    new_operator = json.loads((ppz_server.data_dir / "trust.json").read_text())["operator_seed"]
    assert new_operator != old_operator
    reply = client.exchange().json()
    created = client.get("/api/v1/sources/bob").json()
    assert created["handle"] == "bob"
    asyncio.run(_publish(ppz_server, reply, f"{reply['account_id']}.bob.inbox", b"works"))
    assert "re-issuing" in ppz_server.log_text()


def test_data_directory_modes_and_trust_file(ppz_server: ServerProcess) -> None:
    data = ppz_server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "trust.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "ppz-server.db").stat().st_mode) == 0o600
    trust = json.loads((data / "trust.json").read_text())
    operator_key = natsjwt.public_key(trust["operator_seed"])
    sys_key = natsjwt.public_key(trust["system_account_seed"])
    assert operator_key.startswith("O") and sys_key.startswith("A")
    operator = natsjwt.verify(trust["operator_jwt"], operator_key)
    assert operator["name"] == "ppz-operator"
    assert operator["nats"]["system_account"] == sys_key
    sys_account = natsjwt.verify(trust["system_account_jwt"], operator_key)
    assert (sys_account["name"], sys_account["sub"]) == ("ppz-sys", sys_key)
    sys_user = natsjwt.verify(trust["system_user_jwt"], sys_key)
    assert sys_user["sub"] == natsjwt.public_key(trust["system_user_seed"])
    config = (data / "nats-server.conf").read_text()
    assert "max_control_line: 32768" in config
    assert "type: full" in config and "allow_delete: false" in config
    assert f'system_account: "{sys_key}"' in config
    assert f'listen: "{ppz_server.nats_addr}"' in config
    assert str(data / "jetstream") in config


def test_existing_wide_data_dir_is_tightened(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    server = ServerProcess(tmp_path / "wide")
    server.data_dir.mkdir(mode=0o755)
    server.data_dir.chmod(0o755)
    server.start()
    try:
        assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    finally:
        server.close()


def test_plaintext_key_is_never_stored(ppz_server: ServerProcess) -> None:
    key = ppz_server.add_key()
    client = ApiClient(ppz_server.url, key)
    assert client.exchange().status_code == 200
    assert client.post("/api/v1/sources", json={"handle": "alice"}).status_code == 201

    def stored_bytes() -> bytes:
        blob = b""
        for path in ppz_server.data_dir.rglob("*"):
            if path.is_file():
                blob += path.read_bytes()
        return blob

    for blob in (stored_bytes(), (ppz_server.stop(), stored_bytes())[1]):
        assert key.encode() not in blob
        assert key[4:].encode() not in blob
    db = (ppz_server.data_dir / "ppz-server.db").read_bytes()
    assert key[4:12].encode() in db
    assert b"$argon2id$v=19$m=65536,t=1,p=4$" in db


def test_add_key_output_and_validation(tmp_path: Path) -> None:
    env = {**os.environ, "PPZ_SERVER_DATA": str(tmp_path / "data")}

    def add_key(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ppz.server.cli", "add-key", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = add_key("--account=acme")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("\n") == 1
    key = ok.stdout.strip()
    assert len(key) == 30 and key.startswith("ppz_") and all(c in "0123456789abcdef" for c in key[4:])
    assert add_key("--account=acme", "--user=bob").stdout.strip() != key
    for bad in (["--account=Bad Name"], ["--account=acme", "--user=x_y"], []):
        result = add_key(*bad)
        assert result.returncode == 2
        assert result.stdout == ""
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
