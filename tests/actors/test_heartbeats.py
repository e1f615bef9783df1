"""HeartbeatsActor: the heartbeat cache and its account scoping (spec/daemon.md §7.1, §7.3)."""

from __future__ import annotations

import pytest

from ppz.actors.heartbeats import HeartbeatsActor
from ppz.messages import Beat, HeartbeatRow, IdentityChanged

from .identities import ACCT_A, ACCT_B, CREDS_GONE, LOGOUT, creds_changed, creds_of, login


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


# --- IdentityChanged (daemon.md §7.3; ipc.md §7.2 step 7, §7.3 step 3) -----------------------------

@pytest.mark.parametrize(
    "change", [login(creds_of(ACCT_B)), creds_changed(creds_of(ACCT_B))], ids=["login", "creds-changed"],
)
def test_an_identity_of_another_account_drops_the_old_rows_and_the_old_accounts_later_beats(
    heartbeats, change: IdentityChanged
) -> None:
    tell(heartbeats, beat("alice"), beat("bob", ACCT_B))
    assert heartbeats.actor_ref.ask(change) == []
    assert heartbeats.snapshot(ACCT_A).get() == []
    assert [r.handle for r in heartbeats.snapshot(ACCT_B).get()] == ["bob"]
    # The old connection's presence subscription still delivers during the login's dial
    # window: its beats are not stamped, the new account's are.
    straggler, fresh = beat("carol"), beat("dave", ACCT_B)
    tell(heartbeats, straggler, fresh)
    assert heartbeats.snapshot(ACCT_A).get() == []
    assert [r.handle for r in heartbeats.snapshot(ACCT_B).get()] == ["bob", "dave"]


def test_a_login_into_the_same_account_keeps_the_rows(heartbeats) -> None:
    alice = beat("alice")
    tell(heartbeats, alice)
    assert heartbeats.actor_ref.ask(login(creds_of(ACCT_A))) == []
    assert heartbeats.snapshot(ACCT_A).get() == [row(alice)]


@pytest.mark.parametrize("change", [LOGOUT, CREDS_GONE], ids=["logout", "creds-gone"])
def test_logged_out_clears_the_cache(heartbeats, change: IdentityChanged) -> None:
    heartbeats.actor_ref.ask(login(creds_of(ACCT_A)))
    tell(heartbeats, beat("alice"), beat("bob", ACCT_B))
    assert heartbeats.actor_ref.ask(change) == []
    assert heartbeats.snapshot(ACCT_A).get() == []
    assert heartbeats.snapshot(ACCT_B).get() == []
    # Unscoped again: the next login's account is stamped whatever the previous one was.
    tell(heartbeats, beat("carol", ACCT_B))
    assert [r.handle for r in heartbeats.snapshot(ACCT_B).get()] == ["carol"]
