"""Key management: ``ppz-server keys list|revoke``; a revoked key fails its next use (exchange
and bearer routes, even right after a cached success) and a daemon using it sees a 401 and
marks its login invalid (spec/daemon.md §3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemonfixture import DaemonHome, wait_for
from server_testkit import ApiClient, assert_error
from serverfixture import ServerProcess

from ppz.server.apikeys import hash_key
from ppz.server.store import Store


def keys(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ppz.server.cli", "keys", *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_list_shows_prefix_account_user_never_the_key(shared_server: ServerProcess) -> None:
    k1 = shared_server.add_key("klist-a", "alice")
    k2 = shared_server.add_key("klist-b", "bob")
    out = keys(shared_server, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["PREFIX", "ACCOUNT", "USER", "CREATED", "REVOKED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[k1[4:12]][1:3] == ["klist-a", "alice"]
    assert rows[k2[4:12]][1:3] == ["klist-b", "bob"]
    assert rows[k1[4:12]][4] == "-"
    assert k1 not in out.stdout and k1[12:] not in out.stdout and "argon2" not in out.stdout

    only_a = keys(shared_server, "list", "--account=klist-a").stdout.splitlines()
    assert [line.split()[0] for line in only_a[1:]] == [k1[4:12]]
    assert keys(shared_server, "list", "--account=nobody").returncode == 1


def test_revoked_key_fails_its_next_exchange_and_request(shared_server: ServerProcess) -> None:
    key = shared_server.add_key("krevoke", "admin")
    other = shared_server.add_key("krevoke", "other")
    client = ApiClient(shared_server.url, key)
    assert client.exchange().status_code == 200
    assert client.get("/api/v1/sources").status_code == 200  # now in the verification cache

    out = keys(shared_server, "revoke", "ppz_" + key[4:12])
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"revoked key {key[4:12]} (account krevoke, user admin)\n"

    assert_error(client.exchange(), 401, "E_INVALID_API_KEY", "invalid api key")
    assert_error(client.get("/api/v1/sources"), 401, "E_INVALID_API_KEY", "invalid api key")
    assert ApiClient(shared_server.url, other).get("/api/v1/sources").status_code == 200
    listed = keys(shared_server, "list", "--account=krevoke").stdout.splitlines()
    revoked = next(line.split() for line in listed if line.startswith(key[4:12]))
    assert revoked[4].endswith("Z")

    again = keys(shared_server, "revoke", key[4:12])
    assert again.returncode == 1 and "no active key" in again.stderr


def test_revoke_refuses_bad_unknown_and_ambiguous_prefixes(shared_server: ServerProcess) -> None:
    assert keys(shared_server, "revoke", "xyz").returncode == 2
    assert keys(shared_server, "revoke", "ffffffff").returncode == 1
    # Two keys sharing a prefix in two accounts: the operator must name the account.
    store = Store(shared_server.data_dir / "ppz-server.db")
    try:
        for account in ("kamb-a", "kamb-b"):
            row = store.ensure_account(account, "2026-01-01T00:00:00Z")
            store.add_api_key(account_id=row.id, principal="admin", prefix="abcdef01",
                              hash=hash_key("ppz_abcdef01" + "0" * 18), now="2026-01-01T00:00:00Z")
    finally:
        store.close()
    ambiguous = keys(shared_server, "revoke", "abcdef01")
    assert ambiguous.returncode == 1 and "--account" in ambiguous.stderr
    assert keys(shared_server, "revoke", "abcdef01", "--account=kamb-b").returncode == 0
    listed = keys(shared_server, "list").stdout.splitlines()
    states = {line.split()[1]: line.split()[4] for line in listed if line.startswith("abcdef01")}
    assert states["kamb-a"] == "-" and states["kamb-b"] != "-"


def test_daemon_sees_the_revocation_at_its_next_refresh(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", env={"PPZ_NATS_JWT_TTL": "3s"}).start()
    daemon = DaemonHome(tmp_path / "home")
    try:
        key = server.add_key("kdaemon")
        daemon.login(server.url, key)
        assert daemon.ppz("source", "create", "bob").returncode == 0
        assert daemon.ppz("send", "bob", "before").returncode == 0
        assert daemon.status().get("login_check") != "invalid"
        assert keys(server, "revoke", key[4:12]).returncode == 0
        wait_for(lambda: daemon.status().get("login_check") == "invalid", timeout=15, what="login check invalid")
        out = daemon.ppz("status")
        assert out.stdout.splitlines()[0].startswith("daemon: authentication error")
    finally:
        daemon.kill()
        server.close()
