"""What the console reads from NATS, and its one send path.

Reading uses, per account, one connection as a **read-only** user the server mints for itself
(JetStream stream info, message get and ephemeral ordered consumers; core subscriptions on
replies and the presence subject only; no publish on any data subject). It is opened on the
first page of that account and shared by every page and stream after it. Consumers are
ephemeral with no acks: the console never moves anyone's cursor.

Sending goes through the tenant's server user (which manages the account's streams), with a
PubAck like ``ppz send``.

Everything here runs on the server's event loop (the NATS loop uvicorn serves on); the blocking
account provisioning of :class:`~ppz.server.tenants.Tenants` runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from starlette.concurrency import run_in_threadpool

from ppz import names
from ppz.envelope import Envelope, EnvelopeError
from ppz.server import trust
from ppz.server.console.render import PipeEntry, message_view, presence_row, preview
from ppz.server.natsctl import NatsControl
from ppz.server.settings import rfc3339
from ppz.server.store import Account, Store
from ppz.server.tenants import Tenants

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
KEEP_ALIVE_SECONDS = 15.0
POLL_SECONDS = 0.5
JS_TIMEOUT = 5.0


def reader_permissions(account_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(pub allow, sub allow)`` of the console's read-only user of an account."""
    pub = (
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.MSG.GET.*",
        "$JS.API.CONSUMER.CREATE.*",
        "$JS.API.CONSUMER.CREATE.*.>",
        "$JS.API.CONSUMER.DELETE.*.*",
        "$JS.FC.>",
    )
    sub = ("_INBOX.>", names.presence_wildcard(account_id))
    return pub, sub


