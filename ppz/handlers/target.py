"""Target resolution for Send and SendBatch (spec/ipc.md §7.11) and the streams known to exist.

The rules are written once, in :func:`resolve`. What they need to know (the session, whether a
source is listed, which manifold it lives in, whether a stream exists) comes from one of two
sources of facts: :class:`ColdFacts` asks the state actor, the server and JetStream (on the
request's thread); :class:`WarmFacts` reads published snapshots only and gives up (``NotWarm``)
wherever the cold facts would need an ask, an HTTP call or a stream lookup, so the warm mode
runs on the event loop and answers None when the full resolution has to run instead.

StateActor owns the streams seen (``StateView.streams_seen``); handlers and the loop tell it
what they found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

import pykka

from ppz import errors, names
from ppz import jetstream as js
from ppz.actors.nats import ConnView
from ppz.actors.state import SessionView, StateView
from ppz.messages import StreamNews, StreamSeen
from ppz.system import System, fresh_connection, list_sources, require_connection

# --- streams known to exist ------------------------------------------------------------------
# StateActor owns them (StateView.streams_seen); handlers and the loop tell it what they found.


def tell_streams(system: System, news: StreamNews) -> None:
    """Tell the state actor what a lookup or publish found out about a stream (safe on the loop)."""
    try:
        system.state.actor_ref.tell(news)
    except pykka.ActorDeadError:
        pass  # the daemon is stopping


def lookup_error(system: System, view: ConnView, exc: js.JsError, not_found: errors.PpzError) -> errors.PpzError:
    """The error of a failed stream lookup; a timeout also triggers the failure report."""
    if exc.kind == js.NOT_FOUND:
        return not_found
    return lookup_failure(system, view, exc)


def lookup_failure(system: System, view: ConnView, exc: js.JsError) -> errors.PpzError:
    """The error of a stream lookup that failed other than by *not found* (ipc.md §6 classes)."""
    if exc.kind == js.TRANSPORT:
        if exc.timeout:
            system.nats.report_failure(f"stream lookup: {exc.text}")
        return errors.PpzError(errors.E_NATS_UNREACHABLE)
    return errors.PpzError(errors.E_INVALID_PIPE)


def account_of(system: System) -> str:
    """The login gate, then the account id, which must be a UUID (ipc.md §7.11 step 1)."""
    creds = system.require_login()
    if not names.is_uuid(creds.account_id):
        raise errors.PpzError(errors.E_INTERNAL, "bad account id")
    return creds.account_id


# --- target resolution (ipc.md §7.11) --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A resolved send target."""

    acct: str
    subject: str
    stream: str
    handle: str
    pipe: str
    sender: str
    view: ConnView


class NotWarm(Exception):
    """The snapshots cannot tell: the full resolution has to run, off the event loop."""


class Facts(Protocol):
    """What the resolution rules need to know about the world."""

    def account(self) -> str:
        """The login gate and the account id (step 1)."""

    def session(self, session: str) -> SessionView:
        """The session's current handle and namespace."""

    def connection(self) -> ConnView:
        """"Requires NATS" (steps 2 and 5)."""

    def uncollared_exists(self, view: ConnView, stream: str, bare: str, handle: str, namespace: str) -> bool:
        """Whether the uncollared ``stream`` (pipe ``bare`` at ``namespace``) exists (step 2)."""

    def source_listed(self, handle: str, from_current: bool) -> bool:
        """Whether the server lists ``handle`` (step 4)."""

    def clear_current(self, session: str) -> None:
        """The session's current handle is not listed any more: forget it (step 4)."""

    def manifold(self, handle: str) -> str:
        """The manifold ``handle`` lives in, root on a miss (step 6)."""

    def collared_exists(self, view: ConnView, stream: str) -> bool:
        """Whether the collared ``stream`` exists (step 6)."""


def resolve(p: dict[str, Any], facts: Facts) -> Target:
    """The rules of ipc.md §7.11, in their order."""
    acct = facts.account()
    session = facts.session(p["session"])
    sender = p.get("sender") or session.current  # SendBatch has no sender hint
    bare = p["bare_target"]
    if bare:
        if not names.valid_pipe(bare):
            raise errors.pipe_name_invalid(bare)
        view = facts.connection()
        stream = names.stream_name(acct, session.namespace, "", bare)
        if facts.uncollared_exists(view, stream, bare, p["handle"], session.namespace):
            return Target(acct=acct, subject=names.subject(acct, session.namespace, "", bare), stream=stream,
                          handle="", pipe=bare, sender=sender, view=view)
    handle = p["handle"] or session.current
    from_current = not p["handle"]
    if not handle:
        raise errors.PpzError(errors.E_NO_CURRENT_SOURCE)
    pipe = p["channel"] or "inbox"
    if not names.valid_pipe(pipe):
        raise errors.PpzError(errors.E_INVALID_PIPE)
    if not facts.source_listed(handle, from_current):
        if from_current:
            facts.clear_current(p["session"])
            raise errors.PpzError(errors.E_NO_CURRENT_SOURCE)
        raise errors.source_not_found(handle)
    view = facts.connection()
    manifold = facts.manifold(handle)
    stream = names.stream_name(acct, manifold, handle, pipe)
    if not facts.collared_exists(view, stream):
        raise errors.pipe_not_found(pipe, handle)
    return Target(acct=acct, subject=names.subject(acct, manifold, handle, pipe), stream=stream,
                  handle=handle, pipe=pipe, sender=sender, view=view)


