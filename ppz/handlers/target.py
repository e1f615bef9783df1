"""Target resolution for Send and Read (spec/ipc.md §7.11) and the streams known to exist.

StateActor owns the streams seen (``StateView.streams_seen``); handlers and the loop tell it
what they found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pykka

from ppz import errors, names
from ppz import jetstream as js
from ppz.actors.nats import ConnView
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


def lookup_error(system: System, view: ConnView, exc: js.JsError, not_found: errors.PpzError) -> errors.PpzError:
    """The error of a failed stream lookup; a timeout also triggers the failure report."""
    if exc.kind == js.NOT_FOUND:
        return not_found
    if exc.kind == js.TRANSPORT:
        if exc.timeout:
            system.nats.report_failure(f"stream lookup: {exc.text}")
        return errors.PpzError(errors.E_NATS_UNREACHABLE)
    return errors.PpzError(errors.E_INVALID_PIPE)


def account_of(system: System) -> str:
    creds = system.require_login()
    if not names.is_uuid(creds.account_id):
        raise errors.PpzError(errors.E_INTERNAL, "bad account id")
    return creds.account_id


def resolve_target(system: System, p: dict[str, Any]) -> Target:
    acct = account_of(system)
    session = system.state.session(p["session"]).get()
    sender = p.get("sender") or session.current
    bare = p["bare_target"]
    if bare:
        if not names.valid_pipe(bare):
            raise errors.pipe_name_invalid(bare)
        view = require_connection(system)
        stream = names.stream_name(acct, session.namespace, "", bare)
        try:
            view.run(js.stream_info(view.client, stream))
        except js.JsError as exc:
            if exc.kind != js.NOT_FOUND:
                raise lookup_error(system, view, exc, errors.PpzError(errors.E_INVALID_PIPE)) from None
        else:
            tell_streams(system, StreamSeen(nc_id=view.nc_id, stream=stream))
            return Target(acct=acct, subject=names.subject(acct, session.namespace, "", bare), stream=stream,
                          handle="", pipe=bare, sender=sender, view=view)
    handle = p["handle"] or session.current
    from_current = not p["handle"]
    if not handle:
        raise errors.PpzError(errors.E_NO_CURRENT_SOURCE)
    pipe = p["channel"] or "inbox"
    if not names.valid_pipe(pipe):
        raise errors.PpzError(errors.E_INVALID_PIPE)
    if from_current or not system.state.is_known(handle).get():
        creds = system.require_login()
        known = {s.handle for s in list_sources(system, creds)}
        if handle not in known:
            if from_current:
                system.state.set_current(p["session"], "").get()
                raise errors.PpzError(errors.E_NO_CURRENT_SOURCE)
            raise errors.source_not_found(handle)
    view = require_connection(system)
    manifold = system.state.manifold(handle).get()
    stream = names.stream_name(acct, manifold, handle, pipe)
    try:
        view.run(js.stream_info(view.client, stream))
    except js.JsError as exc:
        raise lookup_error(system, view, exc, errors.pipe_not_found(pipe, handle)) from None
    tell_streams(system, StreamSeen(nc_id=view.nc_id, stream=stream))
    return Target(acct=acct, subject=names.subject(acct, manifold, handle, pipe), stream=stream,
                  handle=handle, pipe=pipe, sender=sender, view=view)


def warm_target(system: System, p: dict[str, Any]) -> Target | None:
    """Target resolution from published snapshots only, or None when any step would need the
    state actor, the server or a stream lookup (then the full resolution runs on a thread).

    It applies exactly when the full resolution would not call the server and would find the
    stream: a logged-in session, an explicit handle already known (or an uncollared pipe) and
    a stream seen on the installed, fresh connection.
    """
    state = system.state_box.value
    creds = state.creds
    view = fresh_connection(system)
    if creds is None or view is None or not names.is_uuid(creds.account_id):
        return None
    acct = creds.account_id
    session = state.session(p["session"])
    sender = p["sender"] or session.current
    bare = p["bare_target"]
    handle = p["handle"]
    pipe = p["channel"] or "inbox"
    if bare:
        stream = names.stream_name(acct, session.namespace, "", bare)
        if names.valid_pipe(bare) and state.stream_fresh(view.nc_id, stream):
            return Target(acct=acct, subject=names.subject(acct, session.namespace, "", bare), stream=stream,
                          handle="", pipe=bare, sender=sender, view=view)
        # The collision rules forbid an uncollared pipe named like a source in the source's own
        # manifold: when the source lives in the session's namespace, the uncollared lookup
        # cannot find anything and the collared reading applies directly.
        if handle != bare or state.manifolds.get(handle, "") != session.namespace:
            return None
    if not handle or handle not in state.known or not names.valid_pipe(pipe):
        return None
    manifold = state.manifolds.get(handle, "")
    stream = names.stream_name(acct, manifold, handle, pipe)
    if not state.stream_fresh(view.nc_id, stream):
        return None
    return Target(acct=acct, subject=names.subject(acct, manifold, handle, pipe), stream=stream,
                  handle=handle, pipe=pipe, sender=sender, view=view)
