"""ConnectLoopActor: the single-flight background connect loop (spec/daemon.md §5.5)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ppz.actors.connector import ConnectLoopActor

from .polling import wait_until

pytestmark = pytest.mark.timeout(20)


class Attempts:
    """A scripted ``attempt``: each call pops the next outcome (True, False or an exception);
    when the script runs out it answers ``then``. It records call times and overlap."""

    def __init__(self, script: list[bool | Exception], then: bool = True) -> None:
        self._script = list(script)
        self._then = then
        self._lock = threading.Lock()
        self._inside = 0
        self.max_parallel = 0
        self.times: list[float] = []
        self.threads: list[threading.Thread] = []
        self.gate: threading.Event | None = None  # when set up, the first call waits on it
        self.entered = threading.Event()

    def __call__(self) -> bool:
        with self._lock:
            self._inside += 1
            self.max_parallel = max(self.max_parallel, self._inside)
            self.times.append(time.monotonic())
            self.threads.append(threading.current_thread())
            outcome = self._script.pop(0) if self._script else self._then
            gate, self.gate = self.gate, None
        self.entered.set()
        try:
            if gate is not None:
                assert gate.wait(10), "test never released the gate"
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            with self._lock:
                self._inside -= 1

    @property
    def calls(self) -> int:
        return len(self.times)


def start_loop(attempts: Attempts, backoff_start: float = 0.01, backoff_max: float = 0.02) -> Any:
    return ConnectLoopActor.start(attempt=attempts, backoff_start=backoff_start,
                                  backoff_max=backoff_max).proxy()


def wait_idle(loop: Any, attempts: Attempts, calls: int) -> None:
    """Wait until ``attempts`` was called ``calls`` times and the loop reports it stopped."""
    wait_until(lambda: attempts.calls >= calls and not loop.is_running().get(), f"{calls} attempts")


def test_the_loop_retries_until_an_attempt_succeeds_then_stops() -> None:
    attempts = Attempts([False, False, True], then=False)
    loop = start_loop(attempts)
    loop.kick().get()
    wait_idle(loop, attempts, 3)
    time.sleep(0.1)  # several backoff periods: a loop that kept going would call again
    assert attempts.calls == 3
    assert loop.rounds.get() == 1


def test_the_backoff_doubles_between_failed_attempts() -> None:
    attempts = Attempts([False, False, True])
    loop = start_loop(attempts, backoff_start=0.05, backoff_max=1.0)
    loop.kick().get()
    wait_idle(loop, attempts, 3)
    first_gap = attempts.times[1] - attempts.times[0]
    second_gap = attempts.times[2] - attempts.times[1]
    # Lower bounds only (a loaded machine may sleep longer), with room for clock granularity.
    assert first_gap >= 0.045
    assert second_gap >= 0.09  # doubled: an undoubled backoff would allow 0.05


def test_the_backoff_is_capped() -> None:
    # Uncapped, ten failures starting at 10 ms would sleep 10 ms * (2**10 - 1) ≈ 10 s in total.
    attempts = Attempts([False] * 10 + [True])
    loop = start_loop(attempts, backoff_start=0.01, backoff_max=0.01)
    loop.kick().get()
    wait_idle(loop, attempts, 11)


def test_a_kick_while_running_runs_exactly_one_more_round_after_it() -> None:
    attempts = Attempts([])
    attempts.gate = gate = threading.Event()
    loop = start_loop(attempts)
    loop.kick().get()
    assert attempts.entered.wait(5)
    loop.kick().get()
    loop.kick().get()  # kicks while running coalesce into one more round
    assert attempts.calls == 1, "a kick while running must not start a parallel loop"
    gate.set()
    wait_idle(loop, attempts, 2)
    time.sleep(0.05)
    assert attempts.calls == 2
    assert attempts.max_parallel == 1
    assert loop.rounds.get() == 2


def test_a_kick_after_the_loop_ended_starts_a_new_round() -> None:
    attempts = Attempts([])
    loop = start_loop(attempts)
    loop.kick().get()
    wait_idle(loop, attempts, 1)
    loop.kick().get()
    wait_idle(loop, attempts, 2)
    assert loop.rounds.get() == 2


def test_an_attempt_that_raises_does_not_kill_the_loop() -> None:
    attempts = Attempts([RuntimeError("boom"), ValueError("bad"), True])
    loop = start_loop(attempts)
    loop.kick().get()
    wait_idle(loop, attempts, 3)
    assert loop.actor_ref.is_alive()
    loop.kick().get()  # and it still serves kicks
    wait_idle(loop, attempts, 4)


def test_stopping_the_actor_ends_the_loop() -> None:
    attempts = Attempts([], then=False)
    loop = start_loop(attempts)
    loop.kick().get()
    wait_until(lambda: attempts.calls >= 3, "the loop to retry")
    loop.actor_ref.stop()
    at_stop = attempts.calls
    worker = attempts.threads[0]
    wait_until(lambda: not worker.is_alive(), "the worker thread to end")
    assert attempts.calls <= at_stop + 1  # at most the attempt in flight when it stopped
