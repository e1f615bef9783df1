"""FollowsActor and FollowActor: the open follow connections (spec/daemon.md §5.3).

Each follow (``Read`` with ``follow``) is a ``FollowActor`` holding its client socket. A
``ConnectionSwapped`` or ``Shutdown`` broadcast makes every one of them close its socket (the
client sees EOF and redials) and stop. ``FollowsActor`` keeps the registry.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import pykka

from ppz.messages import ConnectionSwapped, FollowDelivery, Shutdown

logger = logging.getLogger(__name__)


class FollowActor(pykka.ThreadingActor):
    """One open follow connection."""

    use_daemon_thread = True

    def __init__(self, *, conn: socket.socket) -> None:
        super().__init__()
        self.conn = conn
        self._sink: Callable[[int, bytes], None] | None = None

    def set_sink(self, sink: Callable[[int, bytes], None]) -> None:
        """Where live messages go (write the event, advance the cursor, send the receipt)."""
        self._sink = sink

    def on_receive(self, message: Any) -> Any:
        match message:
            case FollowDelivery(seq=seq, data=data):
                if self._sink is not None:
                    try:
                        self._sink(seq, data)
                    except Exception:  # noqa: BLE001 - a bad message must not end the follow
                        logger.exception("follow delivery failed")
            case ConnectionSwapped() | Shutdown():
                self._close()
                self.stop()
            case _:
                logger.warning("FollowActor: unexpected message %r", message)
        return None

    def _close(self) -> None:
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def on_stop(self) -> None:
        self._close()


class FollowsActor(pykka.ThreadingActor):
    """The follow registry: starts a FollowActor per follow and counts them."""

    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self._follows: dict[int, pykka.ActorRef[Any]] = {}

    def register(self, conn: socket.socket) -> pykka.ActorRef[Any]:
        ref = FollowActor.start(conn=conn)
        self._follows[conn.fileno()] = ref
        return ref

    def unregister(self, conn: socket.socket) -> None:
        ref = self._follows.pop(conn.fileno(), None)
        if ref is not None and ref.is_alive():
            ref.stop(block=False)

    def count(self) -> int:
        self._follows = {k: r for k, r in self._follows.items() if r.is_alive()}
        return len(self._follows)

    def close_all(self) -> None:
        for ref in list(self._follows.values()):
            if ref.is_alive():
                ref.tell(Shutdown())
        self._follows.clear()
