"""``tell_later``: a delayed message to an actor's own mailbox."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from ppz.actors.later import tell_later


class Recorder(pykka.ThreadingActor):
    def __init__(self, got: threading.Event) -> None:
        super().__init__()
        self.got = got

    def on_receive(self, message: Any) -> None:
        if message == "due":
            self.got.set()


def test_the_message_arrives_after_the_delay() -> None:
    got = threading.Event()
    ref = Recorder.start(got)
    try:
        tell_later(ref, 0.01, "due")
        assert got.wait(5)
    finally:
        ref.stop()


def test_an_actor_stopped_meanwhile_is_not_told_and_nothing_raises() -> None:
    got = threading.Event()
    ref = Recorder.start(got)
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        tell_later(ref, 0.05, "due")
        ref.stop()
        done = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        for t in done:
            t.join(5)
    finally:
        threading.excepthook = hook
    assert not got.is_set() and errors == []
