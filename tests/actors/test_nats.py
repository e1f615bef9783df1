"""NatsActor against real nats-servers: rebuild and swap, dial errors, connection loss, in-place
rotation, the watch registry, presence and the failure report (spec/daemon.md §4–§7, §8.2).

Every test reads the event log the way Diag does (``events()``) and asserts type, caller, nc_id
and reason. nc ids are ``nc-<pid>-<n>``; the actor runs in this process, so ``<pid>`` is ours.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from ppz import errors
from ppz.actors import nats as nats_actor
from ppz.actors.follows import FollowActor
from ppz.actors.nats import ConnView, classify_dial_error, presence_handle
from ppz.envelope import new_envelope
from ppz.errors import PpzError
from ppz.eventlog import Event
from ppz.messages import Beat, IdentityChanged, RecordEvent, RefreshView, Rotate, RotationDue
from ppz.published import Published
from ppz.server import natsjwt

from .identities import LOGOUT, NOT_A_LOGIN, creds_of, login
from .natsserver import (  # noqa: F401 - nats_servers_fixture is a fixture
    ACCT,
    Harness,
    NatsServer,
    NatsServers,
    credential,
    nats_servers_fixture,
    refusing_port,
    start_nats_actor,
    user_seed,
)
from .polling import wait_until

pytestmark = pytest.mark.timeout(30)

EXP = 1_900_000_000
OTHER_ACCT = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
LONG_JWT = "x" * 400  # longer than the 256-byte control line of the strict server below


def nc(n: int) -> str:
    """The id of the n-th dial of this process's actor."""
    return f"nc-{os.getpid()}-{n}"


def rows(events: list[Event]) -> list[tuple[str, str, str, str]]:
    return [(e.type, e.caller, e.nc_id, e.reason) for e in events]


def new_events(h: Harness, before: int) -> list[tuple[str, str, str, str]]:
    return rows(h.events()[before:])


def publish(view: ConnView, subject: str, data: bytes = b"{}") -> None:
    """Publish on the actor's own connection (echo is on) and flush."""
    client = view.client

    async def go() -> None:
        await client.publish(subject, data)
        await client.flush(timeout=2)

    view.run(go(), 5)


def subscribe(view: ConnView, subject: str) -> list[bytes]:
    """A core subscription on the installed connection; returns the list it appends to."""
    got: list[bytes] = []

    async def on_msg(msg: Any) -> None:
        got.append(msg.data)

    view.run(view.client.subscribe(subject, cb=on_msg), 5)
    return got


def strict_server(nats_servers: NatsServers) -> NatsServer:
    """A server that requires auth (so the client sends its JWT) with a 256-byte control line."""
    config = (
        "max_control_line: 256\n"
        f'authorization {{ users = [ {{ nkey: "{natsjwt.public_key(user_seed())}" }} ] }}\n'
    )
    return nats_servers(config=config)


@pytest.fixture
def server(nats_servers: NatsServers) -> NatsServer:
    return nats_servers()


@pytest.fixture
def nats(tmp_path: Path, server: NatsServer) -> Harness:
    """A NatsActor targeted at ``server`` with credential generation 1, not yet dialled."""
    return start_nats_actor(tmp_path, server.url, credential(1, EXP))


@pytest.fixture
def connected(nats: Harness) -> Harness:
    nats.proxy.rebuild("ensureNATS").get()
    return nats


# --- rebuild and swap (§5.1, §5.2) ------------------------------------------------------------


def test_the_first_rebuild_records_swap_then_connect(nats: Harness) -> None:
    nats.proxy.rebuild("ensureNATS").get()
    assert rows(nats.events()) == [
        ("swap", "ensureNATS", nc(1), f"old=- new={nc(1)}"),
        ("connect", "ensureNATS", nc(1), "initial connection"),
    ]
    assert all(re.fullmatch(r"nc-\d+-\d+", e.nc_id) and e.jwt_exp == EXP for e in nats.events())
    view = nats.view()
    assert (view.state(), view.nc_id, view.dialled_exp, view.dialled_gen) == ("connected", nc(1), EXP, 1)
    assert view.dial_error is None


