"""RefreshActor: the credential lifetime (spec/daemon.md §3, §4 step 2; behaviours 25–30, 34).

The server is a ``Mock`` of ``ServerClient`` whose ``exchange`` answers ``ExchangeReply``s or
raises ``ExchangeError``s; the state and NATS peers are mocked proxies.
Tests that need "due" without waiting inject a ``Clock``; tests of the timer itself use real
time with credentials that live about a second.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from unittest.mock import Mock

import pykka
import pytest

from ppz import errors
from ppz.actors.refresh import RETRY_AFTER, RefreshActor, refresh_lead
from ppz.home import Credentials
from ppz.messages import (
    CredentialChanged,
    CredentialSnapshot,
    IdentityChanged,
    LoginChecked,
    RecordEvent,
    RefreshTick,
    RefreshView,
    Rotate,
)
from ppz.published import Published
from ppz.serverclient import ExchangeError, ExchangeReply, ServerClient

from .identities import NOT_A_LOGIN
from .polling import wait_until

pytestmark = pytest.mark.timeout(20)

ACCT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
NATS_URL = "nats://127.0.0.1:4222"
CREDS = Credentials(url="http://127.0.0.1:8080", api_key="ppz_0123456789abcdef0123456789",
                    account_id=ACCT, account_name="alpha", nats_user_jwt="eyJ.jwt-0", nats_user_seed="SUA0")
T0 = 1_800_000_000.0  # the injected clock's "now": far from real time, so nothing fires by accident


def reply(expires_at: float, received_at: float, jwt: str = "eyJ.jwt-1",
          account_name: str = "alpha") -> ExchangeReply:
    return ExchangeReply(nats_user_jwt=jwt, nats_user_seed="SUA-" + jwt, expires_at=expires_at,
                         received_at=received_at, nats_url=NATS_URL, account_id=ACCT,
                         account_name=account_name)


def unauthorized() -> ExchangeError:
    return ExchangeError(errors.E_INVALID_API_KEY, reason="auth/exchange: HTTP 401", unauthorized=True,
                         status=401)


def transient(reason: str = "auth/exchange: HTTP 503", status: int | None = 503) -> ExchangeError:
    return ExchangeError(errors.E_SERVER_UNREACHABLE, reason=reason, status=status)


class Clock:
    """An injectable clock that stands still until the test moves it."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rig:
    """A RefreshActor with a mocked server and mocked state and NATS proxies."""

    def __init__(self, clock: Any = time.time) -> None:
        self.server = Mock(spec=ServerClient)
        self.state = Mock()
        self.state.persist_credentials.return_value.get.return_value = ""
        self.nats = Mock()
        self.nats.set_target.return_value.get.return_value = None
        self.box: Published[RefreshView] = Published(RefreshView())
        self.proxy = RefreshActor.start(server=self.server, state=self.state, nats=self.nats,
                                        view_box=self.box, clock=clock).proxy()

    @property
    def view(self) -> RefreshView:
        return self.proxy.view().get()

    def told_nats(self, kind: type) -> list[Any]:
        return [c.args[0] for c in self.nats.actor_ref.tell.call_args_list if isinstance(c.args[0], kind)]

    def refresh_errors(self) -> list[str]:
        return [e.reason for e in self.told_nats(RecordEvent) if e.type == "refresh_error"]

    def told_state(self) -> list[Any]:
        return [c.args[0] for c in self.state.actor_ref.tell.call_args_list]

    def persisted(self) -> list[Credentials]:
        return [c.args[0] for c in self.state.persist_credentials.call_args_list]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rig(clock: Clock) -> Rig:
    """A loop started at T0 with a 5-minute credential: due at T0 + 270."""
    r = Rig(clock)
    r.proxy.start_loop(CREDS, reply(T0 + 300, T0, jwt="eyJ.jwt-0")).get()
    return r


# --- lead (behaviour 25) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "lead"),
    [(300.0, 30.0), (60.0, 30.0), (59.0, 29.5), (6.0, 3.0), (1.0, 0.5), (0.0, 0.0), (-5.0, 0.0)],
)
def test_refresh_lead_is_half_the_lifetime_capped_at_30_s_and_never_negative(lifetime: float,
                                                                            lead: float) -> None:
    received_at = 1_777_636_200.5
    assert refresh_lead(received_at + lifetime, received_at) == pytest.approx(lead)


