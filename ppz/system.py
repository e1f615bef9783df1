"""The running daemon as request handlers see it, and ensure-NATS (spec/daemon.md §4).

:class:`System` bundles the actor proxies, the published snapshots and the HTTP client.
Request handlers orchestrate: the warm entries (``FAST_HANDLERS``) run on the event loop and
read only published snapshots; every other handler runs on its connection's thread, asks
actors, calls the server and runs JetStream coroutines on the connection's loop. Actors never
ask "up" into a handler.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pykka

from ppz import __version__, errors
from ppz.actors.cursors import CursorsProxy
from ppz.actors.heartbeats import HeartbeatsProxy
from ppz.actors.nats import ConnView, NatsProxy
from ppz.actors.refresh import RefreshProxy
from ppz.actors.state import SourcesFlight, StateProxy, StateView
from ppz.home import Credentials, Home
from ppz.messages import RefreshView
from ppz.published import Published
from ppz.serverclient import ServerClient, SourceInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class System:
    """Everything a request handler needs; built once by ``bootstrap``."""

    home: Home
    state: StateProxy
    refresh: RefreshProxy
    nats: NatsProxy
    heartbeats: HeartbeatsProxy
    cursors: CursorsProxy
    kick_connect: Callable[[], None]
    server: ServerClient
    state_box: Published[StateView]
    refresh_box: Published[RefreshView]
    nats_box: Published[ConnView]
    pid: int = os.getpid()
    version: str = __version__

    def creds(self) -> Credentials | None:
        return self.state_box.value.creds

    def require_login(self) -> Credentials:
        """The login gate (ipc.md §6)."""
        creds = self.state_box.value.creds
        if creds is None:
            raise errors.PpzError(errors.E_NOT_LOGGED_IN)
        return creds


def fresh_connection(system: System) -> ConnView | None:
    """The installed connection when ensure-NATS would be a no-op, read without any ask."""
    refresh = system.refresh_box.value
    view = system.nats_box.value
    nc = view.nc
    if (
        nc is not None
        and refresh.exchanged
        and nc.is_connected
        and (view.dialled_exp, view.dialled_gen) == (refresh.exp, refresh.generation)
        and not refresh.due(time.time())
    ):
        return view
    return None


def ensure_nats(system: System) -> ConnView:
    """daemon.md §4: credential → bootstrap (cold exchange or refresh-if-due) → rebuild.

    Returns the connection view (whose ``nc`` may be None when the server gave no NATS URL);
    raises the typed error unchanged, anything untyped as ``E_NATS_UNREACHABLE``.
    """
    creds = system.require_login()
    view = fresh_connection(system)
    if view is not None:
        return view
    try:
        system.refresh.bootstrap(creds).get()
        system.nats.rebuild("ensureNATS").get()
    except errors.PpzError:
        raise
    except Exception as exc:  # noqa: BLE001 - untyped failures become E_NATS_UNREACHABLE
        logger.warning("ensure-NATS failed: %s", exc)
        raise errors.PpzError(errors.E_NATS_UNREACHABLE) from None
    return system.nats_box.value


def require_connection(system: System) -> ConnView:
    """"Requires NATS": ensure-NATS, then insist on an installed connection."""
    view = ensure_nats(system)
    if view.nc is None:
        raise view.unusable()
    return view


def connect_attempt(system: System) -> bool:
    """One round of the background connect loop; True ends the loop (daemon.md §5.5)."""
    if system.creds() is None:
        return True
    try:
        view = ensure_nats(system)
    except errors.PpzError as exc:
        if exc.code in (errors.E_INVALID_API_KEY, errors.E_NOT_LOGGED_IN):
            return True
        logger.info("connect loop: %s: %s", exc.code, exc.message)
        return False
    return not view.url or view.state() == "connected"


def list_sources(system: System, creds: Credentials) -> list[SourceInfo]:
    """``GET /api/v1/sources``; a success replaces the three source caches (ipc.md §6).

    Concurrent callers share one call that starts after each of them asked (the single-flight
    owned by ``StateActor``), so a burst of Reads makes a few calls instead of one each; the
    caches are replaced before any caller gets the listing."""
    claim = system.state.claim_sources(creds).get()
    flight = claim.flight
    if claim.loader:
        run_sources_flight(system, flight)
    return list(flight.result.result())


def run_sources_flight(system: System, flight: SourcesFlight) -> None:
    """The loader's part: wait for the flight under way, make the call, end the flight."""
    sources: tuple[SourceInfo, ...] | None = None
    error: BaseException | None = None
    try:
        if flight.after is not None:
            concurrent.futures.wait([flight.after])
        system.state.start_sources(flight)
        sources = tuple(system.server.list_sources(flight.creds))
    except BaseException as exc:  # noqa: BLE001 - every waiter gets the loader's error
        error = exc
    try:
        system.state.finish_sources(flight, sources, error).get()
    except pykka.ActorDeadError:
        pass
    finally:
        if not flight.result.done():  # the owner is gone (shutdown): end the waiters here
            flight.result.set_exception(error or errors.PpzError(errors.E_SERVER_UNREACHABLE))