def test_a_rebuild_with_the_dialled_credential_is_a_no_op(connected: Harness) -> None:
    before = connected.view()
    connected.proxy.rebuild("ensureNATS").get()
    connected.proxy.rebuild("OnRefreshed-callback").get()
    assert connected.types() == ["swap", "connect"]
    assert connected.view().nc is before.nc


def test_a_new_generation_with_the_same_exp_dials_and_swaps_without_connect(connected: Harness) -> None:
    connected.give(credential(2, EXP))
    connected.proxy.rebuild("OnRefreshed-callback").get()
    assert new_events(connected, 2)[0] == ("swap", "OnRefreshed-callback", nc(2), f"old={nc(1)} new={nc(2)}")
    view = connected.view()
    assert (view.state(), view.nc_id, view.dialled_gen) == ("connected", nc(2), 2)
    # The old connection's own callbacks report its close; that kicks the connect loop, whose
    # ensure-NATS then coalesces (daemon.md §5.5). Healthy → healthy: no connect or reconnect.
    assert [e.nc_id for e in connected.wait_for("closed")] == [nc(1)]
    assert [(e.type, e.caller) for e in connected.events() if e.nc_id == nc(1)][2:] == [
        ("disconnect", "nats-client"), ("closed", "nats-client"),
    ]
    assert not [e for e in connected.events()[2:] if e.type in ("connect", "reconnect")]
    connected.kick_connect.assert_called()
    connected.proxy.rebuild("ensureNATS").get()
    assert connected.types().count("swap") == 2


def test_swap_to_nothing_records_a_swap_and_uninstalls_the_connection(connected: Harness) -> None:
    connected.proxy.swap_to_nothing("handleLogout").get()
    assert new_events(connected, 2)[0] == ("swap", "handleLogout", "", f"old={nc(1)} new=-")
    view = connected.view()
    assert (view.state(), view.nc, view.nc_id, view.dialled_exp, view.dialled_gen) == (None, None, "", 0, 0)
    with pytest.raises(PpzError) as info:
        _ = view.client
    assert info.value.code == errors.E_NATS_UNREACHABLE
    # Nothing replaced by nothing is not a swap.
    connected.proxy.swap_to_nothing("handleLogout").get()
    assert connected.types().count("swap") == 2
    assert not [e for e in connected.events()[2:] if e.type in ("connect", "reconnect")]


def test_rebuild_without_a_nats_url_does_nothing(tmp_path: Path) -> None:
    h = start_nats_actor(tmp_path)
    h.give(credential(1))
    h.proxy.rebuild("ensureNATS").get()
    assert h.events() == []
    assert h.view().state() is None


# --- dial errors (§5.7) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nats: 'maximum control line exceeded'", errors.E_CREDENTIAL_TOO_LARGE),
        ("Maximum Control Line Exceeded", errors.E_CREDENTIAL_TOO_LARGE),
        ("[Errno 111] Connect call failed ('127.0.0.1', 4222)", errors.E_NATS_UNREACHABLE),
        ("nats: no servers available for connection", errors.E_NATS_UNREACHABLE),
        ("nats: 'Authorization Violation'", errors.E_NATS_UNREACHABLE),
        ("timed out", errors.E_NATS_UNREACHABLE),
    ],
)
def test_dial_errors_are_classified_by_their_text(text: str, code: str) -> None:
    assert classify_dial_error(text).code == code


@pytest.fixture
def refused_url() -> Iterator[str]:
    with refusing_port() as port:
        yield f"nats://127.0.0.1:{port}"


def test_a_refused_dial_is_remembered_until_a_successful_dial(
    tmp_path: Path, server: NatsServer, refused_url: str
) -> None:
    h = start_nats_actor(tmp_path, refused_url)
    with pytest.raises(PpzError) as info:
        h.proxy.rebuild("ensureNATS").get()
    assert info.value.code == errors.E_NATS_UNREACHABLE
    view = h.view()
    assert view.dial_error is not None and view.dial_error.code == errors.E_NATS_UNREACHABLE
    assert view.state() is None
    assert h.events() == []  # a failed dial swaps nothing
    h.proxy.set_target(server.url, ACCT).get()
    h.proxy.rebuild("ensureNATS").get()
    assert h.view().dial_error is None
    assert h.types() == ["swap", "connect"]


