"""Read (spec/ipc.md §7.13), its waits and filters (spec/agents.md §1) and read receipts
(spec/nats.md §9).

A drain runs on the request's thread; JetStream coroutines run on the connection's loop through
the published :class:`ConnView`. A follow, and a wait, is handed to its own FollowActor: the
wait's :class:`Wake` runs on that actor's thread only; the follow's :class:`Follow` runs on the
loop while the client's socket takes its messages without blocking, and on the actor's thread
from the first message that would block (:func:`open_follow`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from ppz import errors, names
from ppz import jetstream as js
from ppz.actors.follows import FollowActor, Handover, Live, unsubscribe_quietly
from ppz.actors.nats import PROBE_TIMEOUT, ConnView
from ppz.actors.state import session_key
from ppz.cursors import CursorEntry
from ppz.cursors import effective as cursor_effective
from ppz.envelope import (
    Envelope,
    EnvelopeError,
    effective_priority,
    new_envelope,
    read_message,
)
from ppz.globs import glob_match
from ppz.handlers.target import account_of, lookup_error
from ppz.ipc import encode_error, encode_event
from ppz.messages import Advance, FollowDelivery
from ppz.system import System, list_sources, require_connection
from ppz.timestamps import epoch_seconds

logger = logging.getLogger(__name__)


TABULAR_PIPES = ("inbox", "broadcast")
META_CLAMP = 1000
REPORT_WAIT = 2 * PROBE_TIMEOUT + 1.0  # the probe, then closing the connection it failed


# --- read receipts (nats.md §9) ------------------------------------------------------------------


def wants_receipt(env: Envelope) -> bool:
    return env.ack_requested and bool(env.sender) and not env.subject.startswith("ack:")


def send_receipts(system: System, view: ConnView, acct: str, reader: str, envs: list[Envelope]) -> None:
    """Publish ``ack:read`` receipts asynchronously, in order, each with its own PubAck wait."""
    wanted = [env for env in envs if wants_receipt(env)]
    if not wanted or view.nc is None or view.loop_thread is None:
        return
    nc = view.nc
    manifolds = system.state_box.value.manifolds
    targets = [(names.subject(acct, manifolds.get(env.sender, ""), env.sender, "inbox"), env.id)
               for env in wanted]

    async def publish_all() -> None:
        for subject, original in targets:
            receipt = new_envelope(sender=reader, subject="ack:read", payload="", in_reply_to=original)
            try:
                await js.publish(nc, subject, receipt.encode(), receipt.id)
            except Exception as exc:  # noqa: BLE001 - best-effort: the next one is still sent
                logger.info("read receipt for %s failed: %s", original, exc)

    view.loop_thread.submit(publish_all())


# --- Read (ipc.md §7.13) ---------------------------------------------------------------------------


class ReadWriter:
    """Writes ReadEvents to the client; a write failure means the client went away."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.gone = False

    def event(self, kind: str, value: object) -> None:
        self.write(encode_event(kind, value))

    def write(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            self.conn.sendall(data)
        except OSError:
            self.gone = True

    def write_nowait(self, data: bytes) -> bytes:
        """Write what the socket takes without blocking; returns the rest, ``b""`` when all of
        it was written. Only a socket in blocking mode (a follow's: timeout None) is tried:
        with a timeout, Python waits for writability before the send, MSG_DONTWAIT or not."""
        if self.gone:
            return b""
        if self.conn.gettimeout() is not None:
            return data
        try:
            sent = self.conn.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return data
        except OSError:
            self.gone = True
            return b""
        return data[sent:]


def decode_or_none(data: bytes) -> Envelope | None:
    try:
        return Envelope.decode(data)
    except (EnvelopeError, ValueError):
        return None


def since_filter(since_ms: int) -> Callable[[Envelope], bool]:
    if since_ms <= 0:
        return lambda env: True
    cutoff = time.time() - since_ms / 1000.0

    def recent(env: Envelope) -> bool:
        try:
            return epoch_seconds(env.created_at) >= cutoff
        except ValueError:
            return False

    return recent


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadPlan:
    acct: str
    stream: str
    subject: str
    handle: str
    pipe: str
    manifold: str
    cursor_key: str
    uncollared: bool


def plan_read(system: System, p: dict[str, Any]) -> ReadPlan:
    """Steps 1–2: login gate and target checks (no NATS yet)."""
    acct = account_of(system)
    session = system.state.session(p["session"]).get()
    bare = p["bare_target"]
    if bare:
        if not names.valid_pipe(bare):
            raise errors.pipe_name_invalid(bare)
        ns = session.namespace
        return ReadPlan(acct=acct, stream=names.stream_name(acct, ns, "", bare),
                        subject=names.subject(acct, ns, "", bare), handle="", pipe=bare, manifold=ns,
                        cursor_key=names.cursor_key(acct, ns, "", bare), uncollared=True)
    handle = p["handle"] or session.current
    if not handle:
        raise errors.PpzError(errors.E_NO_CURRENT_SOURCE)
    pipe = p["channel"] or "inbox"
    if not names.valid_pipe(pipe):
        raise errors.PpzError(errors.E_INVALID_PIPE)
    if not names.valid_handle(handle):
        raise errors.invalid_handle(handle)
    creds = system.require_login()
    if handle not in {s.handle for s in list_sources(system, creds)}:
        raise errors.source_not_found(handle)
    manifold = system.state.manifold(handle).get()
    return ReadPlan(acct=acct, stream=names.stream_name(acct, manifold, handle, pipe),
                    subject=names.subject(acct, manifold, handle, pipe), handle=handle, pipe=pipe,
                    manifold=manifold, cursor_key=names.cursor_key(acct, manifold, handle, pipe),
                    uncollared=False)


def lookup_stream(system: System, view: ConnView, plan: ReadPlan) -> tuple[ConnView, js.StreamInfo]:
    """Step 5, with one retry after a transport failure: after a timeout the retry waits for
    the failure report's outcome (a stalled connection is closed by then), then ensure-NATS
    hands it the installed connection, rebuilt if need be."""
    not_found = (errors.uncollared_not_found(plan.pipe, plan.manifold) if plan.uncollared
                 else errors.pipe_not_found(plan.pipe, plan.handle))
    for attempt in (1, 2):
        try:
            return view, view.run(js.stream_info(view.client, plan.stream))
        except js.JsError as exc:
            if exc.kind != js.TRANSPORT or attempt == 2:
                raise lookup_error(system, view, exc, not_found) from None  # a timeout also reports
            if exc.timeout:
                await_failure_report(system, f"stream lookup: {exc.text}")
            view = require_connection(system)
    raise errors.PpzError(errors.E_NATS_UNREACHABLE)


def await_failure_report(system: System, cause: str) -> None:
    """Run the failure report (daemon.md §6) and wait for its outcome: the probe's verdict and,
    when it failed, the stalled connection closed."""
    outcome = system.nats.report_failure(cause).get()
    try:
        outcome.result(timeout=REPORT_WAIT)
    except TimeoutError:
        logger.warning("the failure report after %s did not finish in %.0f s", cause, REPORT_WAIT)


def stdout_meta(view: ConnView, plan: ReadPlan) -> dict[str, int] | None:
    """Step 6: the newest resize of the source's ``stdctrl`` for a collared ``stdout`` read."""
    if plan.uncollared or plan.pipe != "stdout" or view.nc is None:
        return None
    stream = names.stream_name(plan.acct, plan.manifold, plan.handle, "stdctrl")
    try:
        data = view.run(js.last_message(view.nc, stream))
    except Exception:  # noqa: BLE001 - errors here are ignored
        return None
    env = decode_or_none(data) if data else None
    if env is None:
        return None
    import json

    try:
        resize = json.loads(env.payload)
    except ValueError:
        return None
    if not isinstance(resize, dict) or resize.get("type") != "resize":
        return None
    cols, rows = resize.get("cols"), resize.get("rows")
    if not (isinstance(cols, int) and isinstance(rows, int)) or isinstance(cols, bool) or isinstance(rows, bool):
        return None
    if cols <= 0 or rows <= 0:
        return None
    return {"cols": min(cols, META_CLAMP), "rows": min(rows, META_CLAMP)}


def register_follow(system: System, conn: socket.socket) -> pykka.ActorRef[Any]:
    """Register ``conn`` in the follow registry (pykka's): its FollowActor, which a swap or a
    shutdown broadcast reaches from now on."""
    return FollowActor.start(conn=conn, serves=lambda nc_id: system.nats_box.value.serves(nc_id))


def read(system: System, p: dict[str, Any], conn: socket.socket) -> None:
    out = ReadWriter(conn)
    registered: list[pykka.ActorRef[Any]] = []
    try:
        _read(system, p, conn, out, registered)
    except errors.PpzError as exc:
        if not out.gone:
            try:
                conn.sendall(encode_error(exc))
            except OSError:
                pass
    finally:
        for ref in registered:
            stop_quietly(ref)


def stop_quietly(ref: pykka.ActorRef[Any], block: bool = True) -> None:
    try:
        ref.stop(block=block, timeout=2 if block else None)
    except Exception:  # noqa: BLE001 - already stopped, or stopping
        pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    """The read filters of agents.md §1: ``from``, ``subject``, ``no_acks``."""

    senders: frozenset[str] = frozenset()
    subject: str = ""
    no_acks: bool = False

    @classmethod
    def of(cls, p: dict[str, Any]) -> Filters:
        return cls(senders=frozenset(p["from"]), subject=p["subject"], no_acks=p["no_acks"])

    @property
    def view(self) -> bool:
        """``from`` or ``subject`` leave messages out that must stay unread: the read is a view
        (no cursor move, no receipts)."""
        return bool(self.senders) or bool(self.subject)

    def keeps(self, env: Envelope) -> bool:
        if self.no_acks and env.subject.startswith("ack:"):
            return False
        if self.senders and env.sender not in self.senders:
            return False
        return not self.subject or glob_match(self.subject, env.subject)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What steps 7–12 need, fixed once the target is known."""

    plan: ReadPlan
    session: str
    filters: Filters
    advancing: bool
    reader: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Drained:
    """What a drain (steps 7–11) did: messages written, its upper bound ``L``, the stream's
    creation time."""

    written: int
    last: int
    created: int


def _read(system: System, p: dict[str, Any], conn: socket.socket, out: ReadWriter,
          registered: list[pykka.ActorRef[Any]]) -> None:
    plan = plan_read(system, p)
    view = require_connection(system)
    follow = p["follow"]
    deadline = None if follow or p["wait_ms"] <= 0 else time.monotonic() + p["wait_ms"] / 1000.0
    if follow:
        registered.append(register_follow(system, conn))
    view, info = lookup_stream(system, view, plan)
    meta = stdout_meta(view, plan)
    if meta is not None:
        out.event("meta", meta)
    session = session_key(p["session"])
    filters = Filters.of(p)
    reading = Reading(plan=plan, session=session, filters=filters,
                      advancing=not (p["all"] or p["no_advance"] or filters.view),
                      reader=p["sender"] or system.state_box.value.session(session).current)
    drained = drain_unread(system, p, view, info, reading, out)
    if out.gone:
        return
    if follow:
        live = Follow(out=out, cursors=system.cursors.actor_ref, reading=reading, created=drained.created,
                      receipt=functools.partial(send_receipts, system, view, plan.acct, reading.reader))
        ref = registered[0]
        if open_follow(view, plan, drained.last, live, ref):
            wait_client(conn, None)
    elif p["wait_ms"] != 0 and drained.written == 0:
        _wait(system, p, conn, out, view, reading, info, deadline, registered)


def drain_start(p: dict[str, Any], entry: CursorEntry | None, info: js.StreamInfo) -> tuple[int, bool]:
    """Step 7: the drain's start against ``info`` given the stored cursor ``entry``, and whether
    the cursor is to be seeded at the stream's last sequence (``seed_latest``, no entry)."""
    start = info.first_seq
    if p["all"]:
        return start, False
    eff = cursor_effective(entry, info.created_ns, info.last_seq)
    seed = entry is None and p["seed_latest"]
    if seed:
        eff = info.last_seq
    if info.messages > 0 and eff + 1 > start:
        start = eff + 1
    return start, seed and info.last_seq > 0


def drains(info: js.StreamInfo, start: int) -> bool:
    """Step 8's condition: the stream holds messages and ``start`` is within its bound."""
    return info.messages > 0 and start <= info.last_seq


def stored_cursor(system: System, p: dict[str, Any], reading: Reading) -> CursorEntry | None:
    return None if p["all"] else system.cursors.get(reading.session, reading.plan.cursor_key).get()


def seed_cursor(system: System, reading: Reading, info: js.StreamInfo) -> None:
    system.cursors.seed(reading.session, reading.plan.cursor_key, info.last_seq, info.created_ns).get()


def pipeline(p: dict[str, Any], reading: Reading) -> tuple[Callable[[bytes], bool], int]:
    """Step 8's per-message pipeline (the filters, then ``since_ms``) and its head cap."""
    recent = since_filter(p["since_ms"])
    keeps = reading.filters.keeps

    def keep(data: bytes) -> bool:
        env = decode_or_none(data)
        return env is not None and keeps(env) and recent(env)

    return keep, 0 if p["follow"] else max(0, p["head_limit"])


def drain_unread(system: System, p: dict[str, Any], view: ConnView, info: js.StreamInfo, reading: Reading,
                 out: ReadWriter) -> Drained:
    """Steps 7–11: from the cursor to the stream's last sequence (frozen now), through the
    filters, ``since_ms`` and the head cap; emit, then advance the cursor and send receipts."""
    start, seed = drain_start(p, stored_cursor(system, p, reading), info)
    if seed:
        seed_cursor(system, reading, info)
    result = None
    if drains(info, start) and view.nc is not None:
        keep, want = pipeline(p, reading)
        result = view.run(js.drain(view.nc, reading.plan.stream, reading.plan.subject, start, info.last_seq,
                                   keep=keep, want=want),
                          timeout=None)  # each fetch has its own 5 s deadline
    return deliver(system, p, view, info, reading, out, result)


@dataclass(slots=True)
class Spare:
    """A waiting read's drain consumer, created from ``guess`` while the wait is armed, so the
    fresh drain after the wake need not create one: used only while younger than half the
    consumer's inactive threshold (the server deletes it unused after the threshold)."""

    guess: int
    creating: concurrent.futures.Future[str] | None
    born: float

    @classmethod
    def create(cls, view: ConnView, p: dict[str, Any], plan: ReadPlan, before: js.StreamInfo) -> Spare:
        # The first drain delivered nothing: unless it rereads from the first message, the
        # fresh drain most likely starts right after its L.
        guess = max(1, before.first_seq if p["all"] else before.last_seq + 1)
        creating = None
        if view.nc is not None and view.loop_thread is not None:
            creating = view.loop_thread.submit(js.create_drain_consumer(view.nc, plan.stream, plan.subject, guess))
        return cls(guess=guess, creating=creating, born=time.monotonic())

    def take(self, view: ConnView, stream: str) -> concurrent.futures.Future[str] | None:
        """The consumer's creation, if still fresh enough to use; else None (and it is deleted)."""
        if time.monotonic() - self.born > js.INACTIVE_THRESHOLD_NS / 2e9:
            self.discard(view, stream)
        creating, self.creating = self.creating, None
        return creating

    def discard(self, view: ConnView, stream: str) -> None:
        """Delete the consumer, once created, unused (best-effort)."""
        creating, self.creating = self.creating, None
        if creating is not None and view.nc is not None and view.loop_thread is not None:
            view.loop_thread.submit(js.discard_consumer(view.nc, stream, creating))


class FreshDrain:
    """A woken wait's steps 7–11 again (agents.md §1 step 3), in one round trip: started by the
    :class:`Wake` as the message that wakes it arrives (on the wait's FollowActor: the cursor
    ask and the loop's work only start there), finished by the ``Read`` handler. The stream
    info and the cursor are read then, while the spare consumer (created from a guessed start
    while the wait was armed) fetches up to the message that woke it; a start that the new
    info or cursor moves gets its own consumer."""

    def __init__(self, system: System, p: dict[str, Any], view: ConnView, reading: Reading, spare: Spare) -> None:
        self.system, self.p, self.view, self.reading, self.spare = system, p, view, reading, spare
        self.entry: concurrent.futures.Future[CursorEntry | None] = concurrent.futures.Future()
        self.pending: pykka.Future[CursorEntry | None] | None = None
        self.running: concurrent.futures.Future[tuple[js.StreamInfo, js.DrainResult] | None] | None = None

    def start(self, woken: int) -> None:
        """Read the cursor and start the drain's NATS part (the Wake's thread; nothing blocks)."""
        view, plan, p = self.view, self.reading.plan, self.p
        if view.nc is None or view.loop_thread is None:
            return
        if not p["all"]:
            self.pending = self.system.cursors.get(self.reading.session, plan.cursor_key)
        keep, want = pipeline(p, self.reading)
        self.running = view.loop_thread.submit(js.info_and_drain(
            view.nc, plan.stream, plan.subject, self.spare.guess, self.start_of, keep=keep, want=want,
            ready=self.entry, spare=self.spare.take(view, plan.stream), upto=woken))

    def start_of(self, info: js.StreamInfo) -> int | None:
        start = drain_start(self.p, self.entry.result(), info)[0]
        return start if drains(info, start) else None

    def abandon(self) -> None:
        """The wait is over: a drain started but not finished (the deadline passed as a
        message arrived, the client went away, an error) ends, its consumers deleted."""
        self.entry.cancel()  # a no-op once finish() read the cursor
        self.spare.discard(self.view, self.reading.plan.stream)  # unless the drain took it

    def finish(self, out: ReadWriter) -> None:
        """The handler's part, once woken: the cursor to the drain, then steps 8–11."""
        system, p, reading = self.system, self.p, self.reading
        try:
            self.entry.set_result(None if self.pending is None else self.pending.get())
        except Exception as exc:  # noqa: BLE001 - the drain ends with it; raised below
            self.entry.set_exception(exc)
        got = None
        if self.running is not None:
            try:
                got = self.running.result()  # each request and fetch has its own deadline
            except concurrent.futures.CancelledError:  # the daemon is stopping (as ConnView.run)
                raise errors.PpzError(errors.E_NATS_UNREACHABLE) from None
        if got is None:  # the lookup or the consumer failed: the ordinary way, with its retry and errors
            self.entry.result()  # a failed cursor read is raised here
            drain_again(system, p, self.view, reading, out)
            return
        info, result = got
        if drain_start(p, self.entry.result(), info)[1]:
            seed_cursor(system, reading, info)
        deliver(system, p, self.view, info, reading, out, result)


def drain_again(system: System, p: dict[str, Any], view: ConnView, reading: Reading, out: ReadWriter) -> None:
    view, info = lookup_stream(system, view, reading.plan)
    drain_unread(system, p, view, info, reading, out)


def deliver(system: System, p: dict[str, Any], view: ConnView, info: js.StreamInfo, reading: Reading,
            out: ReadWriter, result: js.DrainResult | None) -> Drained:
    """Steps 8 (after the fetches) to 11: ``skip``, ``limit``, the priority sort, the events,
    the cursor and the receipts."""
    plan, session = reading.plan, reading.session
    last, created = info.last_seq, info.created_ns
    keeps = reading.filters.keeps
    follow = p["follow"]
    kept: list[tuple[int, Envelope]] = []
    passed_top = 0  # the highest undecodable or filtered-out sequence: delivered, for the cursor
    capped = False
    if result is not None:
        if result.error is not None and result.error.kind == js.TRANSPORT:
            raise errors.PpzError(errors.E_NATS_UNREACHABLE)
        capped = result.capped
        for m in result.messages:
            env = decode_or_none(m.data)
            if env is None or not keeps(env):
                passed_top = max(passed_top, m.seq)
            elif m.kept:
                kept.append((m.seq, env))
    if p["skip"] > 0:
        kept = kept[p["skip"]:]
    if p["limit"] > 0:
        kept = kept[-p["limit"]:]
    emitted = kept
    if not follow and (plan.uncollared or plan.pipe in TABULAR_PIPES):
        emitted = sorted(kept, key=lambda item: effective_priority(item[1].priority))
    written = 0
    for _, env in emitted:
        out.event("msg", read_message(env))
        if out.gone:
            break
        written += 1
    if capped and kept:
        remaining = last - max(seq for seq, _ in kept)
        if remaining > 0:
            out.event("more_unread", remaining)
    if reading.advancing:
        top = max([seq for seq, _ in kept] + [passed_top])
        if emitted[written:]:
            # The client went away (or a swap closed a follow) mid-drain: the messages whose
            # write failed were not delivered, so the cursor stops short of the first of them.
            top = min(top, min(seq for seq, _ in emitted[written:]) - 1)
        if top > 0:
            system.cursors.advance(session, plan.cursor_key, top, created).get()
            send_receipts(system, view, plan.acct, reading.reader, [env for _, env in emitted[:written]])
    return Drained(written=written, last=last, created=created)


def _wait(system: System, p: dict[str, Any], conn: socket.socket, out: ReadWriter, view: ConnView,
          reading: Reading, before: js.StreamInfo, deadline: float | None,
          registered: list[pykka.ActorRef[Any]]) -> None:
    """agents.md §1, wait steps 2–4: registered like a follow (a swap or a shutdown ends it,
    without a reply), an ordered consumer from L + 1 until a message passes the filters; then
    a fresh drain from the cursor. The deadline passing first ends it with ``timeout``."""
    ref = register_follow(system, conn)
    registered.append(ref)
    spare = Spare.create(view, p, reading.plan, before)
    fresh = FreshDrain(system, p, view, reading, spare)
    wake = Wake(conn=conn, keeps=reading.filters.keeps, on_wake=fresh.start)
    try:
        if open_live(view, reading.plan, before.last_seq, wake, ref):
            wait_client(conn, deadline)
        # Its consumer ends with it (read's finally waits for that); the drain need not wait.
        stop_quietly(ref, block=False)
        if wake.woken.is_set():
            fresh.finish(out)
        elif deadline is not None and time.monotonic() >= deadline:
            out.event("timeout", True)
    finally:
        fresh.abandon()


class Wake:
    """A waiting read's work per live message: the first one that passes the filters starts
    the fresh drain (``on_wake``, with its sequence) and wakes the ``Read`` handler (it shuts
    the reading side of the client's socket, where the handler waits). Owned by the wait's
    FollowActor."""

    def __init__(self, *, conn: socket.socket, keeps: Callable[[Envelope], bool],
                 on_wake: Callable[[int], None] = lambda seq: None) -> None:
        self.conn = conn
        self.keeps = keeps
        self.on_wake = on_wake
        self.woken = threading.Event()

    def deliver(self, seq: int, data: bytes) -> None:
        env = decode_or_none(data)
        if env is None or not self.keeps(env) or self.woken.is_set():
            return
        try:
            self.on_wake(seq)  # the fresh drain starts its NATS part (the handler finishes it)
        finally:
            self.woken.set()
        try:
            self.conn.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def flush(self) -> None:
        """A wait moves no cursor: the drain after it does."""


class Follow:
    """Step 12's work per live message: write it, note its sequence for the cursor, send its
    receipt; and the noted cursor's write. Built here, then owned by the follow's FollowActor
    (only its thread runs it)."""

    def __init__(self, *, out: ReadWriter, cursors: pykka.ActorRef[Any], reading: Reading, created: int,
                 receipt: Callable[[list[Envelope]], None]) -> None:
        self.out = out
        self.cursors = cursors
        self.session = reading.session
        self.key = reading.plan.cursor_key
        self.keeps = reading.filters.keeps
        self.created = created
        self.advancing = reading.advancing
        self.receipt = receipt
        self.delivered = 0  # the highest sequence delivered
        self.written = 0  # the highest sequence told to CursorsActor

    def _kept(self, data: bytes) -> Envelope | None:
        env = decode_or_none(data)
        if env is not None and not self.keeps(env):
            return None  # filtered out (a receipt under no_acks): delivered, for the cursor
        return env

    def deliver(self, seq: int, data: bytes) -> None:
        env = self._kept(data)
        if env is not None:
            self.out.event("msg", read_message(env))
        self._delivered(seq, env)

    def _delivered(self, seq: int, env: Envelope | None) -> None:
        if self.out.gone:
            return  # not delivered: the cursor must not move past it
        if self.advancing:
            self.delivered = max(self.delivered, seq)
            if env is not None:
                self.receipt([env])

    def deliver_nowait(self, seq: int, data: bytes) -> Callable[[], None] | None:
        """``deliver`` on the loop without blocking, its cursor told at once (CursorsActor
        coalesces the writes). When the socket would block, nothing is noted and the returned
        callable finishes this message (blocking) on the follow's actor."""
        env = self._kept(data)
        rest = b"" if env is None else self.out.write_nowait(encode_event("msg", read_message(env)))
        if rest:
            def resume() -> None:
                self.out.write(rest)
                self._delivered(seq, env)
            return resume
        self._delivered(seq, env)
        self.flush()
        return None

    def flush(self) -> None:
        if self.delivered > self.written:
            try:
                self.cursors.tell(Advance(session=self.session, key=self.key, seq=self.delivered,
                                          created=self.created))
            except pykka.ActorDeadError:
                return  # the daemon is stopping
            self.written = self.delivered


def open_live(view: ConnView, plan: ReadPlan, last: int, live: Live, ref: pykka.ActorRef[Any]) -> bool:
    """Step 12's consumer (and a wait's): an ordered consumer from L + 1 feeding ``live``,
    owned by the actor ``ref`` from now on. False when the actor ended meanwhile (a swap)."""
    try:
        ref.proxy().attach(live).get()
    except pykka.ActorDeadError:
        return False  # evicted by a swap before it started: the client redials
    return hand_consumer(view, subscribe(view, plan, last, ref), ref)


def hand_consumer(view: ConnView, sub: Any, ref: pykka.ActorRef[Any]) -> bool:
    """Give the consumer ``sub`` to the follow's actor; False when it ended meanwhile."""
    try:
        return bool(ref.proxy().subscribed(view.nc_id, sub, view.loop_thread).get())
    except pykka.ActorDeadError:  # evicted meanwhile: the consumer is still ours to end
        if view.loop_thread is not None:
            view.loop_thread.submit(unsubscribe_quietly(sub))
        return False


def open_follow(view: ConnView, plan: ReadPlan, last: int, live: Follow, ref: pykka.ActorRef[Any]) -> bool:
    """Step 12's consumer: as :func:`open_live`, but the loop delivers each message itself while
    the client's socket takes it without blocking (no thread wakes per message: 1 000 follows
    are 1 000 actor threads otherwise, woken by every message), and hands ``live`` over to the
    actor ``ref`` for good the first time it would block.

    Until then the loop alone runs ``live`` (the actor has none attached, so its flushes and
    its eviction touch nothing of it) and tells each message's cursor right after writing it,
    in the same loop callback. A swap or a stop closes the socket from the actor: a later loop
    write fails and moves no cursor, and a client that redials looks its stream up through the
    loop before it asks for its cursor, so that ask comes after the advance of every message
    the loop wrote."""
    try:
        ref.proxy().ping().get()
    except pykka.ActorDeadError:
        return False  # evicted by a swap before it started: the client redials
    return hand_consumer(view, subscribe(view, plan, last, ref, OnLoop(live, ref)), ref)


class OnLoop:
    """A follow's deliveries while the loop runs them (see :func:`open_follow`); loop only."""

    def __init__(self, live: Follow, ref: pykka.ActorRef[Any]) -> None:
        self.live = live
        self.ref = ref
        self.handed = False

    def deliver(self, seq: int, data: bytes) -> None:
        if self.handed:
            self.ref.tell(FollowDelivery(seq=seq, data=data))
            return
        try:
            resume = self.live.deliver_nowait(seq, data)
        except Exception:  # noqa: BLE001 - a bad message must not end the follow
            logger.exception("follow delivery failed")
            return
        if resume is not None:
            self.handed = True
            self.ref.tell(Handover(live=self.live, resume=resume))


def subscribe(view: ConnView, plan: ReadPlan, last: int, ref: pykka.ActorRef[Any],
              on_loop: OnLoop | None = None) -> Any:
    """An ordered consumer of the pipe from ``last`` + 1 whose messages are told to ``ref``
    (or given to ``on_loop``)."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    async def on_msg(msg: Any) -> None:
        try:
            seq = msg.metadata.sequence.stream
        except Exception:  # noqa: BLE001 - not a JetStream message
            return
        try:
            if on_loop is not None:
                on_loop.deliver(seq, msg.data)
            else:
                ref.tell(FollowDelivery(seq=seq, data=msg.data))
        except Exception:  # noqa: BLE001 - the follow ended meanwhile (ActorDeadError)
            pass

    nc = view.nc
    assert nc is not None
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1,
                            filter_subject=plan.subject)

    async def go() -> Any:
        jsctx = nc.jetstream(timeout=js.API_TIMEOUT)
        return await jsctx.subscribe(plan.subject, stream=plan.stream, cb=on_msg, ordered_consumer=True,
                                     idle_heartbeat=js.FOLLOW_IDLE_HEARTBEAT, config=config)

    try:
        return view.run(go(), js.API_TIMEOUT + 1.0)
    except Exception as exc:  # noqa: BLE001
        err = js.classify(exc)
        raise errors.PpzError(errors.E_NATS_UNREACHABLE if err.kind == js.TRANSPORT else errors.E_INVALID_PIPE) \
            from None


def wait_client(conn: socket.socket, deadline: float | None) -> None:
    """Block until the client hangs up, sends a byte, the socket is shut down by us (a swap, a
    wake) or ``deadline`` (monotonic; None = none) passes."""
    try:
        conn.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
        conn.recv(1)
    except OSError:  # TimeoutError included
        pass