def pipe_entries(store: Store, account_id: str) -> list[PipeEntry]:
    """Every pipe of the account (auto-pipes of each source's kind but the heartbeat, which is
    presence, custom pipes and uncollared pipes), sorted by the name ``ppz ls`` shows."""
    rows = store.collared_pipes(account_id)
    entries = []
    for source in store.sources(account_id):
        pipes = set(names.auto_pipes(source.kind)) | {p.name for p in rows.get(source.id, [])}
        pipes.discard("heartbeat")
        entries += [PipeEntry(manifold=source.manifold, handle=source.handle, pipe=p) for p in pipes]
    entries += [PipeEntry(manifold=p.manifold, handle="", pipe=p.name) for p in store.uncollared_pipes(account_id)]
    return sorted(entries, key=lambda e: e.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """Messages of one pipe, oldest first, and where the previous page ends."""

    messages: list[dict[str, Any]]
    last_seq: int
    older: int  # ``before=`` of the previous page; 0 when this page starts at the stream's start


@dataclass(slots=True)
class Beat:
    handle: str
    manifold: str
    payload: str
    arrived_at: str


class ConsoleFeed:
    """The console's NATS side for every account."""

    def __init__(self, *, nats: NatsControl, tenants: Tenants, store: Store) -> None:
        self._nats = nats
        self._tenants = tenants
        self._store = store
        self._readers: dict[str, NATS] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._beats: dict[str, dict[str, Beat]] = {}
        self.closing = False

    async def account(self, account_id: str) -> Account:
        """The account, provisioned (first use may push its NATS account)."""
        return await run_in_threadpool(self._tenants.ensure, account_id)

    async def reader(self, account_id: str) -> NATS:
        """The account's read-only connection, opened on first use."""
        nc = self._readers.get(account_id)
        if nc is not None:
            return nc
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            nc = self._readers.get(account_id)
            if nc is not None:
                return nc
            account = await self.account(account_id)
            assert account.tenant is not None
            pub, sub = reader_permissions(account_id)
            name = f"ppz-console-{account.name}"
            credential = trust.mint_user(
                account.tenant, name=name, now=int(time.time()), ttl=trust.SERVER_USER_TTL,
                pub_allow=pub, sub_allow=sub,
            )
            nc = await self._nats.connect_user(name, credential.jwt, credential.seed)
            await nc.subscribe(names.presence_wildcard(account_id), cb=self._beat_handler(account_id))
            self._readers[account_id] = nc
            return nc

    # --- presence --------------------------------------------------------------------------

    def _beat_handler(self, account_id: str) -> Any:
        async def on_beat(msg: Msg) -> None:
            self._remember_beat(account_id, msg.subject, msg.data, rfc3339_now())

        return on_beat

    def _remember_beat(self, account_id: str, subject: str, data: bytes, arrived_at: str) -> None:
        tokens = subject.split(".")[2:]  # <acct>._presence[.<manifold>].<handle>
        if not tokens:
            return
        try:
            payload = Envelope.decode(data).payload
        except EnvelopeError:
            payload = ""
        beats = self._beats.setdefault(account_id, {})
        old = beats.get(subject)
        if old is None or old.arrived_at <= arrived_at:
            beats[subject] = Beat(handle=tokens[-1], manifold=".".join(tokens[:-1]), payload=payload,
                                  arrived_at=arrived_at)

    async def presence(self, account_id: str) -> list[dict[str, Any]]:
        """A ``who`` row per pty source of the account (and any other handle that beat),
        newest beat first from the live subscription, else the presence stream's last message."""
        nc = await self.reader(account_id)
        sources = await run_in_threadpool(self._store.sources, account_id)
        beats = self._beats.setdefault(account_id, {})
        missing = [s for s in sources if s.kind == names.KIND_PTY
                   and names.subject(account_id, s.manifold, s.handle, "heartbeat") not in beats]

        async def last_beat(manifold: str, handle: str) -> None:
            stream = names.stream_name(account_id, manifold, handle, "heartbeat")
            subject = names.subject(account_id, manifold, handle, "heartbeat")
            try:
                info = await nc.jetstream(timeout=JS_TIMEOUT).stream_info(stream)
                if info.state.last_seq:
                    raw = await nc.jetstream(timeout=JS_TIMEOUT).get_msg(stream, seq=info.state.last_seq)
                    env = Envelope.decode(raw.data or b"{}")
                    self._remember_beat(account_id, subject, raw.data or b"", env.created_at)
                    return
            except (nats.errors.Error, EnvelopeError, TimeoutError) as exc:
                logger.debug("presence of %s: %s", handle, exc)
            beats.setdefault(subject, Beat(handle=handle, manifold=manifold, payload="", arrived_at=""))

        await asyncio.gather(*(last_beat(s.manifold, s.handle) for s in missing))
        now = time.time()
        rows = [presence_row(b.handle, b.manifold, b.payload, b.arrived_at, now) for b in beats.values()]
        return sorted(rows, key=lambda r: r["handle"])

    # --- pipes -----------------------------------------------------------------------------

    async def pipes(self, account_id: str) -> list[PipeEntry]:
        return await run_in_threadpool(pipe_entries, self._store, account_id)

    async def find_pipe(self, account_id: str, name: str) -> PipeEntry | None:
        """The account's pipe shown as ``name`` (``bob.inbox``, ``team-a.room``), or None."""
        return next((p for p in await self.pipes(account_id) if p.name == name), None)

    async def summaries(self, account_id: str, pipes: list[PipeEntry]) -> list[dict[str, Any]]:
        """Per pipe: its name, total messages, last message time and a preview."""
        nc = await self.reader(account_id)
        js = nc.jetstream(timeout=JS_TIMEOUT)

        async def summary(pipe: PipeEntry) -> dict[str, Any]:
            row: dict[str, Any] = {"name": pipe.name, "total": 0, "last": "", "preview": "", "missing": False}
            stream = names.stream_name(account_id, pipe.manifold, pipe.handle, pipe.pipe)
            try:
                info = await js.stream_info(stream)
                row["total"] = info.state.messages
                if info.state.messages and info.state.last_seq:
                    env = decode((await js.get_msg(stream, seq=info.state.last_seq)).data)
                    view = message_view(info.state.last_seq, env)
                    row["last"] = view["created_at"]
                    row["preview"] = preview(view["receipt"] or view["payload"])
                    row["sender"] = view["sender"]
            except nats.js.errors.NotFoundError:
                row["missing"] = True
            except (nats.errors.Error, TimeoutError) as exc:
                logger.debug("summary of %s: %s", pipe.name, exc)
            return row

        return list(await asyncio.gather(*(summary(p) for p in pipes)))

    async def last_seq(self, account_id: str, pipe: PipeEntry) -> int:
        """The sequence of the pipe's newest message (0 when empty or missing)."""
        nc = await self.reader(account_id)
        stream = names.stream_name(account_id, pipe.manifold, pipe.handle, pipe.pipe)
        try:
            return int((await nc.jetstream(timeout=JS_TIMEOUT).stream_info(stream)).state.last_seq)
        except nats.js.errors.NotFoundError:
            return 0

    async def page(self, account_id: str, pipe: PipeEntry, before: int = 0, size: int = PAGE_SIZE) -> Page:
        """Up to ``size`` messages ending before sequence ``before`` (the newest when 0)."""
        nc = await self.reader(account_id)
        js = nc.jetstream(timeout=JS_TIMEOUT)
        stream = names.stream_name(account_id, pipe.manifold, pipe.handle, pipe.pipe)
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return Page(messages=[], last_seq=0, older=0)
        first, last = info.state.first_seq, info.state.last_seq
        end = min(last, before - 1) if before > 0 else last
        start = max(first, end - size + 1, 1)

        async def get(seq: int) -> dict[str, Any] | None:
            try:
                return message_view(seq, decode((await js.get_msg(stream, seq=seq)).data))
            except nats.js.errors.NotFoundError:
                return None  # deleted, or aged out meanwhile

        got = await asyncio.gather(*(get(seq) for seq in range(start, end + 1)))
        return Page(messages=[m for m in got if m is not None], last_seq=last, older=start if start > first else 0)

    async def tail(self, account_id: str, pipe: PipeEntry, after: int) -> AsyncGenerator[dict[str, Any] | None]:
        """Every message after sequence ``after`` as it is stored, from an ephemeral ordered
        consumer; ``None`` every ``KEEP_ALIVE_SECONDS`` without one (a keep-alive). Ends when
        the server stops."""
        nc = await self.reader(account_id)
        stream = names.stream_name(account_id, pipe.manifold, pipe.handle, pipe.pipe)
        subject = names.subject(account_id, pipe.manifold, pipe.handle, pipe.pipe)
        sub = await nc.jetstream(timeout=JS_TIMEOUT).subscribe(
            subject, stream=stream, ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1),
        )
        try:
            quiet = 0.0
            while not self.closing:
                try:
                    msg = await sub.next_msg(timeout=POLL_SECONDS)
                except (nats.errors.TimeoutError, TimeoutError):
                    quiet += POLL_SECONDS
                    if quiet >= KEEP_ALIVE_SECONDS:
                        quiet = 0.0
                        yield None
                    continue
                quiet = 0.0
                yield message_view(msg.metadata.sequence.stream, decode(msg.data))
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def send(self, account_id: str, pipe: PipeEntry, data: bytes) -> int:
        """Publish an encoded envelope on the pipe; the stream sequence."""
        await self.account(account_id)
        stream = names.stream_name(account_id, pipe.manifold, pipe.handle, pipe.pipe)
        subject = names.subject(account_id, pipe.manifold, pipe.handle, pipe.pipe)
        return await self._nats.publish(account_id, subject, data, stream)


def decode(data: bytes | None) -> Envelope:
    """An envelope; a body that is not one shows as its text."""
    try:
        return Envelope.decode(data or b"{}")
    except EnvelopeError:
        return Envelope(payload=(data or b"").decode("utf-8", "replace"))


def rfc3339_now() -> str:
    return rfc3339(time.time())