def test_forget_clears_the_url_and_the_remembered_dial_error(tmp_path: Path, refused_url: str) -> None:
    h = start_nats_actor(tmp_path, refused_url)
    with pytest.raises(PpzError):
        h.proxy.rebuild("ensureNATS").get()
    h.proxy.forget().get()
    assert h.view().dial_error is None
    h.proxy.rebuild("ensureNATS").get()  # no URL: nothing to do, no error
    assert h.view().dial_error is None


def test_a_dial_without_a_credential_fails_unreachable(tmp_path: Path, server: NatsServer) -> None:
    h = start_nats_actor(tmp_path)
    h.proxy.set_target(server.url, ACCT).get()
    with pytest.raises(PpzError) as info:
        h.proxy.rebuild("ensureNATS").get()
    assert info.value.code == errors.E_NATS_UNREACHABLE


def dial_until_too_large(h: Harness, attempts: int = 200) -> PpzError:
    """Dial until a dial fails as E_CREDENTIAL_TOO_LARGE (see the xfail below for why one dial
    is not always enough); returns that error."""
    for _ in range(attempts):
        with pytest.raises(PpzError) as info:
            h.proxy.rebuild("ensureNATS").get()
        if info.value.code == errors.E_CREDENTIAL_TOO_LARGE:
            return info.value
    pytest.fail(f"no dial out of {attempts} was classified E_CREDENTIAL_TOO_LARGE")


def test_every_dial_of_a_too_large_jwt_is_credential_too_large(tmp_path: Path, nats_servers: NatsServers) -> None:
    h = start_nats_actor(tmp_path, strict_server(nats_servers).url, credential(1, jwt=LONG_JWT))
    codes = set()
    for _ in range(200):
        with pytest.raises(PpzError) as info:
            h.proxy.rebuild("ensureNATS").get()
        codes.add(info.value.code)
    assert codes == {errors.E_CREDENTIAL_TOO_LARGE}


def test_a_too_large_credential_is_remembered_reported_by_watches_and_cleared_by_a_dial(
    tmp_path: Path, nats_servers: NatsServers, server: NatsServer
) -> None:
    h = start_nats_actor(tmp_path, strict_server(nats_servers).url, credential(1, jwt=LONG_JWT))
    error = dial_until_too_large(h)
    assert "control line" in error.message
    assert "logout" not in error.message
    remembered = h.view().dial_error
    assert remembered is not None and remembered.code == errors.E_CREDENTIAL_TOO_LARGE
    with pytest.raises(PpzError) as info:
        h.proxy.arm_watch("w", ACCT, lambda _s: None, lambda: None).get()
    assert info.value.code == errors.E_CREDENTIAL_TOO_LARGE
    h.give(credential(2))
    h.proxy.set_target(server.url, ACCT).get()
    h.proxy.rebuild("ensureNATS").get()
    assert h.view().dial_error is None


# --- connection loss (§5.5, §5.8) ---------------------------------------------------------------


def test_a_lost_server_records_disconnect_then_closed_and_a_rebuild_reconnects(
    connected: Harness, server: NatsServer, nats_servers: NatsServers
) -> None:
    server.kill()
    connected.wait_for("disconnect")
    assert new_events(connected, 2) == [("disconnect", "nats-client", nc(1), "")]
    assert connected.view().state() == "connecting"
    connected.kick_connect.assert_not_called()
    # Make the client give up now rather than after 60 attempts 2 s apart.
    client = connected.view().client
    client.options["max_reconnect_attempts"] = 1
    client.options["reconnect_time_wait"] = 0.05
    connected.wait_for("closed")
    closed = connected.events("closed")
    assert [(e.caller, e.nc_id) for e in closed] == [("nats-client", nc(1))]
    assert "no servers" in closed[0].reason
    connected.kick_connect.assert_called_once_with()
    assert connected.view().state() == "disconnected"

    nats_servers(port=server.port)
    before = len(connected.events())
    connected.proxy.rebuild("ensureNATS").get()
    assert new_events(connected, before) == [
        ("swap", "ensureNATS", nc(2), f"old={nc(1)} new={nc(2)}"),
        ("reconnect", "ensureNATS", nc(2), "rebuilt connection"),
    ]
    assert connected.view().state() == "connected"


