"""FollowActor: one open follow connection (spec/ipc.md §7.13 step 12, daemon.md §5.2, §5.3).

Each follow (``Read`` with ``follow``) is a ``FollowActor``: it owns the client's socket, the
follow's per-message work (a :class:`Live`, built by the ``Read`` handler and from then on run
only on this actor's thread), the consumer feeding it and the ``nc_id`` that consumer was
opened on. pykka's actor registry is the follow registry: ``NatsActor`` broadcasts
``ConnectionSwapped`` and the daemon's stop broadcasts ``Shutdown`` to every ``FollowActor``;
either makes it close its socket (the client sees EOF and redials) and stop. So does finding,
once subscribed, that its ``nc_id`` no longer serves (a swap whose broadcast went out before
this follow existed).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

from ppz.actors.later import tell_later
from ppz.messages import ConnectionSwapped, FollowDelivery, Shutdown

logger = logging.getLogger(__name__)

FLUSH_EVERY = 0.05


class Live(Protocol):
    """A follow's work per live message, and how its noted cursor is written."""

    def deliver(self, seq: int, data: bytes) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FlushDue:
    """Write the follow's noted cursor now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Handover:
    """The follow's live work moves from the loop to this actor (its socket would block):
    attach ``live``, run ``resume`` (finish the message the loop could not write), and from
    now on deliveries arrive as ``FollowDelivery``."""

    live: Live
    resume: Callable[[], None]


class FollowActor(pykka.ThreadingActor):
    """One open follow connection."""

    use_daemon_thread = True

    def __init__(self, *, conn: socket.socket, serves: Callable[[str], bool] = lambda nc_id: True,
                 flush_every: float = FLUSH_EVERY) -> None:
        super().__init__()
        self.conn = conn
        self.nc_id = ""
        self._serves = serves
        self._live: Live | None = None
        self._sub: Any = None
        self._loop: Any = None
        self._flush_every = flush_every
        self._last_flush = 0.0
        self._flush_armed = False

    def attach(self, live: Live) -> None:
        """Where live messages go. Its noted cursor is written at most every ``flush_every``
        seconds while messages flow, and always before the follow ends, so a client that
        redials never sees a repeat. A delivery before this is dropped."""
        self._live = live

    def ping(self) -> None:
        """Answers while the follow lives (an evicted one raises ``ActorDeadError`` instead):
        checked before its consumer is created."""

    def subscribed(self, nc_id: str, sub: Any, loop: Any) -> bool:
        """The consumer feeding this follow, opened on connection ``nc_id`` (unsubscribed on
        ``loop`` when the follow ends). False when ``nc_id`` is already stale: the follow was
        swapped out before it existed, and ends now for a redial."""
        self.nc_id, self._sub, self._loop = nc_id, sub, loop
        if self._serves(nc_id):
            return True
        logger.info("follow opened on swapped-out %s; ending it for a redial", nc_id)
        self._evict()
        return False

    def on_receive(self, message: Any) -> Any:
        match message:
            case FollowDelivery(seq=seq, data=data):
                if self._live is not None:
                    try:
                        self._live.deliver(seq, data)
                    except Exception:  # noqa: BLE001 - a bad message must not end the follow
                        logger.exception("follow delivery failed")
                self._maybe_flush()
            case Handover(live=live, resume=resume):
                self._live = live
                try:
                    resume()
                except Exception:  # noqa: BLE001 - a bad message must not end the follow
                    logger.exception("follow delivery failed")
                self._maybe_flush()
            case FlushDue():
                self._flush_armed = False
                self._run_flush()
            case ConnectionSwapped() | Shutdown():
                self._evict()
            case _:
                logger.warning("FollowActor: unexpected message %r", message)
        return None

    def _evict(self) -> None:
        """End the follow under the client: flush, close the socket (EOF, no error), stop."""
        self._run_flush()
        self._close()
        self.stop()

    def _maybe_flush(self) -> None:
        if self._live is None:
            return
        # Nothing else queued: write now, as if per message. A backlog is written at most every
        # flush_every seconds (and when it drains), instead of once per message.
        if self.actor_inbox.empty() or time.monotonic() - self._last_flush >= self._flush_every:
            self._run_flush()
        elif not self._flush_armed:
            self._flush_armed = True
            tell_later(self.actor_ref, self._flush_every, FlushDue())

    def _run_flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._live is not None:
            try:
                self._live.flush()
            except Exception:  # noqa: BLE001 - a failed cursor write is retried by the next flush
                logger.exception("follow cursor write failed")

    def _close(self) -> None:
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and self._loop is not None:
            self._loop.submit(unsubscribe_quietly(sub))

    def on_stop(self) -> None:
        self._run_flush()
        self._unsubscribe()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._close()
        self._unsubscribe()


async def unsubscribe_quietly(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - the connection may be gone
        pass
