"""Credential exchange (spec/server-api.md §3, §3.1) and the minted credential on real NATS."""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from server_testkit import ApiClient, assert_error, connect_exchanged, nats_connect, new_account
from serverfixture import ServerProcess

from ppz.server import natsjwt


def epoch(rfc3339: str) -> int:
    return calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ"))


def test_exchange_reply_and_claims(shared_server: ServerProcess, api: ApiClient) -> None:
    before = int(time.time())
    resp = api.exchange()
    after = int(time.time())
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {
        "jwt",
        "nats_url",
        "account_id",
        "account_name",
        "expires_at",
        "nats_user_jwt",
        "nats_user_seed",
    }
    assert body["jwt"] == "stub-jwt-not-yet-issued"
    assert body["account_id"] == api.account_id
    assert body["account_name"].startswith("t-")
    assert body["nats_url"] == f"nats://127.0.0.1:{shared_server.nats_port}"
    assert body["nats_user_seed"].startswith("SU")

    header, claims_b64, _ = body["nats_user_jwt"].split(".")
    assert json.loads(natsjwt.b64url_decode(header)) == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert "=" not in body["nats_user_jwt"]
    claims = json.loads(natsjwt.b64url_decode(claims_b64))
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"] - 30
    assert claims["exp"] == claims["iat"] + 300
    assert epoch(body["expires_at"]) == claims["exp"]
    assert body["expires_at"].endswith("Z")
    assert claims["sub"] == natsjwt.public_key(body["nats_user_seed"])
    assert claims["name"] == f"ppz-user-{api.account_id}"
    nats_claims = claims["nats"]
    assert nats_claims["pub"] == {"allow": [">"]}
    assert nats_claims["sub"] == {"allow": [">"]}
    assert (nats_claims["subs"], nats_claims["data"], nats_claims["payload"]) == (-1, -1, -1)
    assert (nats_claims["type"], nats_claims["version"]) == ("user", 2)
    # Signed by the account's signing key, which is not the account identity key.
    assert claims["iss"].startswith("A") and nats_claims["issuer_account"].startswith("A")
    assert claims["iss"] != nats_claims["issuer_account"]
    natsjwt.verify(body["nats_user_jwt"], claims["iss"])
    assert claims["jti"] == natsjwt.claims_id(claims)


def test_every_exchange_mints_a_fresh_user(api: ApiClient) -> None:
    first = api.exchange().json()
    second = api.exchange().json()
    assert first["nats_user_seed"] != second["nats_user_seed"]
    assert natsjwt.decode(first["nats_user_jwt"])["sub"] != natsjwt.decode(second["nats_user_jwt"])["sub"]
    # Same account, same signing key.
    assert natsjwt.decode(first["nats_user_jwt"])["iss"] == natsjwt.decode(second["nats_user_jwt"])["iss"]


def test_exchange_with_account_id(shared_server: ServerProcess, api: ApiClient) -> None:
    assert api.exchange(account_id=api.account_id).status_code == 200
    assert api.exchange(account_id="").status_code == 200
    assert api.exchange(account_id=None).status_code == 200
    _, other_account = new_account(shared_server)
    assert_error(
        api.exchange(account_id=other_account), 401, "E_INVALID_API_KEY", "api key is not for this account"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"nope",
        b"[]",
        b"{}",
        b'{"api_key": null}',
        b'{"api_key": 7}',
        b'{"api_key": "ppz_0123456789abcdef0123456789"}',
        b'{"api_key": "not-a-key"}',
    ],
)
def test_exchange_rejections(api: ApiClient, body: bytes) -> None:
    resp = api.post("/api/v1/auth/exchange", data=body, auth=False)
    assert_error(resp, 401, "E_INVALID_API_KEY", "invalid api key")


def test_exchange_account_id_of_wrong_type(api: ApiClient) -> None:
    assert_error(api.exchange(account_id=5), 401, "E_INVALID_API_KEY", "invalid api key")


def test_exchange_ignores_bearer_header(api: ApiClient) -> None:
    resp = api.post(
        "/api/v1/auth/exchange",
        json={"api_key": api.key},
        auth=False,
        headers={"Authorization": "Bearer ppz_ffffffffffffffffffffffffff"},
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    "host,expected_host",
    [
        ("localhost:8080", "localhost"),
        ("[::1]:8080", "[::1]"),
        ("example.com", "example.com"),
        ("[fe80::1]", "[fe80::1]"),
    ],
)
def test_nats_url_follows_the_host_header(
    shared_server: ServerProcess, api: ApiClient, host: str, expected_host: str
) -> None:
    resp = api.post("/api/v1/auth/exchange", json={"api_key": api.key}, auth=False, headers={"Host": host})
    assert resp.json()["nats_url"] == f"nats://{expected_host}:{shared_server.nats_port}"


def test_public_url_is_returned_verbatim(server_factory: Callable[..., ServerProcess]) -> None:
    url = "nats://a.example:4222,nats://b.example:4222"
    server = server_factory(PPZ_NATS_PUBLIC_URL=url)
    client = ApiClient(server.url, server.add_key("acme"))
    assert client.exchange().json()["nats_url"] == url


