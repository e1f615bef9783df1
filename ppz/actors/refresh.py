"""RefreshActor: the credential lifetime (spec/daemon.md §3 and the bootstrap of §4).

It owns jwt/seed/exp, the generation counter, the refresh timer and every call to
``/api/v1/auth/exchange`` after login. Its mailbox makes refreshes single-flight: a
``refresh_now_if_due`` that arrives while a refresh runs waits for it, then finds the
credential fresh. A new credential goes to ``NatsActor`` as an immutable snapshot.

It reacts to ``IdentityChanged``: a login starts the loop with the login's exchange reply,
any other identity change (logout, a credential changed or gone on disk) stops it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from ppz import errors
from ppz.actors.identity import IdentityListener
from ppz.home import Credentials
from ppz.messages import (
    CredentialChanged,
    CredentialSnapshot,
    IdentityChanged,
    LoginChecked,
    RecordEvent,
    RefreshTick,
    RefreshView,
    Rotate,
)
from ppz.published import Published
from ppz.serverclient import ExchangeError, ExchangeReply, ServerClient

if TYPE_CHECKING:
    from ppz.actors.nats import NatsProxy
    from ppz.actors.state import StateProxy

logger = logging.getLogger(__name__)

MAX_LEAD = 30.0
MIN_SLEEP = 0.1
RETRY_AFTER = 5.0
ERROR_COALESCE = 60.0


def refresh_lead(exp: float, received_at: float) -> float:
    """``min(30 s, L / 2)`` where L is the lifetime as received."""
    return max(0.0, min(MAX_LEAD, (exp - received_at) / 2.0))


class RefreshActor(IdentityListener):
    """Owns the credential lifetime; see the module docstring."""

    use_daemon_thread = True

    def __init__(
        self,
        *,
        server: ServerClient,
        state: StateProxy,
        nats: NatsProxy,
        view_box: Published[RefreshView],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._server = server
        self._state = state
        self._nats = nats
        self._view_box = view_box
        self._clock = clock
        self._creds: Credentials | None = None
        self._jwt = ""
        self._seed = ""
        self._exp = 0
        self._lead = 0.0
        self._generation = 0
        self._running = False
        self._exchanged = False
        self._last_refresh_at = 0.0
        self._loop_id = 0
        self._timer: threading.Timer | None = None
        self._last_error = ("", 0.0)

    def on_stop(self) -> None:
        self._cancel_timer()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._cancel_timer()

    # --- published view -------------------------------------------------------------

    def _publish(self) -> None:
        self._view_box.value = RefreshView(
            exchanged=self._exchanged,
            exp=self._exp,
            lead=self._lead,
            generation=self._generation if self._running else 0,
            last_refresh_at=self._last_refresh_at,
            timer_armed=self._timer is not None,
        )

    def view(self) -> RefreshView:
        return self._view_box.value

    def _snapshot(self) -> CredentialSnapshot:
        return CredentialSnapshot(jwt=self._jwt, seed=self._seed, exp=self._exp, generation=self._generation)

    # --- loop control -------------------------------------------------------------------

    def start_loop(self, creds: Credentials, reply: ExchangeReply) -> None:
        """Start (or restart) the loop with a fresh exchange reply."""
        self._cancel_timer()
        self._creds = creds
        self._adopt(reply)
        self._running = True
        self._exchanged = True
        self._last_error = ("", 0.0)
        self._loop_id += 1
        self._arm(self._exp - self._lead - self._clock())
        self._publish()
        self._nats.actor_ref.tell(CredentialChanged(snapshot=self._snapshot()))

    def on_identity_changed(self, change: IdentityChanged) -> list[str]:
        if change.creds is not None and change.exchange is not None:
            self.start_loop(change.creds, change.exchange)  # a login
        else:
            self.stop_loop()
        return []

    def stop_loop(self) -> None:
        """Stop the loop (logout, identity change). Idempotent."""
        self._cancel_timer()
        self._loop_id += 1
        self._running = False
        self._exchanged = False
        self._creds = None
        self._jwt = self._seed = ""
        self._exp = 0
        self._lead = 0.0
        self._last_refresh_at = 0.0
        self._publish()

    def _adopt(self, reply: ExchangeReply) -> None:
        self._jwt = reply.nats_user_jwt
        self._seed = reply.nats_user_seed
        self._exp = int(reply.expires_at)
        self._lead = refresh_lead(reply.expires_at, reply.received_at)
        self._generation += 1
        self._last_refresh_at = self._clock()

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        loop_id = self._loop_id
        timer = threading.Timer(max(MIN_SLEEP, delay), self._tick, args=(loop_id,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _tick(self, loop_id: int) -> None:
        try:
            self.actor_ref.tell(RefreshTick(loop_id=loop_id))
        except pykka.ActorDeadError:
            pass

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case RefreshTick(loop_id=loop_id) if loop_id == self._loop_id and self._running:
                self._timer = None
                if self._clock() < self._exp - self._lead:
                    # The timer fired while a refresh-now-if-due refreshed (its tick waited in
                    # the mailbox behind it): the credential is fresh, refreshing again would
                    # only rotate twice. Re-arm for the new credential instead.
                    self._arm(self._exp - self._lead - self._clock())
                    self._publish()
                    return None
                try:
                    self._refresh()
                except errors.PpzError:
                    pass  # recorded and rescheduled by _refresh
            case RefreshTick():
                pass  # a tick of a stopped or replaced loop
            case IdentityChanged():
                return self.react(message)
            case _:
                logger.warning("RefreshActor: unexpected message %r", message)
        return None

    # --- ensure-NATS bootstrap (daemon.md §4 step 2) --------------------------------------

    def bootstrap(self, creds: Credentials) -> None:
        """Cold exchange when none happened yet, else refresh-now-if-due. Raises PpzError."""
        if not self._exchanged:
            self._cold_exchange(creds)
            return
        self.refresh_now_if_due()

    def _cold_exchange(self, creds: Credentials) -> None:
        try:
            reply = self._server.exchange(creds.url, creds.api_key, creds.account_id)
        except ExchangeError as exc:
            if exc.unauthorized:
                self._state.actor_ref.tell(LoginChecked(value="invalid"))
            raise exc.for_cold_exchange() from None
        adopted = creds.with_nats(reply.nats_user_jwt, reply.nats_user_seed,
                                  account_id=reply.account_id, account_name=reply.account_name)
        problem = self._state.persist_credentials(adopted).get()
        if problem:
            logger.warning("cannot persist credentials after exchange: %s", problem)
        self._nats.set_target(reply.nats_url, reply.account_id)
        self.start_loop(adopted, reply)

    def refresh_now_if_due(self) -> None:
        """Refresh synchronously when ``now ≥ exp − lead``. Raises PpzError on failure."""
        if not self._exchanged or self._clock() < self._exp - self._lead:
            return
        self._refresh()

    # --- the refresh itself -----------------------------------------------------------------

    def _refresh(self) -> None:
        creds = self._creds
        if creds is None:
            raise errors.PpzError(errors.E_NOT_LOGGED_IN)
        try:
            reply = self._server.exchange(creds.url, creds.api_key, creds.account_id)
        except ExchangeError as exc:
            self._record_error(exc.reason)
            if exc.unauthorized:
                self._cancel_timer()
                self._state.actor_ref.tell(LoginChecked(value="invalid"))
                self._publish()
                raise errors.PpzError(errors.E_INVALID_API_KEY) from None
            self._arm(RETRY_AFTER)
            self._publish()
            raise errors.PpzError(errors.E_SERVER_UNREACHABLE) from None
        updated = creds.with_nats(reply.nats_user_jwt, reply.nats_user_seed,
                                  account_name=reply.account_name or creds.account_name)
        self._creds = updated
        problem = self._state.persist_credentials(updated).get()
        if problem:
            self._record_error(f"persist credentials: {problem}")
        self._adopt(reply)
        self._running = True
        self._arm(self._exp - self._lead - self._clock())
        self._publish()
        self._nats.actor_ref.tell(Rotate(snapshot=self._snapshot()))

    def _record_error(self, reason: str) -> None:
        """``refresh_error``, coalesced: an identical reason at most once per 60 s."""
        now = time.monotonic()
        last_reason, last_at = self._last_error
        if reason == last_reason and now - last_at < ERROR_COALESCE:
            return
        self._last_error = (reason, now)
        logger.warning("credential refresh failed: %s", reason)
        self._nats.actor_ref.tell(RecordEvent(type="refresh_error", caller="refresh-loop", reason=reason))


def nats_url_override() -> str:
    """``PPZ_NATS_URL``, which replaces the exchange reply's ``nats_url``."""
    return os.environ.get("PPZ_NATS_URL", "")


class RefreshProxy(ActorMemberMixin, pykka.ActorProxy[RefreshActor]):
    """The typed proxy of :class:`RefreshActor`."""

    view = proxy_method(RefreshActor.view)
    start_loop = proxy_method(RefreshActor.start_loop)
    stop_loop = proxy_method(RefreshActor.stop_loop)
    bootstrap = proxy_method(RefreshActor.bootstrap)
    refresh_now_if_due = proxy_method(RefreshActor.refresh_now_if_due)