def test_the_client_reconnects_by_itself_when_the_server_comes_back(
    connected: Harness, server: NatsServer, nats_servers: NatsServers
) -> None:
    view = connected.view()
    server.kill()
    connected.wait_for("disconnect")
    nats_servers(port=server.port)
    connected.wait_for("reconnect")
    assert new_events(connected, 2) == [
        ("disconnect", "nats-client", nc(1), ""),
        ("reconnect", "nats-client", nc(1), view.url),
    ]
    assert connected.view().nc is view.nc and connected.view().state() == "connected"
    connected.kick_connect.assert_not_called()
    connected.proxy.rebuild("ensureNATS").get()  # still the dialled credential: nothing to do
    assert "swap" not in connected.types()[2:]


# --- in-place rotation (§5.9) ---------------------------------------------------------------------


def test_rotation_reconnects_in_place_and_keeps_subscriptions_and_follows(connected: Harness) -> None:
    view = connected.view()
    got = subscribe(view, "rotation.probe")
    local, peer = socket.socketpair()
    follow = FollowActor.start(conn=local)
    new_exp = EXP + 300

    connected.proxy.actor_ref.tell(Rotate(snapshot=credential(2, new_exp)))
    connected.wait_for("reconnect")

    assert new_events(connected, 2) == [
        ("rotate", "OnRefreshed-callback", nc(1), "in-place reconnect"),
        ("disconnect", "rotate", nc(1), ""),
        ("reconnect", "rotate", nc(1), view.url),
    ]
    assert connected.events("rotate")[0].jwt_exp == new_exp
    after = connected.view()
    assert after.nc is view.nc and after.nc_id == nc(1)
    assert (after.state(), after.dialled_exp, after.dialled_gen) == ("connected", new_exp, 2)
    connected.proxy.rebuild("OnRefreshed-callback").get()  # coalesces onto the rotated connection
    assert "swap" not in connected.types()[2:]

    publish(after, "rotation.probe", b"after")
    wait_until(lambda: got == [b"after"], "message on the pre-rotation subscription")
    assert follow.is_alive()
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # no EOF: the follow's socket is still open
    local.close()
    peer.close()


def test_rotations_requested_within_2s_wait_and_use_the_newest_credential(connected: Harness) -> None:
    for generation in (2, 3, 4):
        connected.proxy.actor_ref.tell(Rotate(snapshot=credential(generation, EXP + generation)))
    wait_until(lambda: connected.view().dialled_gen == 4, "rotation to generation 4", timeout=15)
    rotations = connected.events("rotate")
    assert [e.jwt_exp for e in rotations] == [EXP + 2, EXP + 4]
    assert rotations[1].at_epoch - rotations[0].at_epoch >= 1.9
    assert "swap" not in connected.types()[2:]


def test_a_burst_of_refreshes_rotates_at_most_twice_and_ends_on_the_newest_credential(
    tmp_path: Path, server: NatsServer
) -> None:
    # Wired as bootstrap does: the refresh loop publishes its generation, then tells Rotate.
    refresh_box = Published(RefreshView())
    h = start_nats_actor(tmp_path, server.url, credential(1, EXP), refresh_box=refresh_box)
    h.proxy.rebuild("ensureNATS").get()
    for generation in (2, 3, 4):
        refresh_box.value = RefreshView(exchanged=True, exp=EXP + generation, generation=generation)
        h.proxy.actor_ref.tell(Rotate(snapshot=credential(generation, EXP + generation)))
    wait_until(lambda: h.view().dialled_gen == 4, "rotation to generation 4", timeout=15)
    exps = [e.jwt_exp for e in h.events("rotate")]
    # Not one rotation per request: at most one now and one, after the spacing, to the newest.
    assert exps in ([EXP + 4], [EXP + 2, EXP + 4], [EXP + 3, EXP + 4])
    assert "swap" not in h.types()[2:]


