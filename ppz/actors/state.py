"""StateActor: the credential, per-session state, caches, login check and reloads.

It owns everything ``spec/home.md`` puts on disk except cursors and the event log: the
credential, session → current handle, session → namespace, the three source caches, the
login check, and the 50 ms poller / SIGHUP reload (all-or-nothing). It also keeps the streams
a lookup found per connection (``StreamSeen``/``StreamGone``/``StreamsForgotten`` tells from
handlers and the loop), published in :class:`StateView` for the warm Send path. When the identity
changes or disappears (login, logout, reload) it broadcasts one ``IdentityChanged`` to the
refresh loop, the connection owner, the heartbeat cache and the cursor owner
(:mod:`ppz.actors.identity`); it never waits for their reactions, so no ask can come back to
it in a cycle, and hands them to the caller that must wait (the ``Login``/``Logout`` handler).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from ppz import errors, home, names
from ppz.actors.identity import IdentityReactions, broadcast_identity
from ppz.home import Credentials, Home, LoadedState
from ppz.messages import (
    IdentityChanged,
    LoginChecked,
    Poll,
    Reload,
    StreamGone,
    StreamNews,
    StreamSeen,
    StreamsForgotten,
)
from ppz.published import Published
from ppz.serverclient import ExchangeReply, SourceInfo

logger = logging.getLogger(__name__)

DEFAULT_SESSION = "default"
# Never equal to a real pair of file signatures, so the poller's next tick reloads.
_FORGOTTEN: tuple[Any, Any] = ("forgotten", "forgotten")
STREAMS_SEEN_TTL = 30.0
STREAMS_SEEN_CAP = 10_000


def note_stream_news(seen: dict[tuple[str, str], float], news: StreamNews, now: float) -> bool:
    """Apply ``news`` to ``seen`` ((nc_id, stream) → monotonic expiry); True when it changed
    enough to publish. An entry seen again within half its life is not republished."""
    match news:
        case StreamSeen(nc_id=nc_id, stream=stream):
            if seen.get((nc_id, stream), 0.0) > now + STREAMS_SEEN_TTL / 2:
                return False
            if len(seen) > STREAMS_SEEN_CAP:
                seen.clear()
            seen[(nc_id, stream)] = now + STREAMS_SEEN_TTL
            return True
        case StreamGone(nc_id=nc_id, stream=stream):
            return seen.pop((nc_id, stream), None) is not None
        case StreamsForgotten():
            changed = bool(seen)
            seen.clear()
            return changed


@dataclass(frozen=True, slots=True, kw_only=True)
class StateView:
    """Immutable snapshot of the identity and what target resolution reads, published for
    request handlers (the hot path reads it instead of asking the actor)."""

    creds: Credentials | None = None
    login_check: str = ""
    current: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    namespace: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    known: frozenset[str] = frozenset()
    manifolds: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Streams a lookup found recently, per connection: (nc_id, stream) → monotonic expiry.
    streams_seen: Mapping[tuple[str, str], float] = field(default_factory=lambda: MappingProxyType({}))

    def stream_fresh(self, nc_id: str, stream: str) -> bool:
        """True when a lookup on ``nc_id`` found ``stream`` recently (the warm Send path)."""
        return self.streams_seen.get((nc_id, stream), 0.0) > time.monotonic()

    def session(self, session: str) -> SessionView:
        key = session_key(session)
        return SessionView(current=self.current.get(key, ""), namespace=self.namespace.get(key, ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionView:
    """One session's current handle and namespace."""

    current: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class CompletionFlight:
    """One cold load of the completion snapshot (ipc.md §7.21), shared by every caller that
    found the snapshot cold while it runs. ``creds`` is the credential to load with; ``result``
    resolves to the snapshot, or to None when the load failed (the reply is then stale)."""

    creds: Credentials
    result: Future[Mapping[str, tuple[str, ...]] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletionClaim:
    """What :meth:`StateActor.claim_completion` hands a ``Complete`` caller: the warm
    ``snapshot``; or the ``flight`` to wait on, which exactly one caller (``loader``) runs and
    ends with :meth:`StateActor.finish_completion_load`; or neither when logged out."""

    snapshot: Mapping[str, tuple[str, ...]] | None = None
    flight: CompletionFlight | None = None
    loader: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class SourcesFlight:
    """One ``GET /api/v1/sources`` shared by every caller that asked for a listing before it
    started (so each caller's listing still begins after its request). ``after`` is the flight
    that was in progress when this one was claimed: the loader waits for it first, so flights of
    one daemon run one at a time and a burst of callers (1 000 follows) makes a handful of calls,
    not one each. ``result`` resolves to the sources, or to the call's error."""

    creds: Credentials
    after: Future[tuple[SourceInfo, ...]] | None
    result: Future[tuple[SourceInfo, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourcesClaim:
    """What :meth:`StateActor.claim_sources` hands a caller: the ``flight`` to wait on, and
    whether this caller is its ``loader`` (it runs the call and ends it with
    :meth:`StateActor.finish_sources`)."""

    flight: SourcesFlight
    loader: bool = False


class SourcesFlights:
    """The ``GET /api/v1/sources`` single-flight's two slots, kept by :class:`StateActor` (its
    mailbox serialises every method): the flight callers may still join, and the one whose call
    is under way."""

    def __init__(self) -> None:
        self._pending: SourcesFlight | None = None  # claimed, its call not yet started: joinable
        self._running: SourcesFlight | None = None  # its call under way: too late to join

    def claim(self, creds: Credentials) -> SourcesClaim:
        """Join the flight for ``creds`` whose call has not started yet, else open one (the
        caller is its loader) that runs after the flight now under way."""
        pending = self._pending
        if pending is not None and _identity(pending.creds) == _identity(creds):
            return SourcesClaim(flight=pending)
        running = self._running
        flight = SourcesFlight(creds=creds, after=running.result if running is not None else None,
                               result=Future())
        self._pending = flight
        return SourcesClaim(flight=flight, loader=True)

    def start(self, flight: SourcesFlight) -> None:
        """``flight``'s call starts now: later callers open the next flight."""
        if self._pending is flight:
            self._pending = None
        self._running = flight

    def finish(self, flight: SourcesFlight, sources: tuple[SourceInfo, ...] | None,
               error: BaseException | None = None) -> None:
        """End ``flight``: every waiter gets ``sources``, or ``error`` when there are none."""
        if self._pending is flight:
            self._pending = None
        if self._running is flight:
            self._running = None
        if flight.result.done():
            return
        if sources is not None:
            flight.result.set_result(sources)
        else:
            flight.result.set_exception(error or errors.PpzError(errors.E_SERVER_UNREACHABLE))


def _identity(creds: Credentials | None) -> tuple[str, str, str] | None:
    return None if creds is None else (creds.url, creds.api_key, creds.account_id)


def session_key(session: str) -> str:
    """An empty session means ``default``."""
    return session or DEFAULT_SESSION


class StateActor(pykka.ThreadingActor):
    """Owns the identity and per-session state; see the module docstring."""

    use_daemon_thread = True

    def __init__(self, *, home_: Home, loaded: LoadedState, view_box: Published[StateView],
                 kick_connect: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._home = home_
        self._view_box = view_box
        self._kick_connect = kick_connect
        self._creds: Credentials | None = None
        self._current: dict[str, str] = {}
        self._namespace: dict[str, str] = {}
        self._legacy_pending = False
        self._login_check = ""
        self._streams_seen: dict[tuple[str, str], float] = {}
        self._sources_flights = SourcesFlights()
        self._reset_caches()
        self._apply_loaded(loaded)
        self._signatures = self._read_signatures()
        self._reported_errors: set[str] = set()

    # --- views ------------------------------------------------------------------------------

    def _publish(self) -> None:
        self._view_box.value = StateView(
            creds=self._creds,
            login_check=self._login_check,
            current=MappingProxyType(dict(self._current)),
            namespace=MappingProxyType(dict(self._namespace)),
            known=frozenset(self._known),
            manifolds=MappingProxyType(dict(self._manifolds)),
            streams_seen=MappingProxyType(dict(self._streams_seen)),
        )

    def view(self) -> StateView:
        return self._view_box.value

    def session(self, session: str) -> SessionView:
        key = session_key(session)
        return SessionView(current=self._current.get(key, ""), namespace=self._namespace.get(key, ""))

    # --- loading ------------------------------------------------------------------------------

    def _apply_loaded(self, loaded: LoadedState) -> None:
        self._creds = loaded.credentials
        self._current = dict(loaded.current)
        self._namespace = dict(loaded.namespace)
        self._legacy_pending = loaded.legacy_current_migrated
        self._publish()

    def _read_signatures(self) -> tuple[Any, Any]:
        return (home.file_signature(self._home.credentials), home.file_signature(self._home.current_json))

    def _note_own_write(self, *, credentials: bool = False, current: bool = False) -> None:
        """Mark our own write of ``credentials`` and/or ``current.json`` as seen.

        Only the file written is refreshed: another process's change to the other file since
        the last poll must still trigger a reload.
        """
        creds_sig, current_sig = self._signatures
        if credentials:
            creds_sig = home.file_signature(self._home.credentials)
        if current:
            current_sig = home.file_signature(self._home.current_json)
        self._signatures = (creds_sig, current_sig)

    def _reset_caches(self) -> None:
        self._known: set[str] = set()
        self._manifolds: dict[str, str] = {}
        self._completion: dict[str, tuple[str, ...]] = {}
        self._completion_loaded = False

    # --- inbox -----------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case Poll():
                if self._read_signatures() != self._signatures:
                    self._reload()
            case Reload():
                self._reload()
            case LoginChecked(value=value):
                if self._creds is not None:
                    self._login_check = value
                    self._publish()
            case StreamSeen() | StreamGone() | StreamsForgotten():
                if note_stream_news(self._streams_seen, message, time.monotonic()):
                    self._publish()
            case _:
                logger.warning("StateActor: unexpected message %r", message)
        return None

    # --- reload (home.md §5) ---------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            loaded = home.load_state(self._home)
        except home.StateFileError as exc:
            text = str(exc)
            if text not in self._reported_errors:
                self._reported_errors.add(text)
                logger.error("reload abandoned: %s", text)
            self._signatures = _FORGOTTEN  # the next tick retries
            return
        self._reported_errors.clear()
        before = self._creds
        self._apply_loaded(loaded)
        self._signatures = self._read_signatures()
        self._reset_caches()
        self._login_check = ""
        self._publish()
        after = self._creds
        if after is None:
            if before is not None:
                logger.info("credentials gone: logged out")
            broadcast_identity(IdentityChanged(caller="watchState-creds-gone", creds=None))
        elif _identity(before) != _identity(after):
            logger.info("identity changed on disk: reconnecting")
            broadcast_identity(IdentityChanged(caller="watchState-creds-changed", creds=after))
            # Queued behind the broadcast in every listener's mailbox, the connect loop's
            # ensure-NATS finds the old loop stopped and the old connection gone.
            self._kick_connect()

    # --- login / logout / persistence -------------------------------------------------------------

    def install_login(self, creds: Credentials, exchange: ExchangeReply) -> IdentityReactions:
        """Persist and install a fresh login made with ``exchange`` (ipc.md §7.2 steps 2–5),
        and broadcast it; the caller waits for the reactions.

        Raises E_INTERNAL (and changes nothing, broadcasts nothing) when the credential cannot
        be written.
        """
        try:
            home.write_credentials(self._home.credentials, creds)
        except OSError as exc:
            raise errors.PpzError(errors.E_INTERNAL, f"cannot write credentials: {exc}") from None
        self._creds = creds
        self._note_own_write(credentials=True)
        self._reset_caches()
        self._login_check = "ok"
        self._publish()
        return broadcast_identity(IdentityChanged(caller="handleLogin", creds=creds, exchange=exchange))

    def persist_credentials(self, creds: Credentials) -> str:
        """Write a rotated or adopted credential (refresh, cold exchange) without resetting caches.

        Returns "" on success, else the error text (the caller records it).
        """
        if self._creds is None or (self._creds.url, self._creds.api_key) != (creds.url, creds.api_key):
            return "identity changed meanwhile"
        self._creds = creds
        self._publish()
        try:
            home.write_credentials(self._home.credentials, creds)
        except OSError as exc:
            return str(exc)
        finally:
            self._note_own_write(credentials=True)
        return ""

    def logout(self) -> IdentityReactions:
        """The ``Logout`` verb (ipc.md §7.3): delete the credential files, clear the in-memory
        identity and broadcast it (the cursor owner deletes ``cursors/``); the caller waits for
        the reactions, which carry every removal error."""
        problems = home.remove_paths(self._home.credentials, self._home.current_json,
                                     self._home.legacy_current)
        self._creds = None
        self._current.clear()
        self._legacy_pending = False
        self._reset_caches()
        self._login_check = ""
        self._note_own_write(credentials=True, current=True)
        self._publish()
        return broadcast_identity(IdentityChanged(caller="handleLogout", creds=None, remove_cursors=True),
                                  tuple(problems))

    def set_login_check(self, value: str) -> None:
        if self._creds is not None:
            self._login_check = value
            self._publish()

    # --- sessions ------------------------------------------------------------------------------

    def set_current(self, session: str, handle: str) -> None:
        """Set (or clear with "") a session's current handle, written through. E_INTERNAL on failure."""
        key = session_key(session)
        updated = dict(self._current)
        if handle:
            updated[key] = handle
        else:
            updated.pop(key, None)
        self._write_current(updated)

    def clear_current_everywhere(self, handle: str) -> None:
        updated = {k: v for k, v in self._current.items() if v != handle}
        if updated != self._current:
            self._write_current(updated)

    def _write_current(self, updated: dict[str, str]) -> None:
        try:
            home.write_current(self._home, updated)
        except OSError as exc:
            raise errors.PpzError(errors.E_INTERNAL, f"cannot write current.json: {exc}") from None
        finally:
            self._note_own_write(current=True)
        self._current = updated
        self._legacy_pending = False
        self._publish()

    def set_namespace(self, session: str, namespace: str) -> None:
        key = session_key(session)
        updated = dict(self._namespace)
        if namespace:
            updated[key] = namespace
        else:
            updated.pop(key, None)
        try:
            home.write_session_map(self._home.namespace_json, updated)
        except OSError as exc:
            raise errors.PpzError(errors.E_INTERNAL, f"cannot write namespace.json: {exc}") from None
        self._namespace = updated
        self._publish()

    # --- source caches ------------------------------------------------------------------------

    def _sources_listed(self, sources: tuple[Any, ...]) -> None:
        self._known = {s.handle for s in sources}
        self._manifolds = {s.handle: s.manifold for s in sources if s.manifold}
        self._completion = {
            s.handle: tuple(sorted(set(names.auto_pipes(s.kind)) | set(s.pipes))) for s in sources
        }
        self._completion_loaded = True
        self._publish()

    def remember(self, handle: str, manifold: str, kind: str = "") -> None:
        self._known.add(handle)
        if manifold:
            self._manifolds[handle] = manifold
        else:
            self._manifolds.pop(handle, None)
        if self._completion_loaded and kind:
            existing = set(self._completion.get(handle, ()))
            self._completion[handle] = tuple(sorted(existing | set(names.auto_pipes(kind))))
        self._publish()

    def forget_handle(self, handle: str) -> None:
        self._known.discard(handle)
        self._manifolds.pop(handle, None)
        self._completion.pop(handle, None)
        self._publish()

    def is_known(self, handle: str) -> bool:
        return handle in self._known

    def manifold(self, handle: str) -> str:
        return self._manifolds.get(handle, "")

    def completion(self) -> dict[str, tuple[str, ...]] | None:
        """The completion snapshot, or None while it is cold."""
        return dict(self._completion) if self._completion_loaded else None

    def remember_known(self, handle: str) -> None:
        """Connect to an existing source: the handle is known, its manifold and kind are not."""
        self._known.add(handle)
        self._publish()

    # --- completion single-flight (ipc.md §7.21) ------------------------------------------------

    _completion_flight: CompletionFlight | None = None  # the cold load in progress, if any

    def claim_completion(self) -> CompletionClaim:
        """Warm → the snapshot. Cold → the load in flight for this credential, or a new one
        whose loader is this caller. Decided here, in the mailbox: no lock, one request."""
        if self._creds is None:
            return CompletionClaim()
        snapshot = self.completion()
        if snapshot is not None:
            return CompletionClaim(snapshot=snapshot)
        flight = self._completion_flight
        if flight is not None and _identity(flight.creds) == _identity(self._creds):
            return CompletionClaim(flight=flight)
        flight = CompletionFlight(creds=self._creds, result=Future())
        self._completion_flight = flight
        return CompletionClaim(flight=flight, loader=True)

    # --- sources single-flight (ipc.md §6: every listing refreshes the caches) -------------------

    def claim_sources(self, creds: Credentials) -> SourcesClaim:
        return self._sources_flights.claim(creds)

    def start_sources(self, flight: SourcesFlight) -> None:
        self._sources_flights.start(flight)

    def finish_sources(self, flight: SourcesFlight, sources: tuple[SourceInfo, ...] | None,
                       error: BaseException | None = None) -> None:
        """End ``flight``: a successful listing replaces the three source caches when it was made
        with the current identity (one that returns after a logout or a login into another
        account is not applied), before any waiter gets the sources (or ``error``)."""
        if sources is not None and self._creds is not None and \
                _identity(flight.creds) == _identity(self._creds):
            self._sources_listed(sources)
        self._sources_flights.finish(flight, sources, error)

    def finish_completion_load(self, flight: CompletionFlight, sources: tuple[Any, ...] | None) -> None:
        """End ``flight``: a successful listing (``sources``) replaces the caches when the identity
        is unchanged; every waiter gets the snapshot, or None (stale) when it is still cold."""
        if self._completion_flight is flight:
            self._completion_flight = None
        same_identity = _identity(flight.creds) == _identity(self._creds)
        if sources is not None and same_identity:
            self._sources_listed(sources)
        if not flight.result.done():
            flight.result.set_result(self.completion() if same_identity else None)


    # --- login-check probe single-flight (ipc.md §7.1) -------------------------------------------

    _login_probe: Future[str] | None = None  # the probe in flight, if any

    def claim_login_probe(self) -> tuple[Future[str], bool]:
        """The login-check probe in flight, or a new one whose runner is the caller (True):
        concurrent ``Status`` calls share one probe. Decided in the mailbox: no lock."""
        if self._login_probe is not None:
            return self._login_probe, False
        self._login_probe = Future()
        return self._login_probe, True

    def finish_login_probe(self, flight: Future[str], outcome: str) -> None:
        """End ``flight`` with ``outcome`` (``ok``, ``invalid`` or "" when unverified); the next
        claim starts a new probe."""
        if self._login_probe is flight:
            self._login_probe = None
        if not flight.done():
            flight.set_result(outcome)


class StateProxy(ActorMemberMixin, pykka.ActorProxy[StateActor]):
    """The typed proxy of :class:`StateActor`."""

    view = proxy_method(StateActor.view)
    session = proxy_method(StateActor.session)
    install_login = proxy_method(StateActor.install_login)
    persist_credentials = proxy_method(StateActor.persist_credentials)
    logout = proxy_method(StateActor.logout)
    set_login_check = proxy_method(StateActor.set_login_check)
    set_current = proxy_method(StateActor.set_current)
    clear_current_everywhere = proxy_method(StateActor.clear_current_everywhere)
    set_namespace = proxy_method(StateActor.set_namespace)
    remember = proxy_method(StateActor.remember)
    forget_handle = proxy_method(StateActor.forget_handle)
    is_known = proxy_method(StateActor.is_known)
    manifold = proxy_method(StateActor.manifold)
    completion = proxy_method(StateActor.completion)
    remember_known = proxy_method(StateActor.remember_known)
    claim_completion = proxy_method(StateActor.claim_completion)
    finish_completion_load = proxy_method(StateActor.finish_completion_load)
    claim_login_probe = proxy_method(StateActor.claim_login_probe)
    finish_login_probe = proxy_method(StateActor.finish_login_probe)
    claim_sources = proxy_method(StateActor.claim_sources)
    start_sources = proxy_method(StateActor.start_sources)
    finish_sources = proxy_method(StateActor.finish_sources)