class ColdFacts:
    """The facts from their owners: the state actor (asks), the server (``GET /api/v1/sources``)
    and JetStream (``STREAM.INFO``); on a request's thread, never on the loop."""

    __slots__ = ("_system",)

    def __init__(self, system: System) -> None:
        self._system = system

    def account(self) -> str:
        return account_of(self._system)

    def session(self, session: str) -> SessionView:
        return self._system.state.session(session).get()

    def connection(self) -> ConnView:
        return require_connection(self._system)

    def uncollared_exists(self, view: ConnView, stream: str, bare: str, handle: str, namespace: str) -> bool:
        return self._stream_exists(view, stream)

    def source_listed(self, handle: str, from_current: bool) -> bool:
        system = self._system
        if not from_current and system.state.is_known(handle).get():
            return True
        return handle in {s.handle for s in list_sources(system, system.require_login())}

    def clear_current(self, session: str) -> None:
        self._system.state.set_current(session, "").get()

    def manifold(self, handle: str) -> str:
        return self._system.state.manifold(handle).get()

    def collared_exists(self, view: ConnView, stream: str) -> bool:
        return self._stream_exists(view, stream)

    def _stream_exists(self, view: ConnView, stream: str) -> bool:
        """Look the stream up; one that exists is told to the state actor (for the warm path)."""
        try:
            view.run(js.stream_info(view.client, stream))
        except js.JsError as exc:
            if exc.kind == js.NOT_FOUND:
                return False
            raise lookup_failure(self._system, view, exc) from None
        tell_streams(self._system, StreamSeen(nc_id=view.nc_id, stream=stream))
        return True


class WarmFacts:
    """The facts from published snapshots only (``StateView``, ``fresh_connection``), for the
    event loop: no ask, no server call, no lookup. Where the cold facts would need one, they
    raise ``NotWarm``: an implicit handle (always checked with the server), a handle not known,
    a stream not seen recently on the installed connection, a connection that is not fresh."""

    __slots__ = ("_state", "_view")

    def __init__(self, system: System) -> None:
        self._state: StateView = system.state_box.value
        self._view = fresh_connection(system)

    def account(self) -> str:
        creds = self._state.creds
        if creds is None or not names.is_uuid(creds.account_id):
            raise NotWarm
        return creds.account_id

    def session(self, session: str) -> SessionView:
        return self._state.session(session)

    def connection(self) -> ConnView:
        if self._view is None:
            raise NotWarm
        return self._view

    def uncollared_exists(self, view: ConnView, stream: str, bare: str, handle: str, namespace: str) -> bool:
        if self._state.stream_fresh(view.nc_id, stream):
            return True
        # The collision rules forbid an uncollared pipe named like a source in the source's own
        # manifold: when the source lives in the session's namespace, the uncollared lookup
        # cannot find anything and the collared reading applies directly.
        if handle == bare and self._state.manifolds.get(handle, "") == namespace:
            return False
        raise NotWarm

    def source_listed(self, handle: str, from_current: bool) -> bool:
        if from_current or handle not in self._state.known:
            raise NotWarm
        return True

    def clear_current(self, session: str) -> None:
        raise NotWarm  # unreachable: source_listed never says "not listed"

    def manifold(self, handle: str) -> str:
        return self._state.manifolds.get(handle, "")

    def collared_exists(self, view: ConnView, stream: str) -> bool:
        if self._state.stream_fresh(view.nc_id, stream):
            return True
        raise NotWarm


@overload
def resolve_target(system: System, p: dict[str, Any]) -> Target: ...


@overload
def resolve_target(system: System, p: dict[str, Any], *, warm: Literal[True]) -> Target | None: ...


def resolve_target(system: System, p: dict[str, Any], *, warm: bool = False) -> Target | None:
    """Resolve the target of a Send or SendBatch (ipc.md §7.11).

    ``warm``: from published snapshots only, for the event loop; None wherever the full
    resolution would ask an actor, call the server, look a stream up, or answer an error
    (the request then goes to a thread, which resolves it in full and answers).
    """
    if not warm:
        return resolve(p, ColdFacts(system))
    try:
        return resolve(p, WarmFacts(system))
    except (NotWarm, errors.PpzError):
        return None
