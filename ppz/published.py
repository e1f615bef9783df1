"""A single-writer box for immutable snapshots.

One actor owns a piece of state and publishes an immutable snapshot of it here after every
change; request threads read ``box.value`` without asking the actor (a reference read is
atomic). It is how the hot path checks "connected, credential fresh" without a mailbox hop.
Writers are always the owning actor; nobody mutates a published value.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Published(Generic[T]):
    """Holds the newest immutable snapshot published by its owner."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value
