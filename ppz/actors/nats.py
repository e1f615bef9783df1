"""NatsActor: the one nats-py client (on the loop thread bootstrap hands it), and the NATS event log.

It owns: the NATS URL, the credential snapshot the client's auth callbacks read, the
installed connection and the (exp, generation) it was dialled with, the last dial error,
in-place rotation, the failure report and the event log (spec/daemon.md §4–§6, §8).
Its mailbox is the "connection lock": rebuild, swap and rotation are serialised by it.
JetStream operations do not go through the mailbox: request threads read the published
:class:`ConnView` and run their coroutines on the loop directly.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nkeys
import pykka
from nats.aio.client import Client as NatsClient
from pykka.typing import ActorMemberMixin, proxy_method

from ppz import errors, names
from ppz.actors.follows import FollowActor
from ppz.actors.heartbeats import HeartbeatsActor
from ppz.actors.identity import IdentityListener
from ppz.actors.later import tell_later
from ppz.aioloop import LoopThread
from ppz.envelope import Envelope
from ppz.eventlog import Event, EventLog
from ppz.messages import (
    Beat,
    ClientEvent,
    ConnectionSwapped,
    CredentialChanged,
    CredentialSnapshot,
    IdentityChanged,
    ProbeFinished,
    RecordEvent,
    RefreshView,
    Rotate,
    RotationDue,
)
from ppz.published import Published

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 2.0
RECONNECT_ATTEMPTS = 60
RECONNECT_WAIT = 2.0
PING_INTERVAL = 120
MAX_PINGS_OUT = 2
ROTATE_WAIT = 5.0
ROTATE_SPACING = 2.0
SWAP_FLUSH_CAP = 2.0
SWAP_CLOSE_GRACE = 1.0
EXPIRY_MARGIN = 0.5  # a swapped-out connection is closed at least this long before its exp
PROBE_TIMEOUT = 5.0
JS_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnView:
    """Immutable view of the installed connection, published for request handlers (on their
    threads, and the warm Send path on the loop)."""

    nc: NatsClient | None = None
    loop_thread: LoopThread | None = None
    nc_id: str = ""
    url: str = ""
    dialled_exp: int = 0
    dialled_gen: int = 0
    dial_error: errors.PpzError | None = None
    # A swap of this connection is under way: its follows are being closed (daemon.md §5.2).
    replacing: bool = False

    def serves(self, nc_id: str) -> bool:
        """True when ``nc_id`` is the installed connection and no swap is replacing it.

        A follow checks this after subscribing: a swap whose broadcast went out before the
        follow registered (so it was not closed) shows here as a swap under way or as another
        connection installed (the old one closes after a short grace)."""
        return bool(nc_id) and self.nc_id == nc_id and not self.replacing

    def state(self) -> str | None:
        """``connected`` / ``connecting`` / ``disconnected``, or None with no connection."""
        nc = self.nc
        if nc is None:
            return None
        if nc.is_connected:
            return "connected"
        if nc.is_connecting or nc.is_reconnecting:
            return "connecting"
        return "disconnected"

    def unusable(self) -> errors.PpzError:
        """The error JetStream entry points return while no connection is installed."""
        return self.dial_error or errors.PpzError(errors.E_NATS_UNREACHABLE)

    @property
    def client(self) -> NatsClient:
        """The installed client, or the error JetStream entry points return without one."""
        if self.nc is None:
            raise self.unusable()
        return self.nc

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = JS_TIMEOUT + 1.0) -> T:
        """Run ``coro`` on the connection's loop from a request thread."""
        if self.loop_thread is None:
            coro.close()
            raise self.unusable()
        try:
            return self.loop_thread.run(coro, timeout)
        except concurrent.futures.CancelledError:
            # The loop cancelled it: the daemon is stopping and its connection goes with it
            # (nats.md §6: connection closed → unreachable), not an internal error.
            raise errors.PpzError(errors.E_NATS_UNREACHABLE) from None


