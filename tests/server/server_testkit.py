"""Helpers for the ppz-server tests: an HTTP client, fresh accounts, NATS connections with
minted credentials, error-envelope assertions."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import nats
import requests
from nats.aio.client import Client as NATS
from serverfixture import ServerProcess

from ppz.server import natsjwt
from ppz.server.apikeys import create_key
from ppz.server.store import Store


class ApiClient:
    """A thin requests wrapper bound to one server URL and (optionally) one API key."""

    def __init__(self, url: str, key: str | None = None, account_id: str = "") -> None:
        self.url = url
        self.key = key
        self.account_id = account_id
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        hdrs = dict(headers or {})
        if auth and self.key is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.key}")
        return self.session.request(
            method, self.url + path, json=json, data=data, headers=hdrs, params=params, timeout=15
        )

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def exchange(self, **body: Any) -> requests.Response:
        body.setdefault("api_key", self.key)
        return self.post("/api/v1/auth/exchange", json=body, auth=False)


def new_account(server: ServerProcess, name: str | None = None, user: str = "admin") -> tuple[str, str]:
    """Create an account and key in the server's store from this process (what ``add-key``
    does, without its process start-up). Returns ``(key, account_id)``."""
    name = name or "t-" + uuid.uuid4().hex[:12]
    store = Store(server.data_dir / "ppz-server.db")
    try:
        account = store.ensure_account(name, "2026-01-01T00:00:00Z")
        key = create_key(store, account_id=account.id, principal=user, now="2026-01-01T00:00:00Z")
    finally:
        store.close()
    return key, account.id


def assert_error(resp: requests.Response, status: int, code: str, message: str | None = None) -> None:
    """The response is the error envelope with this status, code and (if given) message."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    if message is not None:
        assert body["error"]["message"] == message, body


def credential_callbacks(user_jwt: str, seed: str) -> dict[str, Any]:
    return {
        "user_jwt_cb": lambda: user_jwt.encode(),
        "signature_cb": lambda nonce: base64.b64encode(natsjwt.sign(seed, nonce.encode())),
    }


async def nats_connect(url: str, user_jwt: str, seed: str, **options: Any) -> NATS:
    """A plain nats-py client authenticated with a minted credential; no reconnects."""

    async def quiet(exc: Exception) -> None:
        pass

    options.setdefault("error_cb", quiet)
    options.setdefault("allow_reconnect", False)
    options.setdefault("connect_timeout", 3)
    return await nats.connect(url, **credential_callbacks(user_jwt, seed), **options)


async def connect_exchanged(server: ServerProcess, reply: dict[str, Any], **options: Any) -> NATS:
    return await nats_connect(server.nats_url, reply["nats_user_jwt"], reply["nats_user_seed"], **options)


async def _js_api(server: ServerProcess, client: ApiClient, subject: str, body: Any) -> dict[str, Any]:
    reply = client.exchange().json()
    nc = await connect_exchanged(server, reply)
    try:
        payload = b"" if body is None else json.dumps(body).encode()
        msg = await nc.request(f"$JS.API.{subject}", payload, timeout=5)
        return dict(json.loads(msg.data))
    finally:
        await nc.close()


def js_api(server: ServerProcess, client: ApiClient, subject: str, body: Any = None) -> dict[str, Any]:
    """One JetStream API request (``$JS.API.<subject>``) in the client's account."""
    return asyncio.run(_js_api(server, client, subject, body))


def stream_config(server: ServerProcess, client: ApiClient, name: str) -> dict[str, Any] | None:
    """The stream's configuration, or None when it does not exist."""
    info = js_api(server, client, f"STREAM.INFO.{name}")
    if "error" in info:
        assert info["error"]["err_code"] == 10059, info
        return None
    return dict(info["config"])


def stream_names(server: ServerProcess, client: ApiClient) -> list[str]:
    return sorted(js_api(server, client, "STREAM.NAMES", {}).get("streams") or [])


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