def test_a_started_loop_publishes_the_lead_of_the_credential_as_received(clock: Clock) -> None:
    r = Rig(clock)
    r.proxy.start_loop(CREDS, reply(T0 + 6, T0)).get()  # PPZ_NATS_JWT_TTL=6s
    assert r.view.lead == pytest.approx(3.0)
    assert r.view.due(T0 + 2.9) is False
    assert r.view.due(T0 + 3.0) is True


# --- start / stop ------------------------------------------------------------------------------------


def test_start_loop_publishes_the_credential_and_tells_nats(clock: Clock) -> None:
    r = Rig(clock)
    assert r.view == RefreshView()
    r.proxy.start_loop(CREDS, reply(T0 + 300, T0, jwt="eyJ.start")).get()
    assert r.view == RefreshView(exchanged=True, exp=int(T0 + 300), lead=30.0, generation=1,
                                 last_refresh_at=T0, timer_armed=True)
    snapshot = CredentialSnapshot(jwt="eyJ.start", seed="SUA-eyJ.start", exp=int(T0 + 300), generation=1)
    assert r.told_nats(CredentialChanged) == [CredentialChanged(snapshot=snapshot)]
    r.server.exchange.assert_not_called()


def test_every_loop_start_raises_the_daemon_wide_generation(rig: Rig) -> None:
    rig.proxy.start_loop(CREDS, reply(T0 + 300, T0)).get()
    assert rig.view.generation == 2
    rig.proxy.stop_loop().get()
    assert rig.view.generation == 0  # no loop: reads 0
    rig.proxy.start_loop(CREDS, reply(T0 + 300, T0)).get()
    assert rig.view.generation == 3  # but the counter itself never goes back
    assert [m.snapshot.generation for m in rig.told_nats(CredentialChanged)] == [1, 2, 3]


def test_stop_loop_clears_the_view_and_is_idempotent(rig: Rig) -> None:
    rig.proxy.stop_loop().get()
    rig.proxy.stop_loop().get()
    assert rig.view == RefreshView()


# --- IdentityChanged (ipc.md §7.2 step 5, §7.3 step 1; home.md §5.3) ------------------------------


def test_a_login_broadcast_starts_the_loop_with_the_logins_exchange(clock: Clock) -> None:
    r = Rig(clock)
    login = reply(T0 + 300, T0, jwt="eyJ.login")
    change = IdentityChanged(caller="handleLogin", creds=CREDS, exchange=login)
    assert r.proxy.actor_ref.ask(change) == []
    assert r.view == RefreshView(exchanged=True, exp=int(T0 + 300), lead=30.0, generation=1,
                                 last_refresh_at=T0, timer_armed=True)
    assert r.told_nats(CredentialChanged) == [
        CredentialChanged(snapshot=CredentialSnapshot(jwt="eyJ.login", seed="SUA-eyJ.login",
                                                      exp=int(T0 + 300), generation=1)),
    ]
    clock.t = T0 + 271  # due: the loop refreshes with the login's credential
    r.server.exchange.return_value = reply(T0 + 600, clock.t, jwt="eyJ.jwt-2")
    r.proxy.refresh_now_if_due().get()
    r.server.exchange.assert_called_once_with(CREDS.url, CREDS.api_key, CREDS.account_id)


@NOT_A_LOGIN
def test_any_other_identity_change_stops_the_loop(rig: Rig, clock: Clock, change: IdentityChanged) -> None:
    assert rig.proxy.actor_ref.ask(change) == []
    assert rig.view == RefreshView()
    clock.t = T0 + 280  # the old credential would be due now: nothing refreshes it
    rig.proxy.refresh_now_if_due().get()
    rig.server.exchange.assert_not_called()


def test_ticks_of_a_stopped_loop_are_ignored(rig: Rig) -> None:
    rig.proxy.stop_loop().get()
    for loop_id in range(5):
        rig.proxy.actor_ref.ask(RefreshTick(loop_id=loop_id))
    rig.server.exchange.assert_not_called()


def test_a_tick_that_belongs_to_no_running_loop_is_ignored(rig: Rig) -> None:
    rig.proxy.start_loop(CREDS, reply(T0 + 300, T0)).get()  # replaces the first loop
    for loop_id in (-1, 10**9):
        rig.proxy.actor_ref.ask(RefreshTick(loop_id=loop_id))
    rig.server.exchange.assert_not_called()


