"""HeartbeatsActor: the heartbeat cache and its account scoping (spec/daemon.md §7.1, §7.3)."""

from __future__ import annotations

import pytest

from ppz.actors.heartbeats import HeartbeatsActor
from ppz.messages import Beat, HeartbeatRow

ACCT_A = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
ACCT_B = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


def beat(handle: str, account_id: str = ACCT_A, payload: str = '{"n":1}', at: float = 1.0) -> Beat:
    return Beat(handle=handle, account_id=account_id, payload=payload, arrived_at=at)


def row(b: Beat) -> HeartbeatRow:
    return HeartbeatRow(handle=b.handle, account_id=b.account_id, payload=b.payload, arrived_at=b.arrived_at)


@pytest.fixture
def heartbeats():
    return HeartbeatsActor.start().proxy()


def tell(heartbeats, *beats: Beat) -> None:
    """Stamp beats the way the presence callback does: tells, never asks."""
    for b in beats:
        heartbeats.actor_ref.tell(b)


def test_a_told_beat_is_stamped_verbatim(heartbeats) -> None:
    b = beat("bob", payload='{"status":"busy","interval":60}', at=1777636200.25)
    tell(heartbeats, b)
    assert heartbeats.snapshot(ACCT_A).get() == [row(b)]


def test_last_write_wins_per_handle(heartbeats) -> None:
    first, second = beat("bob", payload="one", at=1.0), beat("bob", payload="two", at=2.0)
    tell(heartbeats, first, second)
    assert heartbeats.snapshot(ACCT_A).get() == [row(second)]


def test_a_beat_under_another_account_replaces_the_handles_row(heartbeats) -> None:
    tell(heartbeats, beat("bob", ACCT_A), beat("bob", ACCT_B, payload="moved"))
    assert heartbeats.snapshot(ACCT_A).get() == []
    assert [r.payload for r in heartbeats.snapshot(ACCT_B).get()] == ["moved"]


def test_snapshot_is_sorted_by_handle_and_scoped_to_the_account(heartbeats) -> None:
    carol, alice, bob_b, dave = beat("carol"), beat("alice"), beat("bob", ACCT_B), beat("dave")
    tell(heartbeats, carol, alice, bob_b, dave)
    assert heartbeats.snapshot(ACCT_A).get() == [row(alice), row(carol), row(dave)]
    assert heartbeats.snapshot(ACCT_B).get() == [row(bob_b)]


def test_an_empty_account_returns_nothing_even_for_untagged_rows(heartbeats) -> None:
    tell(heartbeats, beat("ghost", account_id=""), beat("alice"))
    assert heartbeats.snapshot("").get() == []


def test_drop_other_accounts_keeps_only_the_named_account(heartbeats) -> None:
    alice, bob_b, carol = beat("alice"), beat("bob", ACCT_B), beat("carol")
    tell(heartbeats, alice, bob_b, carol)
    heartbeats.drop_other_accounts(ACCT_A).get()
    assert heartbeats.snapshot(ACCT_A).get() == [row(alice), row(carol)]
    assert heartbeats.snapshot(ACCT_B).get() == []
    # A beat stamped after the drop (new-account beat in the dial window) is kept.
    late = beat("zed", ACCT_B)
    tell(heartbeats, late)
    assert heartbeats.snapshot(ACCT_B).get() == [row(late)]


def test_clear_empties_every_account(heartbeats) -> None:
    tell(heartbeats, beat("alice"), beat("bob", ACCT_B))
    heartbeats.clear().get()
    assert heartbeats.snapshot(ACCT_A).get() == []
    assert heartbeats.snapshot(ACCT_B).get() == []


def test_an_unexpected_message_does_not_kill_the_actor(heartbeats) -> None:
    heartbeats.actor_ref.tell("not a beat")
    tell(heartbeats, beat("alice"))
    assert [r.handle for r in heartbeats.snapshot(ACCT_A).get()] == ["alice"]
    assert heartbeats.actor_ref.is_alive()
