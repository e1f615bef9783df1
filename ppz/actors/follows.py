"""FollowsActor and FollowActor: the open follow connections (spec/daemon.md §5.3).

Each follow (``Read`` with ``follow``) is a ``FollowActor`` holding its client socket. A
``ConnectionSwapped`` or ``Shutdown`` broadcast makes every one of them close its socket (the
client sees EOF and redials) and stop. ``FollowsActor`` keeps the registry.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from ppz.messages import ConnectionSwapped, FollowDelivery, Shutdown

logger = logging.getLogger(__name__)

FLUSH_EVERY = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class FlushDue:
    """Write the follow's noted cursor now."""


class FollowActor(pykka.ThreadingActor):
    """One open follow connection."""

    use_daemon_thread = True

    def __init__(self, *, conn: socket.socket, flush_every: float = FLUSH_EVERY) -> None:
        super().__init__()
        self.conn = conn
        self._sink: Callable[[int, bytes], None] | None = None
        self._flush: Callable[[], None] | None = None
        self._flush_every = flush_every
        self._last_flush = 0.0
        self._flush_armed = False

    def set_sink(self, sink: Callable[[int, bytes], None], flush: Callable[[], None] | None = None) -> None:
        """Where live messages go (write the event, note the cursor, send the receipt), and how
        the noted cursor is written: at most every ``flush_every`` seconds while messages flow,
        and always before the socket is closed, so a client that redials never sees a repeat."""
        self._sink = sink
        self._flush = flush

    def on_receive(self, message: Any) -> Any:
        match message:
            case FollowDelivery(seq=seq, data=data):
                if self._sink is not None:
                    try:
                        self._sink(seq, data)
                    except Exception:  # noqa: BLE001 - a bad message must not end the follow
                        logger.exception("follow delivery failed")
                self._maybe_flush()
            case FlushDue():
                self._flush_armed = False
                self._run_flush()
            case ConnectionSwapped() | Shutdown():
                self._run_flush()
                self._close()
                self.stop()
            case _:
                logger.warning("FollowActor: unexpected message %r", message)
        return None

    def _maybe_flush(self) -> None:
        if self._flush is None:
            return
        # Nothing else queued: write now, as if per message. A backlog is written at most every
        # flush_every seconds (and when it drains), instead of once per message.
        if self.actor_inbox.empty() or time.monotonic() - self._last_flush >= self._flush_every:
            self._run_flush()
        elif not self._flush_armed:
            self._flush_armed = True
            timer = threading.Timer(self._flush_every, self._tell_flush)
            timer.daemon = True
            timer.start()

    def _tell_flush(self) -> None:
        try:
            self.actor_ref.tell(FlushDue())
        except pykka.ActorDeadError:
            pass

    def _run_flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._flush is not None:
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - a failed cursor write is retried by the next flush
                logger.exception("follow cursor write failed")

    def _close(self) -> None:
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def on_stop(self) -> None:
        self._run_flush()
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