def test_a_tick_that_waited_behind_a_refresh_now_if_due_does_not_refresh_again(rig: Rig, clock: Clock) -> None:
    # The timer fires while a request's refresh-now-if-due refreshes: its tick reaches the
    # mailbox after that refresh. Refreshing again gave two Rotates a moment apart, and the
    # second one's rotation, held back by the 2 s spacing, lagged every later one.
    clock.t = T0 + 270
    rig.server.exchange.return_value = reply(T0 + 570, T0 + 270, jwt="eyJ.jwt-2")
    rig.proxy.refresh_now_if_due().get()
    rig.proxy.actor_ref.ask(RefreshTick(loop_id=1))  # the loop started by the fixture
    rig.server.exchange.assert_called_once()
    assert [m.snapshot.generation for m in rig.told_nats(Rotate)] == [2]
    assert rig.view.timer_armed  # re-armed for the new credential


def test_after_stop_refresh_now_if_due_does_nothing(rig: Rig, clock: Clock) -> None:
    rig.proxy.stop_loop().get()
    clock.t = T0 + 1000
    rig.proxy.refresh_now_if_due().get()
    rig.server.exchange.assert_not_called()


# --- the timer (behaviours 25, 26) -------------------------------------------------------------------


def test_the_timer_refreshes_a_short_lived_credential_and_rotates_in_place() -> None:
    r = Rig()
    now = time.time()
    r.proxy.start_loop(CREDS, reply(now + 1, now, jwt="eyJ.short")).get()
    later = time.time()
    r.server.exchange.return_value = reply(later + 300, later, jwt="eyJ.fresh", account_name="alpha2")
    wait_until(lambda: r.told_nats(Rotate), "the timer's refresh", timeout=5)

    r.server.exchange.assert_called_once_with(CREDS.url, CREDS.api_key, ACCT)
    (rotate,) = r.told_nats(Rotate)
    assert rotate.snapshot == CredentialSnapshot(jwt="eyJ.fresh", seed="SUA-eyJ.fresh",
                                                 exp=int(later + 300), generation=2)
    assert r.persisted() == [CREDS.with_nats("eyJ.fresh", "SUA-eyJ.fresh", account_name="alpha2")]
    view = r.view
    assert (view.generation, view.exp, view.timer_armed) == (2, int(later + 300), True)
    assert view.last_refresh_at >= later
    r.nats.set_target.assert_not_called()  # a refresh never changes the NATS URL


def test_a_due_refresh_persists_then_rotates(rig: Rig, clock: Clock) -> None:
    clock.t = T0 + 270
    rig.server.exchange.return_value = reply(T0 + 570, T0 + 270, jwt="eyJ.jwt-2")
    rig.proxy.refresh_now_if_due().get()
    assert rig.persisted() == [CREDS.with_nats("eyJ.jwt-2", "SUA-eyJ.jwt-2")]
    assert [m.snapshot.jwt for m in rig.told_nats(Rotate)] == ["eyJ.jwt-2"]
    assert rig.view == RefreshView(exchanged=True, exp=int(T0 + 570), lead=30.0, generation=2,
                                   last_refresh_at=T0 + 270, timer_armed=True)
    assert rig.told_state() == []  # the login check is not touched by a refresh


def test_refresh_now_if_due_does_nothing_before_it_is_due(rig: Rig, clock: Clock) -> None:
    clock.t = T0 + 269.9
    rig.proxy.refresh_now_if_due().get()
    rig.server.exchange.assert_not_called()


def test_refresh_now_if_due_before_any_exchange_does_nothing(clock: Clock) -> None:
    r = Rig(clock)
    r.proxy.refresh_now_if_due().get()
    r.server.exchange.assert_not_called()


def test_three_refreshes_with_the_same_exp_still_raise_the_generation(rig: Rig, clock: Clock) -> None:
    exp = T0 + 300
    for now in (T0 + 270, T0 + 285, T0 + 292.5):  # each due at exp − half of what is left
        clock.t = now
        rig.server.exchange.return_value = reply(exp, now)
        rig.proxy.refresh_now_if_due().get()
    snapshots = [m.snapshot for m in rig.told_nats(Rotate)]
    assert [s.exp for s in snapshots] == [int(exp)] * 3
    assert [s.generation for s in snapshots] == [2, 3, 4]
    assert rig.view.generation == 4