def test_add_key_while_serving(ppz_server: ServerProcess) -> None:
    """``add-key`` runs next to ``serve``; the new account works at once, and a second key of
    the same account shares it."""
    key = ppz_server.add_key(account="newco", user="zoe")
    assert len(key) == 30 and key.startswith("ppz_")
    client = ApiClient(ppz_server.url, key)
    reply = client.exchange().json()
    assert reply["account_name"] == "newco"
    second = ApiClient(ppz_server.url, ppz_server.add_key(account="newco", user="max"))
    assert second.exchange().json()["account_id"] == reply["account_id"]
    assert client.post("/api/v1/sources", json={"handle": "x"}).status_code == 201
    assert second.get("/api/v1/sources/x").json()["created_by"] == "zoe"


def test_minted_credential_publishes_and_reads_through_jetstream(
    shared_server: ServerProcess, api: ApiClient
) -> None:
    created = api.post("/api/v1/sources", json={"handle": "bob", "manifold": "team-a"}).json()
    reply = api.exchange().json()

    async def roundtrip() -> list[bytes]:
        nc = await connect_exchanged(shared_server, reply)
        try:
            js = nc.jetstream()
            ack = await js.publish(created["subject"], b'{"payload":"hi"}', headers={"Nats-Msg-Id": "m-1"})
            assert ack.seq == 1
            dup = await js.publish(created["subject"], b'{"payload":"hi"}', headers={"Nats-Msg-Id": "m-1"})
            assert dup.duplicate
            await js.publish(created["subject"], b"second")
            sub = await js.subscribe(created["subject"], ordered_consumer=True)
            got = [(await sub.next_msg(timeout=5)).data for _ in range(2)]
            # Core subscriptions work too (the user JWT carries subs = -1).
            core = await nc.subscribe(f"{api.account_id}.core.test")
            await nc.publish(f"{api.account_id}.core.test", b"ping")
            got.append((await core.next_msg(timeout=5)).data)
            return got
        finally:
            await nc.close()

    assert asyncio.run(roundtrip()) == [b'{"payload":"hi"}', b"second", b"ping"]


def test_publish_without_stream_gets_no_ack(shared_server: ServerProcess, api: ApiClient) -> None:
    reply = api.exchange().json()

    async def publish() -> None:
        nc = await connect_exchanged(shared_server, reply)
        try:
            with pytest.raises(nats.js.errors.NoStreamResponseError):
                await nc.jetstream().publish(f"{api.account_id}.nobody.inbox", b"x", timeout=2)
        finally:
            await nc.close()

    asyncio.run(publish())


def test_accounts_are_isolated(shared_server: ServerProcess, api: ApiClient) -> None:
    key, other_account = new_account(shared_server)
    other = ApiClient(shared_server.url, key, other_account)
    other.post("/api/v1/sources", json={"handle": "secret"})
    api.post("/api/v1/sources", json={"handle": "mine"})
    reply = api.exchange().json()

    async def names() -> list[str]:
        nc = await connect_exchanged(shared_server, reply)
        try:
            msg = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)
            return sorted(json.loads(msg.data)["streams"])
        finally:
            await nc.close()

    assert asyncio.run(names()) == [f"pipe_{api.account_id.replace('-', '')[:8]}_mine_inbox"]


def test_credential_stops_working_after_its_ttl(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(PPZ_NATS_JWT_TTL="2s")
    client = ApiClient(server.url, server.add_key())
    reply = client.exchange().json()
    claims = natsjwt.decode(reply["nats_user_jwt"])
    assert claims["exp"] - claims["iat"] == 2
    assert epoch(reply["expires_at"]) == claims["exp"]
    events: list[str] = []

    async def scenario() -> None:
        async def disconnected() -> None:
            events.append("disconnected")

        async def error(exc: Exception) -> None:
            events.append(f"error: {exc}")

        nc = await nats_connect(
            server.nats_url,
            reply["nats_user_jwt"],
            reply["nats_user_seed"],
            disconnected_cb=disconnected,
            error_cb=error,
        )
        assert nc.is_connected
        await nc.flush()
        while time.time() < claims["exp"] + 1.2:
            await asyncio.sleep(0.1)
        # The server closed the connection at expiry …
        for _ in range(30):
            if not nc.is_connected:
                break
            await asyncio.sleep(0.1)
        assert not nc.is_connected, events
        await nc.close()
        # … and refuses a new one with the expired credential.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            late = await nats_connect(server.nats_url, reply["nats_user_jwt"], reply["nats_user_seed"])
            await late.close()

    asyncio.run(scenario())
    assert "disconnected" in events
    # A fresh exchange works again.
    fresh = client.exchange().json()

    async def reconnect() -> Any:
        nc = await nats_connect(server.nats_url, fresh["nats_user_jwt"], fresh["nats_user_seed"])
        await nc.flush()
        await nc.close()

    asyncio.run(reconnect())
