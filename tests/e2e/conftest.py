"""Fixtures for end-to-end tests: real ppz-server, real nats-server, real daemon, real CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonfixture import DaemonHome


@pytest.fixture
def home_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonHome]]:
    homes: list[DaemonHome] = []

    def factory(name: str = "home", **env: str) -> DaemonHome:
        h = DaemonHome(tmp_path / name, env=env)
        homes.append(h)
        return h

    yield factory
    for h in homes:
        h.kill()


@pytest.fixture
def ppz_home(home_factory: Callable[..., DaemonHome]) -> DaemonHome:
    return home_factory()
