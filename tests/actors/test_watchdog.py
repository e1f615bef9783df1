"""WakeWatchdog: wall-clock jumps between ticks mean the machine slept (spec/daemon.md §5.6;
behaviour 31). The wall clock is faked; the peers (nats, refresh) are mocks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from ppz import bootstrap
from ppz.bootstrap import WakeWatchdog
from ppz.errors import E_INVALID_API_KEY, E_SERVER_UNREACHABLE, PpzError
from ppz.messages import RecordEvent

from .polling import wait_until

pytestmark = pytest.mark.timeout(20)

START = 1_777_636_200.0


class Clock:
    """Stands in for the ``time`` module inside ``ppz.bootstrap``: a settable wall clock, and a
    ``sleep`` that records how long recovery wanted to wait and returns at once."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(bootstrap, "time", fake)
    return fake


class System:
    """The slice of ``ppz.system.System`` the watchdog uses, with every call logged in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.logged_in: list[bool] = [True]  # popped per creds() call; the last value sticks
        self.refresh_outcomes: list[Exception | None] = []
        self.gate: threading.Event | None = None
        self.nats = mock.Mock(name="nats")
        self.nats.rebuild.side_effect = self._rebuild
        self.refresh = mock.Mock(name="refresh")
        self.refresh.refresh_now_if_due.side_effect = self._refresh
        self.kick_connect = mock.Mock(name="kick_connect")

    def creds(self) -> Any:
        logged_in = self.logged_in.pop(0) if len(self.logged_in) > 1 else self.logged_in[0]
        return object() if logged_in else None

    def _refresh(self) -> Any:
        self.calls.append("refresh_now_if_due")
        if self.gate is not None:
            assert self.gate.wait(10), "test never opened the gate"
        outcome = self.refresh_outcomes.pop(0) if self.refresh_outcomes else None
        future = mock.Mock(name="refresh-future")
        future.get.side_effect = outcome
        return future

    def _rebuild(self, caller: str) -> Any:
        self.calls.append(f"rebuild({caller})")
        return mock.Mock(name="rebuild-future")

    def wakes(self) -> list[RecordEvent]:
        return [c.args[0] for c in self.nats.actor_ref.tell.call_args_list]


@pytest.fixture
def system() -> System:
    return System()


def recovery_running() -> bool:
    return any(t.name == "ppz-wake-recovery" for t in threading.enumerate())


@pytest.fixture(autouse=True)
def _no_recovery_left() -> Iterator[None]:
    yield
    wait_recovery_ended()


def sleep_then_tick(clock: Clock, system: System, seconds: float) -> WakeWatchdog:
    """A watchdog whose first check comes ``seconds`` of wall clock after it started."""
    watchdog = WakeWatchdog(system)  # type: ignore[arg-type]
    clock.advance(seconds)
    watchdog.check()
    return watchdog


def wait_recovery_ended() -> None:
    wait_until(lambda: not recovery_running(), "the recovery thread to end")


def wake(gap: str) -> RecordEvent:
    return RecordEvent(type="wake", caller="wake-watchdog", reason=f"wall-clock jump {gap} (system sleep)")


@pytest.mark.parametrize("elapsed", [30.0, 89.0, 90.0, -3600.0])
def test_a_tick_within_90s_of_the_last_records_nothing(clock: Clock, system: System, elapsed: float) -> None:
    sleep_then_tick(clock, system, elapsed)
    assert system.wakes() == []
    assert not recovery_running()
    assert system.calls == []


@pytest.mark.parametrize(("elapsed", "gap"), [(90.6, "1m31s"), (120.0, "2m0s"), (3725.4, "1h2m5s")])
def test_a_jump_over_90s_records_a_wake_with_the_rounded_gap(
    clock: Clock, system: System, elapsed: float, gap: str
) -> None:
    sleep_then_tick(clock, system, elapsed)
    assert system.wakes() == [wake(gap)]


def test_after_a_wake_refresh_if_due_runs_then_the_connection_is_rebuilt(clock: Clock, system: System) -> None:
    watchdog = sleep_then_tick(clock, system, 30)
    clock.advance(120)
    watchdog.check()
    wait_until(lambda: "rebuild(wake-watchdog)" in system.calls, "rebuild after the wake")
    assert system.calls == ["refresh_now_if_due", "rebuild(wake-watchdog)"]
    assert system.wakes() == [wake("2m0s")]
    # The next regular tick measures from the jump, not from before it.
    clock.advance(30)
    watchdog.check()
    assert len(system.wakes()) == 1


def test_a_failing_refresh_is_retried_every_5s_until_it_succeeds(clock: Clock, system: System) -> None:
    system.refresh_outcomes = [PpzError(E_SERVER_UNREACHABLE), PpzError(E_SERVER_UNREACHABLE), None]
    sleep_then_tick(clock, system, 600)
    wait_until(lambda: "rebuild(wake-watchdog)" in system.calls, "rebuild after the retries")
    assert system.calls == ["refresh_now_if_due"] * 3 + ["rebuild(wake-watchdog)"]
    assert clock.sleeps == [5.0, 5.0]


def test_an_unauthorized_refresh_ends_recovery_without_a_rebuild(clock: Clock, system: System) -> None:
    system.refresh_outcomes = [PpzError(E_INVALID_API_KEY)]
    sleep_then_tick(clock, system, 600)
    wait_recovery_ended()
    assert system.calls == ["refresh_now_if_due"]


def test_a_logout_during_the_retries_ends_recovery_without_a_rebuild(clock: Clock, system: System) -> None:
    system.refresh_outcomes = [PpzError(E_SERVER_UNREACHABLE)]
    system.logged_in = [True, False]
    sleep_then_tick(clock, system, 600)
    wait_recovery_ended()
    assert system.calls == ["refresh_now_if_due"]


def test_a_logged_out_daemon_records_the_wake_but_recovers_nothing(clock: Clock, system: System) -> None:
    system.logged_in = [False]
    sleep_then_tick(clock, system, 600)
    wait_recovery_ended()
    assert system.wakes() == [wake("10m0s")]
    assert system.calls == []


def test_a_second_jump_during_recovery_starts_no_second_recovery(clock: Clock, system: System) -> None:
    system.gate = threading.Event()
    watchdog = sleep_then_tick(clock, system, 120)
    wait_until(lambda: system.calls == ["refresh_now_if_due"], "recovery to start")
    clock.advance(300)
    watchdog.check()
    system.gate.set()
    wait_recovery_ended()
    assert system.wakes() == [wake("2m0s"), wake("5m0s")]
    assert system.calls == ["refresh_now_if_due", "rebuild(wake-watchdog)"]


def test_the_ticker_runs_the_check(clock: Clock, system: System) -> None:
    watchdog = WakeWatchdog(system, tick=0.01)  # type: ignore[arg-type]
    assert WakeWatchdog(system).ticker.interval == 30.0  # type: ignore[arg-type]
    clock.advance(3600)
    watchdog.ticker.start()
    try:
        wait_until(lambda: system.wakes() == [wake("1h0m0s")], "the ticker's check")
    finally:
        watchdog.ticker.stop()