def test_a_persist_failure_is_recorded_and_the_new_credential_is_still_used(rig: Rig, clock: Clock) -> None:
    rig.state.persist_credentials.return_value.get.return_value = "No space left on device"
    clock.t = T0 + 270
    rig.server.exchange.return_value = reply(T0 + 570, T0 + 270, jwt="eyJ.jwt-2")
    rig.proxy.refresh_now_if_due().get()
    assert rig.refresh_errors() == ["persist credentials: No space left on device"]
    assert [m.snapshot.jwt for m in rig.told_nats(Rotate)] == ["eyJ.jwt-2"]
    assert rig.view.generation == 2


# --- errors (behaviour 29) ---------------------------------------------------------------------------


def test_unauthorized_marks_the_login_invalid_and_stops_the_timer(rig: Rig, clock: Clock) -> None:
    clock.t = T0 + 270
    rig.server.exchange.side_effect = unauthorized()
    with pytest.raises(errors.PpzError) as caught:
        rig.proxy.refresh_now_if_due().get()
    assert caught.value.code == errors.E_INVALID_API_KEY
    assert rig.told_nats(RecordEvent) == [
        RecordEvent(type="refresh_error", caller="refresh-loop", reason="auth/exchange: HTTP 401")
    ]
    assert rig.told_state() == [LoginChecked(value="invalid")]
    view = rig.view
    assert view.timer_armed is False
    # The last good credential stays: nothing is withdrawn from NATS, no cold exchange follows.
    assert (view.exchanged, view.exp, view.generation) == (True, int(T0 + 300), 1)
    assert rig.told_nats(Rotate) == []
    assert len(rig.told_nats(CredentialChanged)) == 1


def timer_fails_with(error: ExchangeError) -> Rig:
    """A loop on a one-second credential whose timer's refresh fails with ``error``; returns once
    the failure was recorded."""
    r = Rig()
    now = time.time()
    r.server.exchange.side_effect = error
    r.proxy.start_loop(CREDS, reply(now + 1, now)).get()
    wait_until(lambda: r.refresh_errors(), "the timer's refresh", timeout=5)
    return r


def test_unauthorized_from_the_timer_stops_the_loop_without_killing_the_actor() -> None:
    r = timer_fails_with(unauthorized())
    assert r.view.timer_armed is False
    assert r.told_state() == [LoginChecked(value="invalid")]
    assert r.proxy.actor_ref.is_alive()


def test_a_transient_error_from_the_timer_arms_the_retry() -> None:
    r = timer_fails_with(transient())
    # The tick consumed the timer; only the retry (5 s) can have re-armed it.
    assert r.view.timer_armed is True
    assert r.refresh_errors() == ["auth/exchange: HTTP 503"]
    assert r.told_state() == []
    assert r.view.generation == 1
    assert RETRY_AFTER == 5.0


@pytest.mark.parametrize("status", [429, 500, 502, 503, None])
def test_a_transient_error_on_demand_is_server_unreachable(rig: Rig, clock: Clock,
                                                           status: int | None) -> None:
    clock.t = T0 + 270
    rig.server.exchange.side_effect = transient(reason=f"auth/exchange: HTTP {status}", status=status)
    with pytest.raises(errors.PpzError) as caught:
        rig.proxy.refresh_now_if_due().get()
    assert caught.value.code == errors.E_SERVER_UNREACHABLE
    assert rig.view.timer_armed is True
    assert rig.told_state() == []


def test_identical_error_reasons_are_coalesced_and_a_changed_one_is_recorded_at_once(
    rig: Rig, clock: Clock
) -> None:
    clock.t = T0 + 270

    def fail_with(reason: str) -> None:
        rig.server.exchange.side_effect = transient(reason=reason)
        with pytest.raises(errors.PpzError):
            rig.proxy.refresh_now_if_due().get()

    fail_with("auth/exchange: HTTP 503")
    fail_with("auth/exchange: HTTP 503")
    assert rig.refresh_errors() == ["auth/exchange: HTTP 503"]
    fail_with("connection refused")
    assert rig.refresh_errors() == ["auth/exchange: HTTP 503", "connection refused"]
    fail_with("connection refused")
    assert rig.refresh_errors() == ["auth/exchange: HTTP 503", "connection refused"]
    assert rig.server.exchange.call_count == 4


