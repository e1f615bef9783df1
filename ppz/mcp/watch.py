"""The background watch of ``ppz mcp`` (spec/agents.md §3.3): the current handle's inbox and the
``--watch`` patterns, with ``ListWatch``, from the moment the server starts.

``ListWatch`` answers as soon as a watched pipe has unread messages, so once everything unread
has been announced the watch waits differently until it is read: it takes a ``List`` snapshot
every :data:`PENDING_POLL` seconds (or at once after a ``read`` through the tools), announcing
pipes whose last message is new, and goes back to ``ListWatch`` when nothing is unread. Each
pipe is announced once per new last sequence. A watch the daemon ends or refuses (a connection
swap, a restart, no daemon yet) is re-armed after :data:`RETRY` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ppz import errors
from ppz.commands.client import error_text
from ppz.mcp.daemonclient import DaemonClient
from ppz.mcp.identity import Identity
from ppz.mcp.notify import Announcement
from ppz.mcp.tools import pipe_rows, read_fields
from ppz.render import list_rows

logger = logging.getLogger(__name__)

PENDING_POLL = 2.0
RETRY = 1.0
SENDERS_SCAN = 100  # unread messages read (without consuming) to name their senders


def watch_patterns(handle: str, extra: list[str]) -> list[str]:
    """``<handle>.inbox`` (when there is a current handle) and the ``--watch`` patterns."""
    return ([f"{handle}.inbox"] if handle else []) + [p for p in extra if p]


def unread_rows(reply: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """``(pipe, last_seq, row)`` of every row of a List reply with unread messages."""
    rows = []
    for (_, _, info), row in zip(list_rows(reply), pipe_rows(reply), strict=True):
        if row["unread"] > 0:
            rows.append((row["pipe"], int(info.get("last_seq") or 0), dict(row)))
    return rows


class Watch:
    """Announces new unread messages through ``announce`` until cancelled."""

    def __init__(self, daemon: DaemonClient, identity: Identity, patterns: list[str],
                 announce: Callable[[list[Announcement]], Awaitable[None]]) -> None:
        self.daemon = daemon
        self.identity = identity
        self.extra = list(patterns)
        self.announce = announce
        self.announced: dict[str, int] = {}  # pipe → the last sequence announced
        self._poked = anyio.Event()
        self._last_error = ""

    def poke(self) -> None:
        """Something may have been read: look again now rather than at the next poll."""
        self._poked.set()

    async def run(self) -> None:
        await self.identity.wait()
        pending = False
        while True:
            try:
                pending = await self.step(pending)
                self._last_error = ""
            except errors.PpzError as err:
                if error_text(err) != self._last_error:
                    self._last_error = error_text(err)
                    logger.warning("watch: %s (retrying every %gs)", self._last_error, RETRY)
                await anyio.sleep(RETRY)

    async def patterns(self) -> list[str]:
        """What is watched now: the session's current handle's inbox and the ``--watch`` patterns."""
        status = await self.daemon.call("Status", {"session": self.daemon.session})
        return watch_patterns(str(status.get("current") or ""), self.extra)

    async def step(self, pending: bool) -> bool:
        """One wait and its announcements; returns whether announced mail is still unread."""
        patterns = await self.patterns()
        if not patterns:
            await self._nap(PENDING_POLL)  # nothing to watch until a handle is current
            return False
        params = {"session": self.daemon.session, "patterns": patterns}
        if pending:
            await self._nap(PENDING_POLL)
            reply = await self.daemon.call("List", params)
        else:
            reply = await self.daemon.call_wait("ListWatch", params)
        rows = unread_rows(reply)
        news = []
        for pipe, last_seq, row in rows:
            if self.announced.get(pipe) != last_seq:
                self.announced[pipe] = last_seq
                news.append(Announcement(pipe=pipe, unread=row["unread"], sender=await self._senders(pipe),
                                         preview=str(row.get("preview", ""))))
        await self.announce(news)
        return bool(rows)

    async def _nap(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._poked.wait()
        self._poked = anyio.Event()

    async def _senders(self, pipe: str) -> str:
        """The distinct senders of the pipe's unread messages (read without consuming), or ""."""
        try:
            fields = read_fields(pipe)
            events = await self.daemon.events(
                "Read", {**fields, "no_advance": True, "head_limit": SENDERS_SCAN, "session": self.daemon.session},
                timeout=self.daemon.timeout)
        except errors.PpzError:
            return ""
        senders: list[str] = []
        for event in events:
            sender = str((event.get("msg") or {}).get("sender") or "")
            if sender and sender not in senders:
                senders.append(sender)
        return ", ".join(senders)