def classify_dial_error(text: str) -> errors.PpzError:
    """Dial-error classification (daemon.md §5.7)."""
    if "maximum control line exceeded" in text.lower():
        return errors.PpzError(errors.E_CREDENTIAL_TOO_LARGE)
    return errors.PpzError(errors.E_NATS_UNREACHABLE)


def _lost_during_connect(text: str) -> bool:
    lowered = text.lower()
    return "connection lost" in lowered or "reset" in lowered or "unexpected eof" in lowered


def server_urls(url: str) -> list[str]:
    """All comma-separated servers of a NATS URL."""
    return [u.strip() for u in url.split(",") if u.strip()]


@dataclass(slots=True)
class _Watch:
    """One ListWatch: its account, its callbacks and its current subscription."""

    acct: str
    on_subject: Callable[[str], None]
    wake: Callable[[], None]
    sub: Any = None


@dataclass(slots=True)
class _Installed:
    """The installed connection and the credential it was dialled with."""

    nc: NatsClient
    nc_id: str
    exp: int
    gen: int
    subs: list[Any] = field(default_factory=list)


class NatsActor(IdentityListener):
    """Owns the NATS connection; see the module docstring."""

    use_daemon_thread = True

    def __init__(
        self,
        *,
        events: EventLog,
        view_box: Published[ConnView],
        loop_thread: LoopThread,
        heartbeats: pykka.ActorRef[HeartbeatsActor] | None = None,
        kick_connect: Callable[[], None] | None = None,
        nats_url_override: str = "",
        refresh_box: Published[RefreshView] | None = None,
    ) -> None:
        super().__init__()
        self._refresh_box = refresh_box
        self._events = events
        self._view_box = view_box
        self._heartbeats = heartbeats
        self._kick_connect = kick_connect or (lambda: None)
        self._url_override = nats_url_override
        self._url = ""
        self._account_id = ""
        self._snapshot: CredentialSnapshot | None = None
        self._installed: _Installed | None = None
        self._dial_error: errors.PpzError | None = None
        self._dials = 0
        self._pid = os.getpid()
        # Owned by bootstrap (started before this actor, stopped after every actor).
        self._loop = loop_thread
        # Read by client callbacks on the loop thread: the nc_id of a rotation in flight.
        self._rotating_nc_id = ""
        self._last_rotation_at = 0.0
        self._rotation_pending = False
        # The failure report in flight (single-flight): its outcome, resolved on the loop.
        self._report: Future[None] | None = None
        self._watches: dict[str, _Watch] = {}
        # Touched only on the loop thread: rotation waiters resolved by reconnected_cb.
        self._rotation_waiters: dict[str, asyncio.Future[bool]] = {}

    # --- lifecycle -----------------------------------------------------------------

    def on_start(self) -> None:
        self._publish()
        logger.debug("NatsActor started")

    def on_stop(self) -> None:
        self._close_installed()
        logger.debug("NatsActor stopped")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        inst = self._installed
        self._installed = None
        if inst is not None:
            self._loop.submit(inst.nc.close())

    def _close_installed(self) -> None:
        inst = self._installed
        self._installed = None
        self._publish()
        if inst is not None:
            try:
                self._loop.run(inst.nc.close(), 3.0)
            except Exception:  # noqa: BLE001 - shutting down
                logger.debug("closing NATS connection failed", exc_info=True)

    # --- published view ------------------------------------------------------------

    def _publish(self, *, replacing: bool = False) -> None:
        inst = self._installed
        self._view_box.value = ConnView(
            nc=inst.nc if inst else None,
            loop_thread=self._loop,
            nc_id=inst.nc_id if inst else "",
            url=self._url,
            dialled_exp=inst.exp if inst else 0,
            dialled_gen=inst.gen if inst else 0,
            dial_error=self._dial_error,
            replacing=replacing,
        )

    def view(self) -> ConnView:
        return self._view_box.value

    # --- identity --------------------------------------------------------------------

    def set_target(self, url: str, account_id: str) -> None:
        """Adopt the NATS URL (``PPZ_NATS_URL`` wins) and the account id to subscribe under."""
        self._url = self._url_override or url
        self._account_id = account_id
        self._publish()

    def forget(self) -> None:
        """Logout / identity change: forget the NATS URL and the remembered dial error."""
        self._url = ""
        self._dial_error = None
        self._snapshot = None
        self._publish()

    def on_identity_changed(self, change: IdentityChanged) -> list[str]:
        """A login adopts its NATS URL and account (its ``rebuild`` swaps the old connection
        out once the new one is dialled). Any other change forgets the URL and the dial error
        and swaps the connection to nothing, which closes every follow (daemon.md §5.2)."""
        if change.creds is not None and change.exchange is not None:
            self.set_target(change.exchange.nats_url, change.exchange.account_id)
            return []
        self.forget()
        self.swap_to_nothing(change.caller)
        return []

    # --- events ----------------------------------------------------------------------

    def _jwt_exp(self) -> int:
        return self._snapshot.exp if self._snapshot else 0

    def _record(self, type_: str, *, caller: str = "", nc_id: str = "", jwt_exp: int | None = None,
                reason: str = "") -> None:
        self._events.record(
            type_, caller=caller, nc_id=nc_id,
            jwt_exp=self._jwt_exp() if jwt_exp is None else jwt_exp, reason=reason,
        )

    def events(self) -> list[Event]:
        return self._events.snapshot()

    # --- inbox -----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case RecordEvent():
                self._record(message.type, caller=message.caller, nc_id=message.nc_id,
                             jwt_exp=message.jwt_exp, reason=message.reason)
            case ClientEvent():
                self._on_client_event(message)
            case CredentialChanged():
                self._snapshot = message.snapshot
            case Rotate() if self._superseded(message.snapshot):
                pass  # a newer credential is already on its way: rotate once, to that one
            case Rotate():
                self._snapshot = message.snapshot
                self._rotate_in_place()
            case RotationDue():
                self._rotation_pending = False
                self._rotate_in_place()
            case ProbeFinished():
                self._on_probe_finished(message)
            case IdentityChanged():
                return self.react(message)
            case _:
                logger.warning("NatsActor: unexpected message %r", message)
        return None

    def _superseded(self, snapshot: CredentialSnapshot) -> bool:
        """True when the refresh loop has published a newer generation than ``snapshot``'s."""
        box = self._refresh_box
        return box is not None and snapshot.generation < box.value.generation

    def _on_client_event(self, ev: ClientEvent) -> None:
        self._record(ev.kind, caller=ev.caller, nc_id=ev.nc_id, reason=ev.reason)
        if ev.kind == "closed":
            self._kick_connect()
        self._publish()

    # --- rebuild / swap ---------------------------------------------------------------

    def rebuild(self, caller: str) -> None:
        """daemon.md §5.1. Raises the classified dial error on failure."""
        if not self._url:
            return
        snap = self._snapshot
        inst = self._installed
        if (
            inst is not None
            and inst.nc.is_connected
            and snap is not None
            and ((inst.exp, inst.gen) == (snap.exp, snap.generation) or self._rotation_in_hand(inst))
        ):
            return
        if snap is None or not snap.jwt or not snap.seed:
            self._dial_error = errors.PpzError(errors.E_NATS_UNREACHABLE)
            self._publish()
            raise self._dial_error
        self._dials += 1
        nc_id = f"nc-{self._pid}-{self._dials}"
        servers = server_urls(self._url)
        budget = CONNECT_TIMEOUT * max(1, len(servers)) + 3.0
        try:
            try:
                nc = self._loop.run(self._dial(servers, nc_id), budget)
            except Exception as exc:  # noqa: BLE001
                if not _lost_during_connect(str(exc)):
                    raise
                # The server may have refused the CONNECT line and closed before its -ERR was
                # read: dial once more, verbosely, to learn (and report) the real reason.
                nc = self._loop.run(self._dial(servers, nc_id, verbose=True), budget)
        except Exception as exc:  # noqa: BLE001 - every dial failure is classified
            text = str(exc) or type(exc).__name__
            logger.warning("NATS dial %s failed: %s", nc_id, text)
            self._dial_error = classify_dial_error(text)
            self._publish()
            raise self._dial_error from None
        self._dial_error = None
        self._swap(caller, _Installed(nc=nc, nc_id=nc_id, exp=snap.exp, gen=snap.generation))
        self._arm_presence()

    def _rotation_in_hand(self, inst: _Installed) -> bool:
        """An in-place rotation to the newest credential is scheduled (the 2 s spacing) and the
        installed connection's own credential is still valid: rebuilding now would swap a
        healthy connection (closing every follow) only to rotate it a moment later."""
        return self._rotation_pending and inst.exp > time.time() + 1.0

    def swap_to_nothing(self, caller: str) -> None:
        """Replace the installed connection by nothing (logout, credentials gone)."""
        if self._installed is not None:
            self._swap(caller, None)

    def _swap(self, caller: str, new: _Installed | None) -> None:
        """daemon.md §5.2, in the spec's order."""
        old = self._installed
        old_id = old.nc_id if old else "-"
        new_id = new.nc_id if new else "-"
        self._record("swap", caller=caller, nc_id=new.nc_id if new else "",
                     reason=f"old={old_id} new={new_id}")
        # Published before the broadcast: a follow that registers after it (and so is not
        # closed by it) finds the swap under way when it checks, and ends for a redial.
        self._publish(replacing=True)
        pykka.ActorRegistry.broadcast(ConnectionSwapped(old_nc_id=old_id, new_nc_id=new_id),
                                      target_class=FollowActor)
        was_connected = bool(old and old.nc.is_connected)
        self._installed = new
        self._publish()
        if new is not None:
            self._rearm_watches(caller, new)
            try:
                self._loop.run(new.nc.flush(timeout=int(SWAP_FLUSH_CAP)), SWAP_FLUSH_CAP + 0.5)
            except Exception:  # noqa: BLE001 - a slow flush does not undo the swap
                logger.debug("flush after swap failed", exc_info=True)
        else:
            for watch in self._watches.values():
                watch.sub = None  # re-armed by the next swap
                watch.wake()
        if old is not None and old is not new:
            self._loop.submit(self._close_quietly(old.nc, grace=close_grace(old.exp, new is not None)))
        if new is not None:
            if old is None:
                self._record("connect", caller=caller, nc_id=new.nc_id, reason="initial connection")
            elif not was_connected:
                self._record("reconnect", caller=caller, nc_id=new.nc_id, reason="rebuilt connection")

    # --- watch registry (daemon.md §5.4) ---------------------------------------------------

    def arm_watch(self, watch_id: str, acct: str, on_subject: Callable[[str], None],
                  wake: Callable[[], None]) -> None:
        """Register a ListWatch and subscribe it to ``<acct>.>`` on the installed connection."""
        inst = self._installed
        if inst is None:
            raise self._dial_error or errors.PpzError(errors.E_NATS_UNREACHABLE)
        watch = _Watch(acct=acct, on_subject=on_subject, wake=wake)
        try:
            watch.sub = self._loop.run(self._subscribe_watch(inst.nc, watch), JS_TIMEOUT)
        except Exception:  # noqa: BLE001 - any subscribe failure
            raise errors.PpzError(errors.E_NATS_UNREACHABLE) from None
        self._watches[watch_id] = watch

    def disarm_watch(self, watch_id: str) -> None:
        watch = self._watches.pop(watch_id, None)
        if watch is not None and watch.sub is not None:
            self._loop.submit(self._unsubscribe_quietly(watch.sub))

    @staticmethod
    async def _subscribe_watch(nc: NatsClient, watch: _Watch) -> Any:
        async def on_msg(msg: Any) -> None:
            watch.on_subject(msg.subject)

        return await nc.subscribe(names.account_wildcard(watch.acct), cb=on_msg)

    @staticmethod
    async def _unsubscribe_quietly(sub: Any) -> None:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection may be gone
            pass

    def _rearm_watches(self, caller: str, new: _Installed) -> None:
        """Re-arm every watch on ``new`` while the old connection is still open."""
        for watch in list(self._watches.values()):
            old_sub = watch.sub
            try:
                watch.sub = self._loop.run(self._subscribe_watch(new.nc, watch), JS_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - recorded
                watch.sub = None
                self._record("warn", caller=f"rearmWatches/{caller}", nc_id=new.nc_id, reason=str(exc))
            if old_sub is not None:
                self._loop.submit(self._unsubscribe_quietly(old_sub))
            watch.wake()

    @staticmethod
    async def _close_quietly(nc: NatsClient, grace: float = 0.0) -> None:
        """Close ``nc``; after a swap, ``grace`` lets requests already in flight on it finish."""
        if grace:
            await asyncio.sleep(grace)
        try:
            await nc.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail
            logger.debug("close of old connection failed", exc_info=True)

    # --- dialling (runs on the loop) ----------------------------------------------------

    def _jwt_cb(self) -> bytes:
        snap = self._snapshot
        if snap is None or not snap.jwt:
            raise RuntimeError("no NATS credential")
        return snap.jwt.encode()

    def _sig_cb(self, nonce: str) -> bytes:
        snap = self._snapshot
        if snap is None or not snap.seed:
            raise RuntimeError("no NATS credential")
        kp = nkeys.from_seed(bytearray(snap.seed.encode()))
        return base64.b64encode(kp.sign(nonce.encode()))

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass

    async def _dial(self, servers: list[str], nc_id: str, verbose: bool = False) -> NatsClient:
        nc = NatsClient()
        dial_errors: list[str] = []
        dialling = True

        def caller() -> str:
            return "rotate" if self._rotating_nc_id == nc_id else "nats-client"

        def last_error() -> str:
            err = nc.last_error
            return str(err) if err else ""

        async def error_cb(exc: Exception) -> None:
            text = str(exc) or type(exc).__name__
            if dialling:
                dial_errors.append(text)
            logger.info("NATS client %s: %s", nc_id, text)

        async def disconnected_cb() -> None:
            if not dialling:
                self._tell_self(ClientEvent(kind="disconnect", nc_id=nc_id, caller=caller(),
                                            reason=last_error()))

        async def reconnected_cb() -> None:
            url = nc.connected_url
            text = f"{url.scheme}://{url.netloc}" if url else ""
            waiter = self._rotation_waiters.pop(nc_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(True)
            self._tell_self(ClientEvent(kind="reconnect", nc_id=nc_id, caller=caller(), reason=text))

        async def closed_cb() -> None:
            waiter = self._rotation_waiters.pop(nc_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
            if not dialling:
                self._tell_self(ClientEvent(kind="closed", nc_id=nc_id, caller=caller(),
                                            reason=last_error()))

        try:
            # One attempt per server: nats-py retries each server until its reconnect count
            # exceeds max_reconnect_attempts, so a fraction below 1 means "try once"; the
            # real limits are installed once the first connect succeeded.
            await nc.connect(
                servers=servers,
                name="ppz-daemon",
                connect_timeout=int(CONNECT_TIMEOUT),
                allow_reconnect=False,
                max_reconnect_attempts=0.5,  # type: ignore[arg-type]
                reconnect_time_wait=0,
                ping_interval=PING_INTERVAL,
                max_outstanding_pings=MAX_PINGS_OUT,
                no_echo=False,
                # Verbose: nats-py then reads the server's answer to CONNECT before its PING,
                # so a refused CONNECT ("maximum control line exceeded") is reported as such
                # instead of as a lost connection. Only used to re-dial after such a loss.
                verbose=verbose,
                user_jwt_cb=self._jwt_cb,
                signature_cb=self._sig_cb,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                closed_cb=closed_cb,
            )
        except Exception as exc:  # noqa: BLE001 - re-raised with the dial's own errors
            detail = "; ".join(dict.fromkeys(dial_errors)) or str(exc) or type(exc).__name__
            raise RuntimeError(detail) from None
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = RECONNECT_ATTEMPTS
        nc.options["reconnect_time_wait"] = RECONNECT_WAIT
        dialling = False
        return nc

    # --- presence -------------------------------------------------------------------------

    def _arm_presence(self) -> None:
        inst = self._installed
        acct = self._account_id
        if inst is None or not acct:
            return
        heartbeats = self._heartbeats

        async def on_beat(msg: Any) -> None:
            # A swapped-out connection lingers for a grace period: its beats (tagged with the
            # account it was armed under) must not reach the cache once it is replaced.
            if self._installed is not inst:
                return
            handle = presence_handle(msg.subject)
            if not handle or heartbeats is None:
                return
            payload = decode_payload(msg.data)
            if payload is None:
                return
            try:
                heartbeats.tell(Beat(handle=handle, account_id=acct, payload=payload,
                                     arrived_at=time.time()))
            except pykka.ActorDeadError:
                pass

        try:
            sub = self._loop.run(inst.nc.subscribe(names.presence_wildcard(acct), cb=on_beat), JS_TIMEOUT)
            inst.subs.append(sub)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            self._record("warn", caller="subscribePresence", nc_id=inst.nc_id, reason=str(exc))

    # --- in-place rotation (daemon.md §5.9) -----------------------------------------------

    def _rotate_in_place(self) -> None:
        snap = self._snapshot
        inst = self._installed
        if snap is None:
            return
        if inst is None or not inst.nc.is_connected:
            self._fallback_rebuild()
            return
        if (inst.exp, inst.gen) == (snap.exp, snap.generation):
            # Already dialled with this credential (an ensure-NATS rebuild swapped while the
            # rotation waited out its spacing): rotating would only drop it for nothing.
            return
        wait = self._last_rotation_at + ROTATE_SPACING - time.monotonic()
        if wait > 0:
            if not self._rotation_pending:
                self._rotation_pending = True
                tell_later(self.actor_ref, wait, RotationDue())
            return
        self._record("rotate", caller="OnRefreshed-callback", nc_id=inst.nc_id, jwt_exp=snap.exp,
                     reason="in-place reconnect")
        self._rotating_nc_id = inst.nc_id
        try:
            ok = self._loop.run(self._force_reconnect(inst), ROTATE_WAIT + 1.0)
        except Exception:  # noqa: BLE001 - a failed rotation falls back to a rebuild
            logger.warning("in-place rotation of %s failed", inst.nc_id, exc_info=True)
            ok = False
        finally:
            self._rotating_nc_id = ""
            # Spacing counts from the end of a rotation: nats-py sleeps its reconnect wait when
            # a server was connected to less than that long ago.
            self._last_rotation_at = time.monotonic()
        if ok and self._installed is inst:
            inst.exp, inst.gen = snap.exp, snap.generation
            self._publish()
            return
        self._fallback_rebuild()

    async def _force_reconnect(self, inst: _Installed) -> bool:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._rotation_waiters[inst.nc_id] = waiter
        options = inst.nc.options
        saved_wait = options["reconnect_time_wait"]
        # The server is healthy: reconnect at once rather than after the client's reconnect
        # wait (nats-py applies it when the last connect to that server is recent).
        options["reconnect_time_wait"] = 0
        try:
            await inst.nc.force_reconnect()
            return await asyncio.wait_for(waiter, ROTATE_WAIT)
        except TimeoutError:
            return False
        finally:
            options["reconnect_time_wait"] = saved_wait
            self._rotation_waiters.pop(inst.nc_id, None)

    def _fallback_rebuild(self) -> None:
        try:
            self.rebuild("OnRefreshed-callback")
        except errors.PpzError as exc:
            logger.warning("rebuild after refresh failed: %s", exc.message)

    # --- failure report (daemon.md §6) ------------------------------------------------------

    def report_failure(self, cause: str) -> Future[None]:
        """A JetStream request timed out on a nominally connected connection: probe it.

        Returns the report's outcome, done once the probe finished and, when it failed, the
        connection is closed: a caller that retries after it gets a rebuilt connection instead
        of the same stalled one. A report already in flight is not repeated; its outcome is
        returned (one probe, one event).
        """
        if self._report is not None:
            return self._report
        outcome: Future[None] = Future()
        inst = self._installed
        # A reconnecting client (an in-place rotation, a dropped server) loses the PONG of a
        # flush issued meanwhile (daemon.md §5.9): it is not nominally connected, no probe.
        if inst is None or not inst.nc.is_connected:
            outcome.set_result(None)
            return outcome
        self._report = outcome
        nc_id = inst.nc_id
        nc = inst.nc

        async def probe() -> None:
            error = ""
            try:
                # A core round trip: it tests the connection itself. A JetStream request would
                # also fail while a cluster elects a meta leader, on a healthy connection.
                await nc.flush(timeout=int(PROBE_TIMEOUT))
            except Exception as exc:  # noqa: BLE001 - any failure fails the probe
                error = str(exc) or type(exc).__name__
            self._tell_self(ProbeFinished(nc_id=nc_id, cause=cause, error=error))

        self._loop.submit(probe())
        return outcome

    def _on_probe_finished(self, msg: ProbeFinished) -> None:
        outcome = self._report or Future()
        self._report = None
        if not msg.error:
            self._record("warn", caller="reportNATSFailure", nc_id=msg.nc_id,
                         reason=f"kept connection: probe passed after {msg.cause}")
            outcome.set_result(None)
            return
        self._record("force_close", caller="reportNATSFailure", nc_id=msg.nc_id,
                     reason=f"{msg.cause}; probe: {msg.error}")
        inst = self._installed
        if inst is None or inst.nc_id != msg.nc_id:
            outcome.set_result(None)
            return
        kick = self._kick_connect

        async def close_then_reconnect() -> None:
            try:
                # Closing marks the client closed at once; a socket that takes nothing more
                # must not hold the outcome (or the loop) for long.
                await asyncio.wait_for(self._close_quietly(inst.nc), PROBE_TIMEOUT)
            except TimeoutError:
                logger.warning("closing %s after a failed probe timed out", inst.nc_id)
            finally:
                kick()
                outcome.set_result(None)

        self._loop.submit(close_then_reconnect())


def close_grace(exp: int, replaced: bool, now: float | None = None) -> float:
    """How long a swapped-out connection stays open for requests in flight on it: none when
    nothing replaces it, and never up to its credential's expiry (``exp``): the server would
    close it then with "user authentication expired", which reads as a missed rotation
    (daemon.md §8.7) although the connection was already replaced."""
    if not replaced:
        return 0.0
    if exp <= 0:
        return SWAP_CLOSE_GRACE  # no known expiry
    left = exp - (time.time() if now is None else now) - EXPIRY_MARGIN
    return max(0.0, min(SWAP_CLOSE_GRACE, left))


def presence_handle(subject: str) -> str:
    """The handle of a presence subject ``<acct>._presence[.<m>…].<handle>``, or ``""``."""
    tokens = subject.split(".")
    if len(tokens) < 3 or tokens[1] != "_presence" or not names.is_uuid(tokens[0]):
        return ""
    return tokens[-1]


def decode_payload(data: bytes) -> str | None:
    """The envelope payload of a message body, or None when it is undecodable."""
    try:
        return Envelope.decode(data).payload
    except Exception:  # noqa: BLE001 - undecodable beats are ignored
        return None


class NatsProxy(ActorMemberMixin, pykka.ActorProxy[NatsActor]):
    """The typed proxy of :class:`NatsActor`."""

    view = proxy_method(NatsActor.view)
    set_target = proxy_method(NatsActor.set_target)
    forget = proxy_method(NatsActor.forget)
    events = proxy_method(NatsActor.events)
    rebuild = proxy_method(NatsActor.rebuild)
    swap_to_nothing = proxy_method(NatsActor.swap_to_nothing)
    arm_watch = proxy_method(NatsActor.arm_watch)
    disarm_watch = proxy_method(NatsActor.disarm_watch)
    report_failure = proxy_method(NatsActor.report_failure)
