"""Unit tests of the server's pure parts and its store: API keys, settings, stream
configuration, request decoding helpers, the SQLite store's collision rules."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from pathlib import Path

import pytest

from ppz import errors
from ppz.errors import PpzError
from ppz.server import apikeys, natsproc, service, settings, streams, trust, web
from ppz.server.store import Store

# --- API keys ---------------------------------------------------------------------------------


def test_key_format_and_prefix() -> None:
    keys = {apikeys.new_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert re.fullmatch(r"ppz_[0-9a-f]{26}", key)
        assert apikeys.key_prefix(key) == key[4:12]


def test_key_hash_is_argon2id_phc() -> None:
    phc = apikeys.hash_key("ppz_0123456789abcdef0123456789")
    m = re.fullmatch(r"\$argon2id\$v=19\$m=65536,t=1,p=4\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)", phc)
    assert m, phc
    assert len(m.group(1)) == 22  # 16-byte salt
    assert len(m.group(2)) == 43  # 32-byte tag
    assert apikeys.hash_key("ppz_0123456789abcdef0123456789") != phc  # random salt


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ppz-server.db")


class CountingStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.lookups = 0

    def keys_with_prefix(self, prefix: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return self.store.keys_with_prefix(prefix)

    def key_active(self, key_id: int) -> bool:
        return self.store.key_active(key_id)


def test_verifier_checks_hash_and_caches_at_most_60s(store: Store) -> None:
    account = store.ensure_account("acme", "t")
    key = apikeys.create_key(store, account_id=account.id, principal="bob", now="t")
    counting = CountingStore(store)
    now = [1000.0]
    verifier = apikeys.KeyVerifier(counting, clock=lambda: now[0])  # type: ignore[arg-type]
    principal = verifier.verify(key)
    assert principal == apikeys.Principal(account_id=account.id, name="bob")
    assert verifier.verify(key) == principal
    assert counting.lookups == 1
    now[0] += 59.9
    assert verifier.verify(key) == principal
    assert counting.lookups == 1
    now[0] += 0.2
    assert verifier.verify(key) == principal
    assert counting.lookups == 2
    # The cache is keyed by a hash of the key, never the key itself.
    assert all(key not in repr(k) for k in verifier._cache)


def test_verifier_rejections(store: Store) -> None:
    account = store.ensure_account("acme", "t")
    key = apikeys.create_key(store, account_id=account.id, principal="bob", now="t")
    counting = CountingStore(store)
    verifier = apikeys.KeyVerifier(counting)  # type: ignore[arg-type]
    same_prefix = key[:12] + ("0" * 18 if key[12:] != "0" * 18 else "1" * 18)
    assert verifier.verify(same_prefix) is None
    assert counting.lookups == 1
    for bad in (None, 5, "", "ppz_", "ppz_XYZ", key.upper(), key + "0", "abc_" + key[4:]):
        assert verifier.verify(bad) is None
    assert counting.lookups == 1  # malformed keys are rejected without a lookup
    assert verifier.verify(key) is not None


def test_two_keys_share_a_prefix(store: Store) -> None:
    account = store.ensure_account("acme", "t")
    k1 = "ppz_aaaaaaaa" + "1" * 18
    k2 = "ppz_aaaaaaaa" + "2" * 18
    for k, user in ((k1, "one"), (k2, "two")):
        store.add_api_key(
            account_id=account.id, principal=user, prefix=k[4:12], hash=apikeys.hash_key(k), now="t"
        )
    verifier = apikeys.KeyVerifier(store)
    assert verifier.verify(k2) == apikeys.Principal(account_id=account.id, name="two")
    assert verifier.verify(k1) == apikeys.Principal(account_id=account.id, name="one")


# --- settings ---------------------------------------------------------------------------------


def test_parse_addr() -> None:
    assert settings.parse_addr("127.0.0.1:8080", "X") == ("127.0.0.1", 8080)
    assert settings.parse_addr(":4222", "X") == ("0.0.0.0", 4222)
    assert settings.parse_addr("[::1]:4222", "X") == ("::1", 4222)
    for bad in ("nohost", "h:port", "h:0", "h:70000"):
        with pytest.raises(settings.SettingsError):
            settings.parse_addr(bad, "X")


def test_settings_from_env(tmp_path: Path) -> None:
    s = settings.Settings.from_env({"PPZ_SERVER_DATA": str(tmp_path)})
    assert (s.http_host, s.http_port, s.nats_host, s.nats_port) == ("127.0.0.1", 8080, "127.0.0.1", 4222)
    assert s.jwt_ttl == 300
    assert s.nats_public_url == ""
    assert s.data_dir == tmp_path
    assert s.stream_replicas == 1
    assert s.nats_connect_url == "nats://127.0.0.1:4222"
    env = {"PPZ_NATS_JWT_TTL": "1.5s", "PPZ_NATS_ADDR": "0.0.0.0:5000", "PPZ_STREAM_REPLICAS": "3"}
    s = settings.Settings.from_env(env)
    assert s.jwt_ttl == 2
    assert s.nats_connect_url == "nats://127.0.0.1:5000"
    assert s.stream_replicas == 3
    assert settings.Settings.from_env({"PPZ_NATS_JWT_TTL": "1h30m"}).jwt_ttl == 5400
    for bad in ({"PPZ_NATS_JWT_TTL": "0"}, {"PPZ_NATS_JWT_TTL": "-5s"}, {"PPZ_STREAM_REPLICAS": "0"}):
        with pytest.raises(settings.SettingsError):
            settings.Settings.from_env(bad)


def test_rfc3339_whole_seconds() -> None:
    assert settings.rfc3339(1777636500.9) == "2026-05-01T11:55:00Z"


def test_host_without_port() -> None:
    assert service.host_without_port("localhost:8080") == "localhost"
    assert service.host_without_port("[::1]:8080") == "[::1]"
    assert service.host_without_port("[::1]") == "[::1]"
    assert service.host_without_port("example.com") == "example.com"
    assert service.host_without_port("") == ""


# --- streams ----------------------------------------------------------------------------------


def test_stream_config_defaults_and_overrides() -> None:
    acct = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    ref = streams.PipeRef(manifold="team-a", handle="bob", name="stdout")
    config = streams.stream_config(acct, ref, streams.Retention())
    assert config == {
        "name": "pipe_0b1c2d3e_team-a_bob_stdout",
        "subjects": [f"{acct}.team-a.bob.stdout"],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": 5000,
        "max_bytes": 16777216,
        "max_age": 86400 * 10**9,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "storage": "file",
        "discard": "old",
        "num_replicas": 1,
        "duplicate_window": 120 * 10**9,
    }
    tuned = streams.stream_config(acct, ref, streams.Retention(ttl_seconds=0, max_msgs=-1), replicas=3)
    assert (tuned["max_age"], tuned["max_msgs"], tuned["num_replicas"]) == (0, -1, 3)
    assert tuned["duplicate_window"] == 120 * 10**9
    short = streams.stream_config(acct, ref, streams.Retention(ttl_seconds=30))
    assert short["duplicate_window"] == 30 * 10**9
    heartbeat = streams.PipeRef(manifold="", handle="bob", name="heartbeat")
    assert streams.stream_config(acct, heartbeat, streams.Retention())["subjects"] == [
        f"{acct}._presence.bob"
    ]


def test_retention_merge_and_validation() -> None:
    stored = streams.Retention(ttl_seconds=60, max_msgs=10)
    assert streams.Retention(max_msgs=5).over(stored) == streams.Retention(ttl_seconds=60, max_msgs=5)
    assert stored.resolved() == streams.Retention(ttl_seconds=60, max_msgs=10, max_bytes=16777216)
    assert streams.invalid_retention_field(streams.Retention(ttl_seconds=0, max_msgs=-1, max_bytes=1)) is None
    assert streams.invalid_retention_field(streams.Retention(ttl_seconds=-1)) == "ttl_seconds"
    assert streams.invalid_retention_field(streams.Retention(max_msgs=0)) == "max_msgs"
    assert streams.invalid_retention_field(streams.Retention(max_bytes=-2)) == "max_bytes"


def test_nats_server_config_rendering(tmp_path: Path) -> None:
    t = trust.mint_trust(1)
    text = natsproc.render_config(
        host="::1", port=4222, data_dir=tmp_path, operator_jwt_path=tmp_path / "operator.jwt", trust=t
    )
    assert 'listen: "[::1]:4222"' in text
    assert "max_control_line: 32768" in text
    assert f'operator: "{tmp_path / "operator.jwt"}"' in text
    assert f'system_account: "{t.system_account_key}"' in text
    assert f'"{t.system_account_key}": "{t.system_account_jwt}"' in text
    assert f'dir: "{tmp_path / "resolver"}"' in text


# --- store ------------------------------------------------------------------------------------


def test_store_collision_rules(store: Store) -> None:
    acct = store.ensure_account("acme", "t").id
    retention = streams.Retention()
    store.create_uncollared_pipe(
        account_id=acct, manifold="a.b", name="room", created_by="x", retention=retention, now="t"
    )
    with pytest.raises(PpzError) as exc:
        store.create_source(account_id=acct, handle="a", manifold="", kind="message", created_by="x", now="t")
    assert exc.value.message == "manifold path 'a' is already used by uncollared pipes"
    with pytest.raises(PpzError) as exc:
        store.create_source(
            account_id=acct, handle="b", manifold="a", kind="message", created_by="x", now="t"
        )
    assert exc.value.message == "manifold path 'a.b' is already used by uncollared pipes"
    with pytest.raises(PpzError) as exc:
        store.create_source(
            account_id=acct, handle="room", manifold="a.b", kind="message", created_by="x", now="t"
        )
    assert exc.value.message == "name 'room' is already taken by uncollared pipe at manifold 'a.b'"
    # Names with LIKE metacharacters are matched literally.
    store.create_source(account_id=acct, handle="ab", manifold="", kind="message", created_by="x", now="t")


def test_store_handle_unique_under_concurrency(store: Store) -> None:
    acct = store.ensure_account("acme", "t").id
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        try:
            store.create_source(
                account_id=acct, handle="x", manifold="", kind="message", created_by="u", now="t"
            )
            outcomes.append("ok")
        except PpzError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == sorted(["ok"] + [errors.E_SOURCE_TAKEN] * 7)


def test_store_account_nats_first_writer_wins(store: Store) -> None:
    acct = store.ensure_account("acme", "t")
    t = trust.mint_trust(1)
    first, second = trust.mint_tenant(t, "acme", 1), trust.mint_tenant(t, "acme", 1)
    assert store.set_account_nats(acct.id, first).tenant == first
    assert store.set_account_nats(acct.id, second).tenant == first
    assert store.set_account_nats(acct.id, second, replace=True).tenant == second
    assert store.ensure_account("acme", "later").id == acct.id


def test_decode_helpers() -> None:
    from ppz.server import wire

    assert wire.decode_object(b'{"a": 1}', allowed=frozenset({"a"}), code="E_X") == {"a": 1}
    for body in (b"", b"[]", b"nan", b'{"a": NaN}', b'{"b": 1}', b"\xff"):
        with pytest.raises(PpzError) as exc:
            wire.decode_object(body, allowed=frozenset({"a"}), code="E_X")
        assert exc.value.code == "E_X"
    err = PpzError("E_X", "bad")
    assert wire.optional_int({"a": None}, "a", err) is None
    assert wire.optional_int({"a": 3}, "a", err) == 3
    # orjson reads integers beyond 64 bits as floats: not integers either.
    big = wire.decode_object(b'{"a": 99999999999999999999999}', allowed=frozenset({"a"}), code="E_X")
    for value in (True, 1.0, "1", big["a"]):
        with pytest.raises(PpzError):
            wire.optional_int({"a": value}, "a", err)


# --- the listening socket (web.bind) ------------------------------------------------------------


def test_the_listening_socket_hands_out_connections_with_tcp_nodelay() -> None:
    """A keep-alive reply's body goes out at once instead of waiting for the client's delayed
    ACK (~40 ms per call): asyncio sets TCP_NODELAY on the accepted socket only when the
    listening socket's protocol is TCP."""
    async def accepted_nodelay() -> int:
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                got.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listener = web.bind("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
            value = await asyncio.wait_for(got, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
