"""Shared fixtures. ``ppz_server``: a fresh, running ppz-server (with its nats-server child);
``server_factory(**env)``: start more servers, e.g. ``server_factory(PPZ_NATS_JWT_TTL="10s")``.
Every server started through them is stopped (and, failing that, killed) at teardown."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Property tests check what is generated, never how fast: hypothesis's 200 ms per-example
# deadline (and its too-slow health check) fail at random when the 2-core machine is loaded.
settings.register_profile("ppz", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ppz")

# A suite started in the background by a non-interactive shell (`make test &`, CI runners) inherits
# SIGINT as ignored, and so would every CLI it starts: tests that stop `ppz read --tail` with
# Ctrl-C then fail. An ignored signal stays ignored across exec, a handled one is reset to the
# default there, so handling it here gives the children Python's usual KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)

from serverfixture import ServerProcess  # noqa: E402


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def factory(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"ppz-server-{len(servers)}", env=env)
        servers.append(server)
        return server.start()

    yield factory
    errors = []
    for server in servers:
        try:
            server.close()
        except Exception as exc:  # noqa: BLE001 - stop all, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def ppz_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


# --- parallel runs (pytest-xdist, see the Makefile's ``test``): longest tests first ------------------
#
# Every run records how long each test took (setup + call + teardown) in pytest's cache under
# ``ppz/durations``; ``tests/durations.json`` is the same map committed for fresh clones (refresh it
# with ``cp .pytest_cache/v/ppz/durations tests/durations.json`` after a full run). A worker of a
# parallel run orders its collection by those durations, so xdist hands out the longest tests first
# and a 60 s test never starts last. xdist gives each worker its next test while the current one
# runs, so each long test is followed by one of the shortest: a long test never waits behind another.
# Tests that share a module- or class-scoped fixture stay together (one fixture set-up per worker).

DURATIONS_KEY = "ppz/durations"
DURATIONS_FILE = Path(__file__).parent / "durations.json"


def known_durations(config: pytest.Config) -> dict[str, float]:
    try:
        durations = dict(json.loads(DURATIONS_FILE.read_text()))
    except (OSError, ValueError):
        durations = {}
    if config.cache is not None:
        durations.update(config.cache.get(DURATIONS_KEY, {}))
    return durations


def estimate(item: pytest.Item, durations: dict[str, float]) -> float:
    """The recorded duration; for a new test, a quarter of its own ``timeout`` mark if it has one
    (long tests raise their timeout), else 0."""
    if item.nodeid in durations:
        return float(durations[item.nodeid])
    for mark in getattr(item, "own_markers", []):
        if mark.name == "timeout" and mark.args:
            return float(mark.args[0]) / 4
    return 0.0


def unit_of(item: pytest.Item) -> str:
    """The module's node id for a test using a fixture wider than a function (but narrower than
    the session), else the test's own."""
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        if any(d.scope in ("class", "module", "package") for d in defs):
            return item.nodeid.split("::", 1)[0]
    return item.nodeid


def longest_first(items: list[pytest.Item], durations: dict[str, float]) -> list[pytest.Item]:
    """Units by decreasing total duration, each of the longest followed by one of the shortest."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(unit_of(item), []).append(item)
    ranked = sorted(units.values(), key=lambda unit: -sum(estimate(i, durations) for i in unit))
    order: list[pytest.Item] = []
    low, high = 0, len(ranked) - 1
    while low <= high:
        order += ranked[low]
        if low != high:
            order += ranked[high]
        low, high = low + 1, high - 1
    return order


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker; every worker computes the same order
        items[:] = longest_first(items, known_durations(config))


_run_durations: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _run_durations[report.nodeid] = _run_durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.cache is None or not _run_durations:
        return  # the controller (or a run without xdist) records what the workers report
    durations = config.cache.get(DURATIONS_KEY, {})
    durations.update({nodeid: round(seconds, 2) for nodeid, seconds in _run_durations.items()})
    config.cache.set(DURATIONS_KEY, durations)
