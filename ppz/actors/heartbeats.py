"""HeartbeatsActor: the heartbeat cache and its account scoping (spec/daemon.md §7.1, §7.3)."""

from __future__ import annotations

import logging
from typing import Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from ppz.actors.identity import IdentityListener
from ppz.messages import Beat, HeartbeatRow, IdentityChanged

logger = logging.getLogger(__name__)


class Heartbeats:
    """The cache itself: handle → newest row, last write wins.

    Scoped to one account once an identity is known (:meth:`scope`): rows of other accounts
    are dropped and beats tagged with another account are not stamped, so beats the old
    connection's presence subscription still delivers after a login into another account
    never reach the cache (daemon.md §7.3)."""

    def __init__(self) -> None:
        self._rows: dict[str, HeartbeatRow] = {}
        self._account_id = ""  # "" = no scope: every beat is stamped

    def stamp(self, beat: Beat) -> None:
        if self._account_id and beat.account_id != self._account_id:
            return
        self._rows[beat.handle] = HeartbeatRow(
            handle=beat.handle, account_id=beat.account_id, payload=beat.payload, arrived_at=beat.arrived_at
        )

    def snapshot(self, account_id: str) -> list[HeartbeatRow]:
        """Rows tagged with ``account_id``, sorted by handle; an empty account returns nothing."""
        if not account_id:
            return []
        return sorted((r for r in self._rows.values() if r.account_id == account_id), key=lambda r: r.handle)

    def drop_other_accounts(self, account_id: str) -> None:
        self._rows = {h: r for h, r in self._rows.items() if r.account_id == account_id}

    def scope(self, account_id: str) -> None:
        """An identity of account ``account_id``: keep only its rows and, from now on, its beats."""
        self._account_id = account_id
        self.drop_other_accounts(account_id)

    def clear(self) -> None:
        """Logged out: no rows, and no scope (late beats are stamped but ``Who`` shows none)."""
        self._account_id = ""
        self._rows.clear()


class HeartbeatsActor(IdentityListener, Heartbeats):
    """Owns the heartbeat cache; beats arrive as ``Beat`` tells."""

    use_daemon_thread = True

    def __init__(self) -> None:
        IdentityListener.__init__(self)
        Heartbeats.__init__(self)

    def on_identity_changed(self, change: IdentityChanged) -> list[str]:
        if change.creds is None:
            self.clear()
        else:
            self.scope(change.creds.account_id)
        return []

    def on_receive(self, message: Any) -> Any:
        match message:
            case Beat():
                self.stamp(message)
            case IdentityChanged():
                return self.react(message)
            case _:
                logger.warning("HeartbeatsActor: unexpected message %r", message)
        return None


class HeartbeatsProxy(ActorMemberMixin, pykka.ActorProxy[HeartbeatsActor]):
    """The typed proxy of :class:`HeartbeatsActor`."""

    snapshot = proxy_method(HeartbeatsActor.snapshot)
    drop_other_accounts = proxy_method(HeartbeatsActor.drop_other_accounts)
    clear = proxy_method(HeartbeatsActor.clear)
