"""How long a swapped-out connection stays open (spec/daemon.md §5.2 step 5, §8.7).

It lingers briefly for requests in flight on it, but never until its credential expires: the
server would then close it with "user authentication expired", and the diagnostics would report
a missed rotation (post-rotation-auth-violation) for a connection that was already replaced.
"""

from __future__ import annotations

import pytest

from ppz.actors.nats import EXPIRY_MARGIN, SWAP_CLOSE_GRACE, close_grace

NOW = 1_900_000_000.0


def test_a_connection_replaced_by_nothing_closes_at_once() -> None:
    assert close_grace(int(NOW) + 300, replaced=False, now=NOW) == 0.0


def test_a_replaced_connection_with_a_fresh_credential_keeps_the_full_grace() -> None:
    assert close_grace(int(NOW) + 300, replaced=True, now=NOW) == SWAP_CLOSE_GRACE


@pytest.mark.parametrize("left", [0.9, 0.7])
def test_a_replaced_connection_closes_before_its_credential_expires(left: float) -> None:
    grace = close_grace(int(NOW) + 1, replaced=True, now=NOW + 1 - left)
    assert grace == pytest.approx(left - EXPIRY_MARGIN)
    assert grace < SWAP_CLOSE_GRACE


@pytest.mark.parametrize("left", [EXPIRY_MARGIN, 0.1, -5.0])
def test_a_replaced_connection_at_or_past_its_expiry_closes_at_once(left: float) -> None:
    assert close_grace(int(NOW) + 1, replaced=True, now=NOW + 1 - left) == 0.0


def test_a_replaced_connection_without_a_known_expiry_keeps_the_full_grace() -> None:
    assert close_grace(0, replaced=True, now=NOW) == SWAP_CLOSE_GRACE
