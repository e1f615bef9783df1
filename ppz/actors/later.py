"""``tell_later``: an actor's own timer, as a message to its mailbox."""

from __future__ import annotations

import threading
from typing import Any

import pykka


def tell_later(ref: pykka.ActorRef[Any], delay: float, message: Any) -> None:
    """Tell ``ref`` ``message`` after ``delay`` seconds (from a daemon timer thread); an actor
    that has stopped meanwhile is not told."""

    def fire() -> None:
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            pass

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()
