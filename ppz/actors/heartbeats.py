"""HeartbeatsActor: the heartbeat cache and its account scoping (spec/daemon.md §7.1, §7.3)."""

from __future__ import annotations

import logging
from typing import Any

import pykka

from ppz.messages import Beat, HeartbeatRow

logger = logging.getLogger(__name__)


class Heartbeats:
    """The cache itself: handle → newest row, last write wins."""

    def __init__(self) -> None:
        self._rows: dict[str, HeartbeatRow] = {}

    def stamp(self, beat: Beat) -> None:
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

    def clear(self) -> None:
        self._rows.clear()


class HeartbeatsActor(pykka.ThreadingActor, Heartbeats):
    """Owns the heartbeat cache; beats arrive as ``Beat`` tells."""

    use_daemon_thread = True

    def __init__(self) -> None:
        pykka.ThreadingActor.__init__(self)
        Heartbeats.__init__(self)

    def on_receive(self, message: Any) -> Any:
        match message:
            case Beat():
                self.stamp(message)
            case _:
                logger.warning("HeartbeatsActor: unexpected message %r", message)
        return None
