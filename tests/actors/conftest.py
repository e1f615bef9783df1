"""Shared fixture of the actor tests: no actor outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest

from .natsserver import LOOP_THREADS


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    while LOOP_THREADS:
        LOOP_THREADS.pop().stop()
