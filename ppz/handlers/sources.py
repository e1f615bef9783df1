"""IPC handlers for sources, handles, namespaces, pipes and completion (spec/ipc.md §7.4–7.9,
§7.16–7.18, §7.21).

Every handler runs on its connection's thread: it asks ``StateActor`` for what it needs (the
session's namespace, a cached manifold), makes the server call itself, and reports the result
back to ``StateActor`` (remember, forget, set current). No actor waits for the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ppz import errors, names
from ppz.actors.state import CompletionFlight, SessionView
from ppz.handlers.target import tell_streams
from ppz.messages import StreamsForgotten
from ppz.serverclient import PipeSpec
from ppz.system import System, list_sources

logger = logging.getLogger(__name__)

Reply = dict[str, Any]

# How long a Complete waits for the load another caller runs. That load is bounded by the
# server client's 5 s timeout; this only guards against a loader that never reports.
COMPLETE_WAIT = 15.0


def _stale() -> Reply:
    """Complete's answer when logged out or when the listing failed (ipc.md §7.21)."""
    return {"sources": [], "stale": True}


# --- shared pieces --------------------------------------------------------------------------------


def _session(system: System, p: dict[str, Any]) -> SessionView:
    return system.state.session(p["session"]).get()


def _checked_handle(handle: str) -> str:
    """Handle validation (ipc.md §6) with the message that names the handle."""
    if not names.valid_handle(handle):
        raise errors.invalid_handle(handle)
    return handle


def _text(reply: Mapping[str, Any], key: str) -> str:
    value = reply.get(key)
    return value if isinstance(value, str) else ""


def _with_manifold(reply: Reply, manifold: str) -> Reply:
    """``manifold`` is omitted at root."""
    if manifold:
        reply["manifold"] = manifold
    return reply


def _source_created(system: System, handle: str, kind: str, server_reply: Mapping[str, Any]) -> Reply:
    """Create/EnsurePTY: remember the handle with the server's manifold, and build the reply."""
    handle = _text(server_reply, "handle") or handle
    manifold = _text(server_reply, "manifold")
    system.state.remember(handle, manifold, kind).get()
    reply = _with_manifold({"handle": handle}, manifold)
    reply["subject"] = _text(server_reply, "subject")
    reply["pipes"] = sorted(names.auto_pipes(kind))
    return reply


# --- Create / EnsurePTY (ipc.md §7.4, §7.5) -------------------------------------------------------


def create(system: System, p: dict[str, Any]) -> Reply:
    creds = system.require_login()
    handle = _checked_handle(p["handle"])
    kind = p["kind"] or names.KIND_MESSAGE
    manifold = p["manifold"] or _session(system, p).namespace
    server_reply = system.server.create_source(creds, handle, kind, manifold)
    reply = _source_created(system, handle, kind, server_reply)
    if kind != names.KIND_PTY:  # a pty source never becomes current
        system.state.set_current(p["session"], reply["handle"]).get()
    return reply


def ensure_pty(system: System, p: dict[str, Any]) -> Reply:
    creds = system.require_login()
    handle = _checked_handle(p["handle"])
    server_reply = system.server.ensure_pty(creds, handle)
    return _source_created(system, handle, names.KIND_PTY, server_reply)


# --- Connect / Switch / Disconnect (ipc.md §7.6–7.8) -----------------------------------------------


def connect(system: System, p: dict[str, Any]) -> Reply:
    creds = system.require_login()
    handle = p["handle"]
    if not names.valid_handle(handle):
        raise errors.PpzError(errors.E_INVALID_HANDLE)  # the standard message (§7.6)
    namespace = _session(system, p).namespace
    try:
        server_reply = system.server.create_source(creds, handle, names.KIND_MESSAGE, namespace)
    except errors.PpzError as exc:
        if exc.code != errors.E_SOURCE_TAKEN:
            raise
        system.state.remember_known(handle).get()
    else:
        system.state.remember(handle, _text(server_reply, "manifold"), names.KIND_MESSAGE).get()
    system.state.set_current(p["session"], handle).get()
    return {"handle": handle}


def switch(system: System, p: dict[str, Any]) -> Reply:
    creds = system.require_login()
    handle = p["handle"]
    listed = list_sources(system, creds)  # always: it refreshes the caches
    if not any(source.handle == handle for source in listed):
        raise errors.source_not_found(handle)  # no regex check first (§7.7)
    system.state.set_current(p["session"], handle).get()
    return {"handle": handle}


def disconnect(system: System, p: dict[str, Any]) -> Reply:
    system.require_login()
    system.state.set_current(p["session"], "").get()
    return {}


# --- SetNamespace / UnsetNamespace (ipc.md §7.9) ---------------------------------------------------


