"""CursorsActor: the one owner of the cursor files (spec/home.md §2.4, nats.md §8).

Every read-modify-write of ``cursors/<session>.json`` runs in this actor's mailbox, which
serialises them (no lock). A drain asks where to start (``get``) and seeds or advances with
an ask, so the file is written before its reply; a follow tells ``Advance`` from its own
actor, whose flushes are already coalesced (at most every 50 ms under backlog, always before
its socket closes), and anything that asks later is answered after that write.

Told advances are coalesced per file: they are noted, and every noted advance is written
``WRITE_EVERY`` (50 ms) after the first of them, one read and one rewrite per cursor file
however many advances it collected (1 000 follows and a message every few ms would otherwise
be 1 000 rewrites per message: the profile of the 1 000-follows curve had this actor at 73 %
of the daemon's samples). Every ask (``load``, ``get``, ``seed``, ``advance``), an identity
change and the actor's stop write the noted advances first, so nothing that asks later sees a
cursor older than one a follow told before.

It reacts to ``IdentityChanged``: the ``Logout`` verb's broadcast makes it delete
``cursors/`` in its own mailbox, between two writes, and while logged out it writes nothing,
so a follow's last flush or a drain that ends after the logout cannot bring a cursor back
(behaviour 21: after logging in again every retained message is unread).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from ppz import home
from ppz.actors.identity import IdentityListener
from ppz.actors.later import tell_later
from ppz.cursors import CursorEntry
from ppz.home import CursorStore, Home
from ppz.messages import Advance, IdentityChanged

logger = logging.getLogger(__name__)

WRITE_EVERY = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteDue:
    """Write the noted advances now."""


class CursorsActor(IdentityListener):
    """Owns the cursor files; see the module docstring."""

    use_daemon_thread = True

    def __init__(self, *, home_: Home, write_every: float = WRITE_EVERY) -> None:
        super().__init__()
        self._home = home_
        self._store = CursorStore(home_)
        # False from a logout (or the credential disappearing) until the next identity.
        self._logged_in = True
        self._write_every = write_every
        # Told advances not written yet: session -> (key, seq, created) in arrival order.
        self._noted: dict[str, list[tuple[str, int, int]]] = {}
        self._write_armed = False

    def load(self, session: str) -> dict[str, CursorEntry]:
        """All entries of a session (a fresh dict: the caller may keep it)."""
        self._write_noted()
        return self._store.load(session)

    def get(self, session: str, key: str) -> CursorEntry | None:
        self._write_noted()
        return self._store.get(session, key)

    def seed(self, session: str, key: str, seq: int, created: int) -> bool:
        """Seed an entry (see ``CursorStore.seed``); logged out, nothing is written."""
        self._write_noted()
        return self._logged_in and self._store.seed(session, key, seq, created)

    def advance(self, session: str, key: str, seq: int, created: int) -> bool:
        """Advance and report the write; OSError reaches the asking caller. Logged out,
        nothing is written."""
        self._write_noted()
        return self._logged_in and self._store.advance(session, key, seq, created)

    def on_identity_changed(self, change: IdentityChanged) -> list[str]:
        self._write_noted()
        self._logged_in = change.creds is not None
        if change.remove_cursors:
            return home.remove_paths(self._home.cursors_dir)
        return []

    def _note(self, session: str, key: str, seq: int, created: int) -> None:
        if not self._logged_in:
            return
        self._noted.setdefault(session, []).append((key, seq, created))
        if not self._write_armed:
            self._write_armed = True
            tell_later(self.actor_ref, self._write_every, WriteDue())

    def _write_noted(self) -> None:
        """One read and at most one rewrite per session with noted advances."""
        noted, self._noted = self._noted, {}
        if not self._logged_in:
            return
        for session, moves in noted.items():
            try:
                self._store.advance_many(session, moves)
            except OSError as exc:
                # The follow's next flush carries a higher or equal sequence and retries.
                logger.warning("cursor write for session %s failed: %s", session, exc)

    def on_stop(self) -> None:
        self._write_noted()

    def on_receive(self, message: Any) -> Any:
        match message:
            case Advance(session=session, key=key, seq=seq, created=created):
                self._note(session, key, seq, created)
            case WriteDue():
                self._write_armed = False
                self._write_noted()
            case IdentityChanged():
                return self.react(message)
            case _:
                logger.warning("CursorsActor: unexpected message %r", message)
        return None


class CursorsProxy(ActorMemberMixin, pykka.ActorProxy[CursorsActor]):
    """The typed proxy of :class:`CursorsActor`."""

    load = proxy_method(CursorsActor.load)
    get = proxy_method(CursorsActor.get)
    seed = proxy_method(CursorsActor.seed)
    advance = proxy_method(CursorsActor.advance)
