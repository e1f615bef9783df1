"""List and ListWatch (spec/ipc.md §7.14, §7.15)."""

from __future__ import annotations

import asyncio
import re
import select
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ppz import errors, names
from ppz import jetstream as js
from ppz.actors.nats import ConnView
from ppz.actors.state import session_key
from ppz.cursors import CursorEntry
from ppz.cursors import effective as cursor_effective
from ppz.cursors import unread as cursor_unread
from ppz.globs import match_any
from ppz.handlers.read import decode_or_none
from ppz.handlers.target import account_of
from ppz.ipc import encode_error, encode_result
from ppz.system import System, fresh_connection, list_sources, require_connection

T = TypeVar("T")

PREVIEW_LEN = 60
PREVIEW_CONCURRENCY = 8
_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_C0 = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# --- List / ListWatch (ipc.md §7.14, §7.15) -------------------------------------------------------


def preview_of(payload: str) -> str:
    text = _CSI.sub("", payload).replace("\n", " ").replace("\t", " ")
    return _C0.sub("", text)[:PREVIEW_LEN]


def pipe_info(info: js.StreamInfo | None, pipe: str, entry: CursorEntry | None, long: bool,
              created_by: str, last_payload: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"pipe": pipe, "total": 0, "unread": 0}
    if info is not None:
        row["total"] = info.messages
        eff = cursor_effective(entry, info.created_ns, info.last_seq)
        row["unread"] = cursor_unread(info.last_seq, eff, info.messages)
        if info.last_seq:
            row["last_seq"] = info.last_seq
        if info.last_ts and info.messages:
            row["last_at"] = info.last_ts
    if last_payload is not None:
        row["preview"] = preview_of(last_payload)
        row["payload"] = last_payload
    if created_by:
        row["created_by"] = created_by
    if long:
        row["ttl_seconds"] = info.max_age_ns // 1_000_000_000 if info else 0
        row["max_msgs"] = info.max_msgs if info else -1
        row["max_bytes"] = info.max_bytes if info else -1
    return row


def list_snapshot(system: System, p: dict[str, Any], view: ConnView | None = None) -> dict[str, Any]:
    acct = account_of(system)
    creds = system.require_login()
    # The server calls run on their own threads beside the NATS listing; the errors keep the
    # spec's order (ipc.md §7.14): the sources call, then NATS, then the uncollared pipes.
    sources_call = in_thread(list_sources, system, creds)
    entries_call = system.cursors.load(session_key(p["session"]))
    if view is None:
        view = fresh_connection(system)  # warm: ensure-NATS would be a no-op
        if view is None:  # cold: ensure-NATS dials, which must not happen when the sources call fails
            sources_call.result()
    pipes_call = in_thread(system.server.list_pipes, creds)
    try:
        if view is None:
            view = require_connection(system)
        streams = list_streams(view, acct)
    except errors.PpzError:
        sources_call.result()  # the sources call's error comes first
        raise
    sources = sources_call.result()
    pipes = pipes_call.result()
    patterns: list[str] = p["patterns"]
    long = p["long"]
    entries = entries_call.get()
    # Decide the rows first, then fetch the last message of every non-empty stream (8 at once).
    wanted: dict[str, int] = {}
    src_rows: list[tuple[Any, list[tuple[str, str, str]]]] = []
    for src in sources:
        creators = {pi.pipe: pi.created_by for pi in src.pipe_infos}
        all_pipes = sorted(set(names.auto_pipes(src.kind)) | set(src.pipes))
        chosen = []
        for pipe in all_pipes:
            if not match_any(patterns, f"{src.handle}.{pipe}"):
                continue
            stream = names.stream_name(acct, src.manifold, src.handle, pipe)
            info = streams.get(stream)
            if info is not None and info.messages > 0:
                wanted[stream] = info.last_seq
            chosen.append((pipe, stream, creators.get(pipe) or src.created_by))
        if chosen:
            src_rows.append((src, chosen))
    un_rows = []
    for up in pipes:
        path = f"{up.manifold}.{up.name}" if up.manifold else up.name
        if not match_any(patterns, path):
            continue
        stream = names.stream_name(acct, up.manifold, "", up.name)
        info = streams.get(stream)
        if info is not None and info.messages > 0:
            wanted[stream] = info.last_seq
        un_rows.append((up, stream))
    payloads = fetch_last_payloads(view, wanted)
    out_sources = []
    for src, chosen in src_rows:
        infos = []
        for pipe, stream, creator in chosen:
            key = names.cursor_key(acct, src.manifold, src.handle, pipe)
            infos.append(pipe_info(streams.get(stream), pipe, entries.get(key), long, creator,
                                   payloads.get(stream)))
        obj: dict[str, Any] = {"handle": src.handle}
        if src.manifold:
            obj["manifold"] = src.manifold
        obj["kind"] = src.kind
        if src.created_by:
            obj["created_by"] = src.created_by
        obj["pipes"] = sorted(set(names.auto_pipes(src.kind)) | set(src.pipes))
        obj["pipe_infos"] = infos
        out_sources.append(obj)
    out_pipes = []
    for up, stream in un_rows:
        key = names.cursor_key(acct, up.manifold, "", up.name)
        row: dict[str, Any] = {}
        if up.manifold:
            row["manifold"] = up.manifold
        row["name"] = up.name
        row["info"] = pipe_info(streams.get(stream), up.name, entries.get(key), long, up.created_by,
                                payloads.get(stream))
        out_pipes.append(row)
    return {"sources": out_sources, "uncollared_pipes": out_pipes}