def set_namespace(system: System, p: dict[str, Any]) -> Reply:
    system.require_login()
    namespace = p["namespace"]
    bad = names.invalid_manifold_segment(namespace)
    if bad is not None:
        raise errors.namespace_segment_invalid(bad)
    system.state.set_namespace(p["session"], namespace).get()
    return {"namespace": namespace}


def unset_namespace(system: System, p: dict[str, Any]) -> Reply:
    system.require_login()
    system.state.set_namespace(p["session"], "").get()
    return {}


# --- PipeCreate / PipeSet / PipeDestroy (ipc.md §7.16, §7.17) --------------------------------------


def _pipe_write(system: System, p: dict[str, Any], *, creating: bool) -> Reply:
    creds = system.require_login()
    name = p["name"]
    if not names.valid_pipe(name):
        raise errors.pipe_name_invalid(name)
    if creating and name in names.RESERVED_PIPES_FOR_CREATE:
        raise errors.pipe_name_reserved(name)
    handle = p["source_handle"] or p["handle"]
    if handle:
        _checked_handle(handle)
    spec = PipeSpec(
        name=name,
        manifold=p["manifold"] or _session(system, p).namespace,
        ttl_seconds=p["ttl_seconds"],
        max_msgs=p["max_msgs"],
        max_bytes=p["max_bytes"],
    )
    server = system.server
    if handle:
        collared = server.create_pipe if creating else server.set_pipe
        return collared(creds, handle, spec)  # the server's reply, passed through
    uncollared = server.create_uncollared if creating else server.set_uncollared
    return uncollared(creds, spec)


def pipe_create(system: System, p: dict[str, Any]) -> Reply:
    return _pipe_write(system, p, creating=True)


def pipe_set(system: System, p: dict[str, Any]) -> Reply:
    return _pipe_write(system, p, creating=False)


def pipe_destroy(system: System, p: dict[str, Any]) -> Reply:
    creds = system.require_login()
    name = p["name"] or p["bare_target"]
    if not names.valid_pipe(name):
        raise errors.pipe_name_invalid(name)
    handle = p["handle"]
    if handle:
        _checked_handle(handle)
        system.server.delete_pipe(creds, handle, name)
        manifold = system.state.manifold(handle).get()
    else:
        manifold = p["manifold"] or _session(system, p).namespace
        system.server.delete_uncollared(creds, name, manifold)
    tell_streams(system, StreamsForgotten())
    return _with_manifold({"handle": handle}, manifold) | {"name": name}


# --- SourceDestroy (ipc.md §7.18) -------------------------------------------------------------------


def source_destroy(system: System, p: dict[str, Any]) -> Reply:
    creds = system.require_login()
    handle = _checked_handle(p["handle"])
    manifold = system.state.manifold(handle).get()  # read before the source is gone
    system.server.delete_source(creds, handle)
    tell_streams(system, StreamsForgotten())
    system.state.forget_handle(handle).get()
    system.state.clear_current_everywhere(handle).get()
    return _with_manifold({"handle": handle}, manifold)


# --- Complete (ipc.md §7.21) — works logged out -----------------------------------------------------


def complete(system: System, p: dict[str, Any]) -> Reply:
    """Warm → from memory. Cold → one shared ``GET /api/v1/sources`` (the first cold caller runs
    it, every other one waits for the same result). Failure or logged out → stale, no error."""
    if system.creds() is None:
        return _stale()
    claim = system.state.claim_completion().get()
    snapshot = claim.snapshot
    flight = claim.flight
    if flight is not None:
        if claim.loader:
            _load_completion(system, flight)
        try:
            snapshot = flight.result.result(timeout=COMPLETE_WAIT)
        except TimeoutError:
            logger.warning("Complete: the shared source listing did not finish in time")
            snapshot = None
    if snapshot is None:
        return _stale()
    sources = [{"handle": handle, "pipes": list(snapshot[handle])} for handle in sorted(snapshot)]
    return {"sources": sources, "stale": False}


def _load_completion(system: System, flight: CompletionFlight) -> None:
    """The loader's part: one listing with the flight's credential, always reported back."""
    sources = None
    try:
        sources = tuple(system.server.list_sources(flight.creds))
    except errors.PpzError as exc:
        logger.info("Complete: source listing failed: %s: %s", exc.code, exc.message)
    finally:
        system.state.finish_completion_load(flight, sources).get()


HANDLERS: dict[str, Callable[[System, dict[str, Any]], Reply]] = {
    "Create": create,
    "EnsurePTY": ensure_pty,
    "Connect": connect,
    "Switch": switch,
    "Disconnect": disconnect,
    "SetNamespace": set_namespace,
    "UnsetNamespace": unset_namespace,
    "PipeCreate": pipe_create,
    "PipeSet": pipe_set,
    "PipeDestroy": pipe_destroy,
    "SourceDestroy": source_destroy,
    "Complete": complete,
}