def test_a_rotation_that_waited_does_not_redo_what_an_ensure_nats_swap_did(
    connected: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rotation under load: a refresh came within the spacing of the last rotation, so its
    # rotation waits; meanwhile the installed credential nears its expiry, and a Send's
    # ensure-NATS rebuild dials a new connection with the new credential. When the waiting
    # rotation comes due it must leave that connection alone: rotating it drops it (requests
    # on it fail over to nothing while it reconnects) for a credential it already has.
    monkeypatch.setattr(nats_actor, "ROTATE_SPACING", 600.0)  # the spacing's own timer never fires here
    near_expiry = int(time.time())
    connected.proxy.actor_ref.tell(Rotate(snapshot=credential(2, near_expiry)))
    connected.proxy.actor_ref.tell(Rotate(snapshot=credential(3, near_expiry + 300)))
    connected.proxy.rebuild("ensureNATS").get()
    assert connected.view().nc_id == nc(2) and connected.view().dialled_gen == 3
    monkeypatch.setattr(nats_actor, "ROTATE_SPACING", 0.0)
    connected.proxy.actor_ref.tell(RotationDue())  # what the spacing's timer tells
    connected.proxy.view().get()  # after the RotationDue in the mailbox
    assert [(e.nc_id, e.jwt_exp) for e in connected.events("rotate")] == [(nc(1), near_expiry)]
    assert connected.view().state() == "connected"


def test_a_rotate_without_a_connection_falls_back_to_a_rebuild(nats: Harness) -> None:
    nats.proxy.actor_ref.tell(Rotate(snapshot=credential(2, EXP + 5)))
    wait_until(lambda: nats.view().state() == "connected", "fallback rebuild")
    assert rows(nats.events()) == [
        ("swap", "OnRefreshed-callback", nc(1), f"old=- new={nc(1)}"),
        ("connect", "OnRefreshed-callback", nc(1), "initial connection"),
    ]
    assert nats.view().dialled_gen == 2


# --- watch registry (§5.4) ---------------------------------------------------------------------------


class Watch:
    """The callbacks of one ListWatch: subjects seen (on the loop thread) and wake-ups."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.wakes = 0

    def on_subject(self, subject: str) -> None:
        self.subjects.append(subject)

    def wake(self) -> None:
        self.wakes += 1


def test_arming_a_watch_without_a_connection_fails_unreachable(nats: Harness) -> None:
    with pytest.raises(PpzError) as info:
        nats.proxy.arm_watch("w", ACCT, Watch().on_subject, Watch().wake).get()
    assert info.value.code == errors.E_NATS_UNREACHABLE


def test_an_armed_watch_sees_publishes_across_a_swap_and_is_woken_by_a_swap_to_nothing(
    connected: Harness,
) -> None:
    watch = Watch()
    connected.proxy.arm_watch("w", ACCT, watch.on_subject, watch.wake).get()
    publish(connected.view(), f"{ACCT}.x.inbox")
    wait_until(lambda: watch.subjects == [f"{ACCT}.x.inbox"], "watch sees the publish")

    connected.give(credential(2, EXP))
    connected.proxy.rebuild("ensureNATS").get()
    connected.wait_for("closed")
    assert "warn" not in connected.types()
    publish(connected.view(), f"{ACCT}.y.inbox")
    wait_until(lambda: watch.subjects[1:] == [f"{ACCT}.y.inbox"], "re-armed watch sees a publish")

    wakes = watch.wakes
    connected.proxy.swap_to_nothing("watchState-creds-gone").get()
    assert watch.wakes == wakes + 1


def test_a_swap_to_nothing_wakes_every_armed_watch(connected: Harness) -> None:
    first, second = Watch(), Watch()
    connected.proxy.arm_watch("1", ACCT, first.on_subject, first.wake).get()
    connected.proxy.arm_watch("2", ACCT, second.on_subject, second.wake).get()
    connected.proxy.swap_to_nothing("handleLogout").get()
    assert (first.wakes, second.wakes) == (1, 1)


def test_a_watch_kept_across_a_swap_to_nothing_is_armed_again_by_the_next_rebuild(connected: Harness) -> None:
    watch = Watch()
    connected.proxy.arm_watch("w", ACCT, watch.on_subject, watch.wake).get()
    connected.proxy.swap_to_nothing("watchState-creds-changed").get()
    connected.give(credential(2, EXP))
    connected.proxy.rebuild("ensureNATS").get()
    publish(connected.view(), f"{ACCT}.x.inbox")
    wait_until(lambda: watch.subjects == [f"{ACCT}.x.inbox"], "the watch sees a publish on the new connection")


def test_a_disarmed_watch_sees_nothing(connected: Harness) -> None:
    gone, kept = Watch(), Watch()
    connected.proxy.arm_watch("gone", ACCT, gone.on_subject, gone.wake).get()
    connected.proxy.arm_watch("kept", ACCT, kept.on_subject, kept.wake).get()
    connected.proxy.disarm_watch("gone").get()
    publish(connected.view(), f"{ACCT}.x.inbox")
    wait_until(lambda: kept.subjects == [f"{ACCT}.x.inbox"], "the kept watch sees the publish")
    assert gone.subjects == []


# --- presence (§7.2) -----------------------------------------------------------------------------------


def beat_body(payload: str) -> bytes:
    return new_envelope(sender="agent-b", payload=payload).encode()


def beats(h: Harness) -> list[Beat]:
    return [c.args[0] for c in h.heartbeats.tell.call_args_list]


@pytest.mark.parametrize(
    ("subject", "handle"),
    [
        (f"{ACCT}._presence.agent-b", "agent-b"),
        (f"{ACCT}._presence.ns.sub.agent-b", "agent-b"),
        (f"{ACCT}._presence", ""),
        (f"{ACCT}.agent-b.inbox", ""),
        ("not-a-uuid._presence.agent-b", ""),
    ],
)
def test_presence_handle_is_the_last_token_of_a_presence_subject(subject: str, handle: str) -> None:
    assert presence_handle(subject) == handle


def test_presence_beats_are_told_to_heartbeats_with_the_armed_account(connected: Harness) -> None:
    view = connected.view()
    publish(view, f"{ACCT}._presence.ns.agent-b", beat_body('{"status":"busy"}'))
    publish(view, f"{ACCT}.agent-b.inbox", beat_body("not presence"))
    publish(view, f"{OTHER_ACCT}._presence.agent-c", beat_body("other account"))
    publish(view, f"{ACCT}._presence.agent-c", b"not an envelope")
    publish(view, f"{ACCT}._presence.agent-z", beat_body("last"))
    wait_until(lambda: len(beats(connected)) >= 2, "two beats")
    got = beats(connected)
    assert [(b.handle, b.account_id, b.payload) for b in got] == [
        ("agent-b", ACCT, '{"status":"busy"}'),
        ("agent-z", ACCT, "last"),
    ]
    assert all(isinstance(b.arrived_at, float) and b.arrived_at > 0 for b in got)


def test_presence_is_armed_again_on_the_new_connection_after_a_swap(connected: Harness) -> None:
    connected.give(credential(2, EXP))
    connected.proxy.rebuild("ensureNATS").get()
    connected.wait_for("closed")
    publish(connected.view(), f"{ACCT}._presence.agent-b", beat_body("after swap"))
    publish(connected.view(), f"{ACCT}._presence.agent-z", beat_body("sentinel"))
    wait_until(lambda: len(beats(connected)) >= 2, "beats on the new connection")
    assert [b.payload for b in beats(connected)] == ["after swap", "sentinel"]


# --- failure report (§6) --------------------------------------------------------------------------------


def test_a_probe_that_times_out_force_closes_and_kicks_the_connect_loop(
    connected: Harness, server: NatsServer
) -> None:
    server.pause()
    try:
        connected.proxy.report_failure("stream info: nats: timeout").get()
        connected.proxy.report_failure("consumer create: nats: timeout").get()  # one probe at a time
        connected.wait_for("force_close", timeout=12)
        closes = connected.events("force_close")
        assert [(e.caller, e.nc_id) for e in closes] == [("reportNATSFailure", nc(1))]
        assert closes[0].reason.startswith("stream info: nats: timeout; probe: ")
        assert len(closes[0].reason) > len("stream info: nats: timeout; probe: ")
        # The connection is closed and the loop kicked after the event is recorded, on the loop.
        wait_until(lambda: connected.kick_connect.called, "the connect loop kicked")
        wait_until(lambda: connected.view().state() == "disconnected", "the wedged connection closed")
    finally:
        server.resume()
    before = len(connected.events())
    connected.proxy.rebuild("ensureNATS").get()
    assert ("reconnect", "ensureNATS", nc(2), "rebuilt connection") in new_events(connected, before)
    assert connected.types().count("force_close") == 1


def test_a_probe_that_passes_keeps_the_connection_and_warns_once(connected: Harness) -> None:
    view = connected.view()
    assert view.loop_thread is not None
    gate = threading.Event()

    async def hold_the_loop() -> None:
        gate.wait(5)  # blocks the loop thread: both reports arrive before the probe can run

    blocker = view.loop_thread.submit(hold_the_loop())
    try:
        connected.proxy.report_failure("list streams: nats: timeout").get()
        connected.proxy.report_failure("list streams: nats: timeout").get()
    finally:
        gate.set()
    blocker.result(5)
    connected.wait_for("warn")
    connected.proxy.view().get()  # every message told so far has been handled
    assert new_events(connected, 2) == [
        ("warn", "reportNATSFailure", nc(1), "kept connection: probe passed after list streams: nats: timeout"),
    ]
    assert connected.view().nc is view.nc and connected.view().state() == "connected"
    connected.kick_connect.assert_not_called()
    # A later report probes again.
    connected.proxy.report_failure("again").get()
    connected.wait_for("warn", count=2)


def test_a_report_without_a_connection_does_nothing(nats: Harness) -> None:
    nats.proxy.report_failure("stream info: nats: timeout").get()
    nats.proxy.view().get()
    assert nats.events() == []


# --- the event inbox ---------------------------------------------------------------------------------


def test_recorded_events_carry_the_current_jwt_exp_unless_given(nats: Harness) -> None:
    nats.proxy.actor_ref.tell(RecordEvent(type="wake", caller="wake-watchdog", reason="r"))
    nats.proxy.actor_ref.tell(RecordEvent(type="warn", caller="x", jwt_exp=7))
    nats.proxy.actor_ref.tell("unexpected")  # logged and ignored
    got = nats.events()
    assert [(e.type, e.caller, e.jwt_exp) for e in got] == [("wake", "wake-watchdog", EXP), ("warn", "x", 7)]
    assert nats.proxy.actor_ref.is_alive()


def test_stopping_the_actor_closes_the_connection(connected: Harness) -> None:
    client = connected.view().client
    connected.proxy.actor_ref.stop(block=True, timeout=10)
    assert client.is_closed
    with pytest.raises(pykka.ActorDeadError):
        connected.proxy.view().get()


# --- IdentityChanged (ipc.md §7.2 steps 4 and 6, §7.3 steps 1 and 4; home.md §5.3) ------------------

@NOT_A_LOGIN
def test_an_identity_change_other_than_a_login_forgets_the_url_and_swaps_to_nothing(
    connected: Harness, change: IdentityChanged
) -> None:
    assert connected.proxy.actor_ref.ask(change) == []
    assert new_events(connected, 2)[0] == ("swap", change.caller, "", f"old={nc(1)} new=-")
    view = connected.view()
    assert (view.nc, view.url, view.dial_error) == (None, "", None)
    connected.proxy.rebuild("ensureNATS").get()  # no URL and no credential: nothing is dialled
    assert connected.types().count("connect") == 1


def test_a_logout_without_a_connection_forgets_the_dial_error_and_swaps_nothing(
    tmp_path: Path, refused_url: str
) -> None:
    h = start_nats_actor(tmp_path, refused_url)
    with pytest.raises(PpzError):
        h.proxy.rebuild("ensureNATS").get()
    assert h.proxy.actor_ref.ask(LOGOUT) == []
    assert (h.view().dial_error, h.view().url) == (None, "")
    assert h.events() == []


def test_a_login_adopts_its_nats_url_and_account_and_its_rebuild_swaps(
    connected: Harness, nats_servers: NatsServers
) -> None:
    other = nats_servers()
    assert connected.proxy.actor_ref.ask(login(creds_of(OTHER_ACCT), other.url)) == []
    view = connected.view()
    # The broadcast itself swaps nothing: the old connection serves until the login's rebuild.
    assert (view.url, view.nc_id, view.state()) == (other.url, nc(1), "connected")
    assert connected.types() == ["swap", "connect"]
    connected.give(credential(2, EXP))
    connected.proxy.rebuild("handleLogin").get()
    assert new_events(connected, 2)[0] == ("swap", "handleLogin", nc(2), f"old={nc(1)} new={nc(2)}")
    # Presence is armed under the login's account on the new server.
    publish(connected.view(), f"{OTHER_ACCT}._presence.agent-b", beat_body("new account"))
    wait_until(lambda: len(beats(connected)) >= 1, "a beat of the new account")
    assert [(b.account_id, b.payload) for b in beats(connected)] == [(OTHER_ACCT, "new account")]