def test_a_new_loop_records_a_reason_its_predecessor_already_recorded(rig: Rig, clock: Clock) -> None:
    clock.t = T0 + 270
    rig.server.exchange.side_effect = transient()
    for _ in range(2):
        with pytest.raises(errors.PpzError):
            rig.proxy.refresh_now_if_due().get()
    rig.proxy.start_loop(CREDS, reply(T0 + 300, T0)).get()
    with pytest.raises(errors.PpzError):
        rig.proxy.refresh_now_if_due().get()
    assert rig.refresh_errors() == ["auth/exchange: HTTP 503"] * 2


def test_refresh_now_if_due_after_the_timer_stopped_refreshes_and_rearms(rig: Rig, clock: Clock) -> None:
    clock.t = T0 + 270
    rig.server.exchange.side_effect = unauthorized()
    with pytest.raises(errors.PpzError):
        rig.proxy.refresh_now_if_due().get()
    assert rig.view.timer_armed is False

    rig.server.exchange.side_effect = None
    rig.server.exchange.return_value = reply(T0 + 570, T0 + 270, jwt="eyJ.recovered")
    rig.proxy.refresh_now_if_due().get()
    assert rig.view.timer_armed is True
    assert [m.snapshot.jwt for m in rig.told_nats(Rotate)] == ["eyJ.recovered"]


# --- single flight (behaviours 30, 34) ------------------------------------------------------------


def run_concurrently(n: int, fn: Any) -> list[BaseException | None]:
    """Call ``fn`` from ``n`` threads released together; the outcome of each (None = returned)."""
    barrier = threading.Barrier(n)
    outcomes: list[BaseException | None] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def slow_exchange(answer: ExchangeReply) -> Any:
    def exchange(url: str, api_key: str, account_id: str) -> ExchangeReply:
        time.sleep(0.05)  # a slow server widens the window for a duplicate
        return answer

    return exchange


def test_concurrent_bootstraps_before_any_exchange_make_one_cold_exchange() -> None:
    r = Rig()
    now = time.time()
    r.server.exchange.side_effect = slow_exchange(reply(now + 300, now, jwt="eyJ.cold"))
    assert run_concurrently(8, lambda: r.proxy.bootstrap(CREDS).get(timeout=10)) == [None] * 8
    assert r.server.exchange.call_count == 1
    r.nats.set_target.assert_called_once_with(NATS_URL, ACCT)
    assert len(r.told_nats(CredentialChanged)) == 1
    assert r.view.exchanged is True
    assert r.view.generation == 1


def test_concurrent_due_refreshes_share_one_exchange(rig: Rig, clock: Clock) -> None:
    clock.t = T0 + 270
    rig.server.exchange.side_effect = slow_exchange(reply(T0 + 570, T0 + 270))
    assert run_concurrently(8, lambda: rig.proxy.refresh_now_if_due().get(timeout=10)) == [None] * 8
    assert rig.server.exchange.call_count == 1
    assert len(rig.told_nats(Rotate)) == 1


def test_bootstrap_after_an_exchange_only_refreshes_if_due(rig: Rig, clock: Clock) -> None:
    rig.proxy.bootstrap(CREDS).get()
    rig.server.exchange.assert_not_called()
    clock.t = T0 + 280
    rig.server.exchange.return_value = reply(T0 + 580, T0 + 280)
    rig.proxy.bootstrap(CREDS).get()
    assert rig.server.exchange.call_count == 1
    assert len(rig.told_nats(Rotate)) == 1


# --- the cold exchange (daemon.md §4 step 2) ---------------------------------------------------------


def test_the_cold_exchange_adopts_the_replys_account_persists_and_starts_the_loop(clock: Clock) -> None:
    r = Rig(clock)
    no_account = Credentials(url=CREDS.url, api_key=CREDS.api_key)
    r.server.exchange.return_value = reply(T0 + 300, T0, jwt="eyJ.cold", account_name="alpha")
    r.proxy.bootstrap(no_account).get()
    r.server.exchange.assert_called_once_with(CREDS.url, CREDS.api_key, "")
    adopted = no_account.with_nats("eyJ.cold", "SUA-eyJ.cold", account_id=ACCT, account_name="alpha")
    assert r.persisted() == [adopted]
    r.nats.set_target.assert_called_once_with(NATS_URL, ACCT)
    snapshot = CredentialSnapshot(jwt="eyJ.cold", seed="SUA-eyJ.cold", exp=int(T0 + 300), generation=1)
    assert r.told_nats(CredentialChanged) == [CredentialChanged(snapshot=snapshot)]
    assert r.view.timer_armed is True


