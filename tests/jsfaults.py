"""Faults slipped into ``ppz.jetstream`` for tests that need a failure at an exact step."""

from __future__ import annotations

from typing import Any

import pytest

from ppz import jetstream as js


def fail_fetch(monkeypatch: pytest.MonkeyPatch, at: int) -> list[int]:
    """Make the ``at``-th pull fetch from now on fail with a transport error (the others are
    real); returns a one-item list counting the fetches made."""
    real_fetch = js._fetch
    fetches = [0]

    async def fetch(nc: Any, stream: str, consumer: str, batch: int) -> Any:
        fetches[0] += 1
        if fetches[0] == at:
            raise js.JsError(js.TRANSPORT, "connection closed")
        return await real_fetch(nc, stream, consumer, batch)

    monkeypatch.setattr(js, "_fetch", fetch)
    return fetches
