"""ConnectLoopActor: the background connect loop (spec/daemon.md §5.5).

``kick()`` starts the loop unless it is already running. The loop itself runs on a worker
thread (it sleeps and calls ensure-NATS, which asks other actors); this actor's mailbox is
what makes it single-flight: a kick while it runs is remembered and starts one more round
after it ends, so a kick never gets lost in the moment the loop finishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

logger = logging.getLogger(__name__)

BACKOFF_START = 2.0
BACKOFF_MAX = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Kick:
    """Start the connect loop unless it runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopEnded:
    """The worker thread finished."""


class ConnectLoopActor(pykka.ThreadingActor):
    """Runs ``attempt`` until it reports done; ``attempt`` returns True to stop the loop."""

    use_daemon_thread = True

    def __init__(self, *, attempt: Callable[[], bool], backoff_start: float = BACKOFF_START,
                 backoff_max: float = BACKOFF_MAX) -> None:
        super().__init__()
        self._attempt = attempt
        self._backoff_start = backoff_start
        self._backoff_max = backoff_max
        self._running = False
        self._kicked_again = False
        self._stopping = threading.Event()
        self.rounds = 0

    def kick(self) -> None:
        """Callable from any thread: a tell, so it never waits."""
        try:
            self.actor_ref.tell(Kick())
        except pykka.ActorDeadError:
            pass

    def on_receive(self, message: Any) -> Any:
        match message:
            case Kick():
                if self._running:
                    self._kicked_again = True
                else:
                    self._start_worker()
            case LoopEnded():
                self._running = False
                if self._kicked_again:
                    self._kicked_again = False
                    self._start_worker()
        return None

    def on_stop(self) -> None:
        self._stopping.set()

    def is_running(self) -> bool:
        return self._running

    def _start_worker(self) -> None:
        if self._stopping.is_set():
            return
        self._running = True
        self.rounds += 1
        threading.Thread(target=self._work, name="ppz-connect-loop", daemon=True).start()

    def _work(self) -> None:
        delay = self._backoff_start
        try:
            while not self._stopping.is_set():
                try:
                    if self._attempt():
                        break
                except Exception:  # noqa: BLE001 - the loop must survive anything
                    logger.exception("connect loop attempt failed")
                if self._stopping.wait(delay):
                    break
                delay = min(delay * 2, self._backoff_max)
        finally:
            try:
                self.actor_ref.tell(LoopEnded())
            except pykka.ActorDeadError:
                pass
