"""Read (spec/ipc.md §7.13) and read receipts (spec/nats.md §9).

A drain runs on the request's thread; JetStream coroutines run on the connection's loop through
the published :class:`ConnView`. A follow is handed to its own FollowActor.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from ppz import errors, names
from ppz import jetstream as js
from ppz.actors.nats import PROBE_TIMEOUT, ConnView
from ppz.actors.state import session_key
from ppz.cursors import effective as cursor_effective
from ppz.envelope import (
    Envelope,
    EnvelopeError,
    effective_priority,
    new_envelope,
    read_message,
)
from ppz.handlers.target import account_of, lookup_error
from ppz.ipc import encode_error, encode_event
from ppz.messages import Advance, FollowDelivery
from ppz.system import System, list_sources, require_connection
from ppz.timestamps import epoch_seconds

logger = logging.getLogger(__name__)


TABULAR_PIPES = ("inbox", "broadcast")
PREVIEW_LEN = 60
PREVIEW_CONCURRENCY = 8
META_CLAMP = 1000
REPORT_WAIT = 2 * PROBE_TIMEOUT + 1.0  # the probe, then closing the connection it failed
_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_C0 = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


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
        if self.gone:
            return
        try:
            self.conn.sendall(encode_event(kind, value))
        except OSError:
            self.gone = True


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


def read(system: System, p: dict[str, Any], conn: socket.socket) -> None:
    out = ReadWriter(conn)
    follow_ref = None
    try:
        follow_ref = _read(system, p, conn, out)
    except errors.PpzError as exc:
        if not out.gone:
            try:
                conn.sendall(encode_error(exc))
            except OSError:
                pass
    finally:
        if follow_ref is not None:
            system.follows.unregister(conn)


def _read(system: System, p: dict[str, Any], conn: socket.socket, out: ReadWriter) -> Any:
    plan = plan_read(system, p)
    view = require_connection(system)
    follow = p["follow"]
    follow_ref = system.follows.register(conn).get() if follow else None
    view, info = lookup_stream(system, view, plan)
    meta = stdout_meta(view, plan)
    if meta is not None:
        out.event("meta", meta)
    session = session_key(p["session"])
    advancing = not (p["all"] or p["no_advance"])
    cursors = system.cursors
    first, last, total, created = info.first_seq, info.last_seq, info.messages, info.created_ns
    start = first
    if not p["all"]:
        entry = cursors.get(session, plan.cursor_key).get()
        eff = cursor_effective(entry, created, last)
        if entry is None and p["seed_latest"]:
            if last:
                cursors.seed(session, plan.cursor_key, last, created).get()
            eff = last
        if total > 0 and eff + 1 > start:
            start = eff + 1
    recent = since_filter(p["since_ms"])
    head_limit = 0 if follow else max(0, p["head_limit"])
    kept: list[tuple[int, Envelope]] = []
    undecodable_top = 0
    capped = False
    if total > 0 and start <= last and view.nc is not None:
        envs: dict[int, Envelope | None] = {}

        def keep(data: bytes) -> bool:
            env = decode_or_none(data)
            return env is not None and recent(env)

        result = view.run(js.drain(view.nc, plan.stream, plan.subject, start, last, keep=keep, want=head_limit),
                          timeout=None)  # each fetch has its own 5 s deadline
        if result.error is not None and result.error.kind == js.TRANSPORT:
            raise errors.PpzError(errors.E_NATS_UNREACHABLE)
        capped = result.capped
        for m in result.messages:
            env = decode_or_none(m.data)
            envs[m.seq] = env
            if env is None:
                undecodable_top = max(undecodable_top, m.seq)
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
    reader = p["sender"] or system.state_box.value.session(session).current
    if advancing:
        top = max([seq for seq, _ in kept] + [undecodable_top])
        if emitted[written:]:
            # The client went away (or a swap closed a follow) mid-drain: the messages whose
            # write failed were not delivered, so the cursor stops short of the first of them.
            top = min(top, min(seq for seq, _ in emitted[written:]) - 1)
        if top > 0:
            cursors.advance(session, plan.cursor_key, top, created).get()
            send_receipts(system, view, plan.acct, reader, [env for _, env in emitted[:written]])
    if not follow or out.gone:
        return follow_ref
    _follow(system, p, conn, out, view, plan, last, created, advancing, reader, follow_ref)
    return follow_ref


def _follow(system: System, p: dict[str, Any], conn: socket.socket, out: ReadWriter, view: ConnView,
            plan: ReadPlan, last: int, created: int, advancing: bool, reader: str, follow_ref: Any) -> None:
    """Step 12: an ordered consumer from L + 1 until the client goes away or a swap evicts us."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    session = session_key(p["session"])
    cursors = system.cursors.actor_ref

    noted = [0, 0]  # [highest delivered sequence, highest written]; touched by the follow actor only

    def deliver(seq: int, data: bytes) -> None:
        env = decode_or_none(data)
        if env is not None:
            out.event("msg", read_message(env))
        if out.gone:
            return  # not delivered: the cursor must not move past it
        if advancing:
            noted[0] = max(noted[0], seq)
            if env is not None:
                send_receipts(system, view, plan.acct, reader, [env])

    def flush() -> None:
        if noted[0] > noted[1]:
            try:
                cursors.tell(Advance(session=session, key=plan.cursor_key, seq=noted[0], created=created))
            except pykka.ActorDeadError:
                return  # the daemon is stopping
            noted[1] = noted[0]

    try:
        follow_ref.proxy().set_sink(deliver, flush).get()
    except pykka.ActorDeadError:
        return  # evicted by a swap before it started: the client redials
    actor = follow_ref

    async def on_msg(msg: Any) -> None:
        try:
            seq = msg.metadata.sequence.stream
        except Exception:  # noqa: BLE001 - not a JetStream message
            return
        try:
            actor.tell(FollowDelivery(seq=seq, data=msg.data))
        except Exception:  # noqa: BLE001 - the follow ended meanwhile (ActorDeadError)
            pass

    nc = view.nc
    assert nc is not None
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1,
                            filter_subject=plan.subject)

    async def subscribe() -> Any:
        jsctx = nc.jetstream(timeout=js.API_TIMEOUT)
        return await jsctx.subscribe(plan.subject, stream=plan.stream, cb=on_msg, ordered_consumer=True,
                                     idle_heartbeat=js.FOLLOW_IDLE_HEARTBEAT, config=config)

    try:
        sub = view.run(subscribe(), js.API_TIMEOUT + 1.0)
    except Exception as exc:  # noqa: BLE001
        err = js.classify(exc)
        raise errors.PpzError(errors.E_NATS_UNREACHABLE if err.kind == js.TRANSPORT else errors.E_INVALID_PIPE) \
            from None
    if not system.nats_box.value.serves(view.nc_id):
        # Swapped out since this Read took its connection, by a swap whose broadcast came before
        # the follow registered: nothing closes this follow, and its connection closes shortly.
        logger.info("follow of %s opened on swapped-out %s; ending it for a redial", plan.stream, view.nc_id)
        try:
            conn.shutdown(socket.SHUT_RDWR)  # the client sees EOF, without an error, and redials
        except OSError:
            pass
    try:
        wait_client_gone(conn)
    finally:
        try:
            follow_ref.stop(block=True, timeout=2)
        except Exception:  # noqa: BLE001
            pass
        if view.loop_thread is not None:
            view.loop_thread.submit(_unsubscribe_quietly(sub))


async def _unsubscribe_quietly(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - the connection may be gone
        pass


def wait_client_gone(conn: socket.socket) -> None:
    """Block until the client hangs up, sends a byte, or the socket is shut down by us."""
    try:
        conn.settimeout(None)
        conn.recv(1)
    except OSError:
        pass
