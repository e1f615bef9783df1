"""The server's NATS connections, on one asyncio loop thread (spec/server-api.md §5.2–5.4).

One connection as the system-account user (claims pushes) and one per tenant as its server user
(JetStream stream management). HTTP threads run coroutines here with :meth:`NatsControl.run`.
Every connection knows every server URL (the child's, or all of an external cluster's) and
reconnects forever, so a restarted ``nats-server`` child or a cluster node's failure is picked up.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NATS

from ppz.server import natsjwt

logger = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
RECONNECT_WAIT = 0.1
PROBE_SECONDS = 5.0
PROBE_INTERVAL = 0.1
JSZ_PING = "$SYS.REQ.SERVER.PING.JSZ"
JS_STREAM_NAME_IN_USE = 10058
JS_STREAM_NOT_FOUND = 10059


class NatsControlError(RuntimeError):
    """A NATS operation of the server failed."""


class JetStreamApiError(NatsControlError):
    """An error reply of the JetStream API."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (status {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


def _credential_callbacks(user_jwt: str, seed: str) -> dict[str, Any]:
    def jwt_cb() -> bytes:
        return user_jwt.encode()

    def signature_cb(nonce: str) -> bytes:
        return base64.b64encode(natsjwt.sign(seed, nonce.encode()))

    return {"user_jwt_cb": jwt_cb, "signature_cb": signature_cb}


def jetstream_state(jsz: dict[str, Any]) -> tuple[bool, str, int]:
    """``(ready, why not, cluster size)`` from one server's ``JSZ`` ping reply: JetStream is
    enabled and, in a cluster, the meta group has a leader (without one no stream can be
    created). The size is 1 for a server outside any cluster."""
    server = jsz.get("server") or {}
    data = jsz.get("data") or {}
    name = server.get("name") or "?"
    if jsz.get("error") or not server.get("jetstream") or data.get("disabled") or not data.get("config"):
        return False, f"JetStream is not enabled on {name}", 0
    meta = data.get("meta_cluster")
    if not meta:
        return True, "", 1
    size = int(meta.get("cluster_size") or 0)
    if not meta.get("leader"):
        return False, f"the JetStream cluster {meta.get('name') or ''!s} has no meta leader yet (asked {name})", size
    return True, "", size


