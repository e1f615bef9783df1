"""ConnView.run: the bridge from request threads into the connection's asyncio loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ppz import errors
from ppz.actors.nats import ConnView
from ppz.aioloop import LoopThread


def test_a_call_cancelled_by_the_loop_stopping_is_nats_unreachable() -> None:
    """At a graceful stop the loop cancels what runs on it: an in-flight Send must answer
    E_NATS_UNREACHABLE (connection closed), not E_INTERNAL."""
    loop_thread = LoopThread()
    loop_thread.start()
    started = threading.Event()

    async def publish() -> None:
        started.set()
        await asyncio.sleep(30)

    outcome: list[BaseException] = []

    def request() -> None:
        try:
            ConnView(loop_thread=loop_thread).run(publish(), 30)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    t = threading.Thread(target=request)
    t.start()
    assert started.wait(10)
    loop_thread.stop()
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], errors.PpzError)
    assert outcome[0].code == errors.E_NATS_UNREACHABLE


def test_a_result_and_an_error_pass_through() -> None:
    loop_thread = LoopThread()
    loop_thread.start()
    try:
        async def answer() -> int:
            return 42

        async def fail() -> None:
            raise errors.PpzError(errors.E_DELIVERY_UNCONFIRMED)

        view = ConnView(loop_thread=loop_thread)
        assert view.run(answer(), 5) == 42
        with pytest.raises(errors.PpzError) as info:
            view.run(fail(), 5)
        assert info.value.code == errors.E_DELIVERY_UNCONFIRMED
    finally:
        loop_thread.stop()