def in_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run ``fn(*args)`` on a new daemon thread (a blocking HTTP call beside the NATS work)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the result
            future.set_exception(exc)

    threading.Thread(target=run, name="ppz-list-http", daemon=True).start()
    return future


def list_streams(view: ConnView, acct: str) -> dict[str, js.StreamInfo]:
    """The account's streams by name (one paged listing); E_NATS_UNREACHABLE on failure."""
    nc = view.nc
    if nc is None:
        raise view.unusable()
    try:
        return {s.name: s for s in view.run(js.list_streams(nc, names.account_wildcard(acct)))}
    except js.JsError:
        raise errors.PpzError(errors.E_NATS_UNREACHABLE) from None


def fetch_last_payloads(view: ConnView, wanted: dict[str, int]) -> dict[str, str]:
    """The payload of the last message of each stream, at most 8 requests in flight."""
    if not wanted or view.nc is None:
        return {}
    nc = view.nc

    async def fetch_all() -> dict[str, str]:
        gate = asyncio.Semaphore(PREVIEW_CONCURRENCY)

        async def one(stream: str, seq: int) -> tuple[str, str | None]:
            async with gate:
                try:
                    data = await js.get_message(nc, stream, seq)
                except Exception:  # noqa: BLE001 - a missing preview is not an error
                    return stream, None
            env = decode_or_none(data)
            return stream, env.payload if env is not None else None

        results = await asyncio.gather(*(one(s, q) for s, q in wanted.items()))
        return {s: payload for s, payload in results if payload is not None}

    return view.run(fetch_all(), js.API_TIMEOUT * 2)


def list_(system: System, p: dict[str, Any]) -> dict[str, Any]:
    return list_snapshot(system, p)


def any_unread(reply: dict[str, Any]) -> bool:
    rows = [info for src in reply["sources"] for info in src["pipe_infos"]]
    rows += [up["info"] for up in reply["uncollared_pipes"]]
    return any(row.get("unread", 0) > 0 for row in rows)


def subject_could_match(acct: str, subject: str, patterns: list[str]) -> bool:
    """ListWatch wake matching (ipc.md §7.15 step 5)."""
    prefix = acct + "."
    if not subject.startswith(prefix):
        return False
    tokens = subject[len(prefix):].split(".")
    if not tokens or tokens[0].startswith("_"):
        return False
    if not patterns:
        return True
    candidates: list[str] = []
    if len(tokens) == 1:
        candidates.append(tokens[0])
    elif len(tokens) == 2:
        candidates += [f"{tokens[0]}.{tokens[1]}", ".".join(tokens)]
    else:
        candidates += [f"{tokens[-2]}.{tokens[-1]}", ".".join(tokens)]
    return any(match_any(patterns, c) for c in candidates)


def list_watch(system: System, p: dict[str, Any], conn: socket.socket) -> None:
    """A wait call: one List reply once something matching is unread (or an error)."""
    try:
        reply = _list_watch(system, p, conn)
    except errors.PpzError as exc:
        reply = encode_error(exc)
    if reply is None:
        return
    try:
        conn.sendall(reply)
    except OSError:
        pass


def _list_watch(system: System, p: dict[str, Any], conn: socket.socket) -> bytes | None:
    acct = account_of(system)
    view = require_connection(system)
    wake = threading.Event()
    patterns: list[str] = p["patterns"]
    watch_id = uuid.uuid4().hex

    def on_subject(subject: str) -> None:
        if subject_could_match(acct, subject, patterns):
            wake.set()

    system.nats.arm_watch(watch_id, acct, on_subject, wake.set).get()
    try:
        snapshot = list_snapshot(system, p, view)
        while not any_unread(snapshot):
            while not wake.wait(0.2):
                if client_gone(conn):
                    return None
                if system.creds() is None:
                    raise errors.PpzError(errors.E_NOT_LOGGED_IN)  # logged out, connection or not
            wake.clear()
            if client_gone(conn):
                return None
            if system.creds() is None:
                raise errors.PpzError(errors.E_NOT_LOGGED_IN)
            snapshot = list_snapshot(system, p)
        return encode_result(snapshot)
    finally:
        system.nats.disarm_watch(watch_id)


def client_gone(conn: socket.socket) -> bool:
    """True when the client hung up (readable with EOF) or sent anything."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)  # EOF or any byte ends the wait
