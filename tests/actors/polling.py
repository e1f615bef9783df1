"""Waiting on other threads without long sleeps: poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