class NatsControl:
    """Owns the event loop thread and the server's NATS connections."""

    def __init__(self, urls: str | list[str]) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-loop", daemon=True)
        self._system: NATS | None = None
        self._tenants: dict[str, NATS] = {}
        self._others: list[NATS] = []
        self._push_locks: dict[str, asyncio.Lock] = {}
        self.on_system_reconnected: Callable[[], Coroutine[Any, Any, None]] | None = None

    # --- loop plumbing ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop thread without waiting (the HTTP server's serve task)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = REQUEST_TIMEOUT * 2) -> T:
        """Run ``coro`` on the loop thread and wait for its result (thread-safe)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise NatsControlError(f"NATS operation timed out after {timeout:.0f}s") from None
        except (nats.errors.Error, TimeoutError, ConnectionError) as exc:
            raise NatsControlError(f"NATS operation failed: {exc!r}") from exc

    def close(self) -> None:
        """Close every connection and stop the loop thread."""
        if not self._thread.is_alive():
            return
        try:
            self.run(self._close_all(), timeout=5.0)
        except Exception:  # noqa: BLE001 - shutting down anyway
            logger.warning("closing NATS connections failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _close_all(self) -> None:
        conns = [c for c in [self._system, *self._tenants.values(), *self._others] if c is not None]
        self._system = None
        self._tenants.clear()
        self._others.clear()
        for nc in conns:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:  # noqa: BLE001
                logger.debug("close failed", exc_info=True)

    # --- connections -----------------------------------------------------------------------

    async def _connect(
        self,
        name: str,
        user_jwt: str,
        seed: str,
        on_reconnect: Callable[[], Coroutine[Any, Any, None]] | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> NATS:
        last_error: list[str] = []

        async def error_cb(exc: Exception) -> None:
            last_error[:] = [str(exc) or type(exc).__name__]
            logger.debug("nats connection %s: %s", name, exc)

        async def disconnected_cb() -> None:
            logger.info("nats connection %s disconnected", name)

        async def reconnected_cb() -> None:
            logger.info("nats connection %s reconnected", name)
            if on_reconnect is not None:
                asyncio.get_running_loop().create_task(on_reconnect())

        nc = NATS()
        try:
            await asyncio.wait_for(
                nc.connect(
                    self.urls,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
                    connect_timeout=2,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    **_credential_callbacks(user_jwt, seed),
                ),
                timeout,
            )
        except BaseException as exc:
            try:
                await asyncio.wait_for(nc.close(), 1.0)
            except Exception:  # noqa: BLE001
                pass
            if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                raise NatsControlError(
                    f"cannot connect to {', '.join(self.urls)} within {timeout:.0f}s"
                    + (f": {last_error[0]}" if last_error else "")
                ) from None
            raise
        return nc

    async def connect_system(self, user_jwt: str, seed: str, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect as the system-account user (claims pushes), trying for up to ``timeout``."""

        async def reconnected() -> None:
            if self.on_system_reconnected is not None:
                await self.on_system_reconnected()

        self._system = await self._connect("ppz-server-system", user_jwt, seed, reconnected, timeout)

    async def jetstream_ready(self) -> tuple[bool, str, int]:
        """Ask one server for its JetStream state (``$SYS.REQ.SERVER.PING.JSZ`` as the system
        user); see :func:`jetstream_state`."""
        if self._system is None:
            raise NatsControlError("no system connection")
        try:
            msg = await self._system.request(JSZ_PING, b"{}", timeout=REQUEST_TIMEOUT)
        except (nats.errors.Error, TimeoutError) as exc:
            return False, f"no JetStream server answered: {exc!r}", 0
        return jetstream_state(json.loads(msg.data or b"{}"))

    async def wait_jetstream(self, seconds: float) -> tuple[bool, str, int]:
        """Poll :meth:`jetstream_ready` until ready or ``seconds`` passed; the last state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            state = await self.jetstream_ready()
            if state[0] or loop.time() + PROBE_INTERVAL >= deadline:
                return state
            await asyncio.sleep(PROBE_INTERVAL)

    async def connect_user(self, name: str, user_jwt: str, seed: str) -> NATS:
        """Another connection of the server (the console's read-only users), closed with the rest."""
        nc = await self._connect(name, user_jwt, seed)
        self._others.append(nc)
        return nc

    async def connect_tenant(self, account_id: str, name: str, user_jwt: str, seed: str) -> None:
        """Connect (or reconnect) as a tenant's server user."""
        nc = await self._connect(name, user_jwt, seed)
        old = self._tenants.pop(account_id, None)
        self._tenants[account_id] = nc
        if old is not None:
            await old.close()

    # --- account claims --------------------------------------------------------------------

    async def push_account(self, account_key: str, account_jwt: str) -> None:
        """Publish an account JWT on ``$SYS.REQ.CLAIMS.UPDATE``; pushes of one account are
        serialised, because the NATS server keeps the last one it receives."""
        if self._system is None:
            raise NatsControlError("no system connection")
        lock = self._push_locks.setdefault(account_key, asyncio.Lock())
        async with lock:
            msg = await self._system.request(
                "$SYS.REQ.CLAIMS.UPDATE", account_jwt.encode(), timeout=REQUEST_TIMEOUT
            )
        reply: dict[str, Any] = json.loads(msg.data or b"{}")
        error = reply.get("error")
        data = reply.get("data") or {}
        if error or data.get("code") != 200:
            raise NatsControlError(f"account {account_key} refused: {error or data}")

    # --- JetStream -------------------------------------------------------------------------

    async def js_request(
        self, account_id: str, api: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One ``$JS.API.<api>`` request as the tenant's server user."""
        nc = self._tenants.get(account_id)
        if nc is None:
            raise NatsControlError(f"no NATS connection for account {account_id}")
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            msg = await nc.request(f"$JS.API.{api}", payload, timeout=REQUEST_TIMEOUT)
        except nats.errors.NoRespondersError:
            raise NatsControlError(f"JetStream did not answer $JS.API.{api} (no responders)") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise NatsControlError(f"JetStream request $JS.API.{api} timed out") from None
        reply: dict[str, Any] = json.loads(msg.data or b"{}")
        error = reply.get("error")
        if error:
            raise JetStreamApiError(
                int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description", ""))
            )
        return reply

    async def probe(self, account_id: str, seconds: float = PROBE_SECONDS) -> None:
        """Retry ``$JS.API.INFO`` until JetStream answers for the account, up to ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            try:
                await self.js_request(account_id, "INFO")
                return
            except NatsControlError as exc:
                if loop.time() + PROBE_INTERVAL >= deadline:
                    raise NatsControlError(f"JetStream not ready for account {account_id}: {exc}") from exc
            await asyncio.sleep(PROBE_INTERVAL)

    async def upsert_stream(self, account_id: str, config: dict[str, Any]) -> None:
        """Create the stream, or update it when it exists with another configuration."""
        name = config["name"]
        try:
            await self.js_request(account_id, f"STREAM.CREATE.{name}", config)
        except JetStreamApiError as exc:
            if exc.err_code != JS_STREAM_NAME_IN_USE:
                raise
            await self.js_request(account_id, f"STREAM.UPDATE.{name}", config)

    async def delete_stream(self, account_id: str, name: str) -> bool:
        """Delete a stream; False when it did not exist."""
        try:
            await self.js_request(account_id, f"STREAM.DELETE.{name}")
        except JetStreamApiError as exc:
            if exc.err_code == JS_STREAM_NOT_FOUND:
                return False
            raise
        return True

    async def publish(self, account_id: str, subject: str, data: bytes, stream: str) -> int:
        """A JetStream publish as the tenant's server user; the stream sequence of its PubAck."""
        nc = self._tenants.get(account_id)
        if nc is None:
            raise NatsControlError(f"no NATS connection for account {account_id}")
        ack = await nc.jetstream().publish(subject, data, stream=stream, timeout=REQUEST_TIMEOUT)
        return int(ack.seq)

    async def gather(self, coros: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        """Run coroutines concurrently; exceptions are returned, not raised."""
        return await asyncio.gather(*coros, return_exceptions=True)
