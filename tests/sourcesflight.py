"""A mocked state proxy's part of the ``GET /api/v1/sources`` single-flight, for handler tests
whose ``StateActor`` is a ``Mock``: the real :class:`SourcesFlights` behind the three proxy
methods, answered at once (the test has no mailbox; the GIL serialises the calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest.mock import Mock

from ppz.actors.state import SourcesFlights


class Done:
    """What a proxy call returns: ``get()`` gives the value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self, timeout: float | None = None) -> Any:
        return self.value


def serve_sources_flights(state: Mock, on_listed: Callable[[tuple[Any, ...]], None] | None = None) -> SourcesFlights:
    """Wire the three proxy methods; ``on_listed`` stands for the actor replacing its source
    caches with a successful listing, before any waiter gets it."""
    flights = SourcesFlights()

    def finish(flight: Any, sources: tuple[Any, ...] | None, error: BaseException | None = None) -> Done:
        if sources is not None and on_listed is not None:
            on_listed(sources)
        return Done(flights.finish(flight, sources, error))

    state.claim_sources.side_effect = lambda creds: Done(flights.claim(creds))
    state.start_sources.side_effect = lambda flight: Done(flights.start(flight))
    state.finish_sources.side_effect = finish
    return flights