def test_a_cold_exchange_whose_persist_fails_still_starts_the_loop(clock: Clock) -> None:
    r = Rig(clock)
    r.state.persist_credentials.return_value.get.return_value = "read-only file system"
    r.server.exchange.return_value = reply(T0 + 300, T0)
    r.proxy.bootstrap(CREDS).get()
    assert r.view.exchanged is True


def test_a_refused_cold_exchange_marks_the_login_invalid_and_is_retried_next_time(clock: Clock) -> None:
    r = Rig(clock)
    r.server.exchange.side_effect = unauthorized()
    with pytest.raises(errors.PpzError) as caught:
        r.proxy.bootstrap(CREDS).get()
    assert caught.value.code == errors.E_INVALID_API_KEY
    assert r.told_state() == [LoginChecked(value="invalid")]
    assert r.view == RefreshView()
    r.nats.set_target.assert_not_called()
    assert r.persisted() == []
    with pytest.raises(errors.PpzError):
        r.proxy.bootstrap(CREDS).get()
    assert r.server.exchange.call_count == 2


@pytest.mark.parametrize("status", [429, 500, 503, None])
def test_a_failed_cold_exchange_is_server_unreachable(clock: Clock, status: int | None) -> None:
    r = Rig(clock)
    r.server.exchange.side_effect = transient(status=status)
    with pytest.raises(errors.PpzError) as caught:
        r.proxy.bootstrap(CREDS).get()
    assert caught.value.code == errors.E_SERVER_UNREACHABLE
    assert r.told_state() == []
    assert r.view == RefreshView()


# --- with real peers and failures --------------------------------------------------------------------


class FakeNatsActor(pykka.ThreadingActor):
    """Stands in for NatsActor: records ``set_target`` calls and told messages."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[tuple[str, str]] = []
        self.told: list[Any] = []

    def set_target(self, url: str, account_id: str) -> None:
        self.targets.append((url, account_id))

    def on_receive(self, message: Any) -> Any:
        self.told.append(message)
        return None


def test_the_cold_exchange_reaches_a_real_nats_actor(clock: Clock) -> None:
    nats = FakeNatsActor.start().proxy()  # wired in as bootstrap.py does: a proxy
    server = Mock(spec=ServerClient)
    server.exchange.return_value = reply(T0 + 300, T0)
    state = Mock()
    state.persist_credentials.return_value.get.return_value = ""
    refresh = RefreshActor.start(server=server, state=state, nats=nats,
                                 view_box=Published(RefreshView()), clock=clock).proxy()
    refresh.bootstrap(CREDS).get()
    assert nats.targets.get() == [(NATS_URL, ACCT)]
    assert [type(m) for m in nats.told.get()] == [CredentialChanged]


def live_timers_of(actor_ref: pykka.ActorRef[Any]) -> list[threading.Timer]:
    return [t for t in threading.enumerate()
            if isinstance(t, threading.Timer) and t.is_alive()
            and getattr(getattr(t, "function", None), "__self__", None) is not None
            and t.function.__self__.actor_ref is actor_ref]  # type: ignore[attr-defined]


def test_a_failed_actor_cancels_its_timer() -> None:
    r = Rig()

    def tell(message: Any) -> None:
        if isinstance(message, Rotate):
            raise pykka.ActorDeadError("NatsActor stopped")

    r.nats.actor_ref.tell.side_effect = tell
    now = time.time()
    r.proxy.start_loop(CREDS, reply(now + 1, now)).get()
    r.server.exchange.return_value = reply(now + 300, now)
    ref = r.proxy.actor_ref
    wait_until(lambda: not ref.is_alive(), "the tick's Rotate tell to fail the actor", timeout=5)
    wait_until(lambda: not live_timers_of(ref), "the failed actor's timer to be cancelled", timeout=1)
