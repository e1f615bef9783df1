"""StateActor: identity, sessions, caches and the all-or-nothing reload.

spec/home.md §4–§6, spec/daemon.md §2, spec/ipc.md §7.2–§7.3, behaviours 8–12. Every actor
runs on a real ``$PPZ_HOME`` in ``tmp_path``; an identity listener records the ``IdentityChanged``
broadcasts it sends (the refresh loop, NATS owner, heartbeat cache and cursor owner react to
them in their own tests) and a mock stands for the connect loop's kick.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ppz import errors
from ppz.actors.identity import IdentityListener
from ppz.actors.state import STREAMS_SEEN_TTL, SessionView, SourcesFlights, StateActor, StateView
from ppz.home import Credentials, Home, load_state
from ppz.messages import (
    IdentityChanged,
    LoginChecked,
    Poll,
    Reload,
    StreamGone,
    StreamSeen,
    StreamsForgotten,
)
from ppz.published import Published
from ppz.serverclient import SourceInfo
from ppz.system import list_sources

from .identities import exchange_for

ACCT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
OTHER_ACCT = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
CREDS = Credentials(
    url="http://127.0.0.1:8080",
    api_key="ppz_0123456789abcdef0123456789",
    account_id=ACCT,
    account_name="alpha",
    nats_user_jwt="eyJ.jwt-one",
    nats_user_seed="SUA-seed-one",
)
BOB = SourceInfo(handle="bob", manifold="team-a", kind="message", pipes=("notes",))


CREDS_GONE = [IdentityChanged(caller="watchState-creds-gone", creds=None)]


def creds_changed(creds: Credentials) -> list[Any]:
    return [IdentityChanged(caller="watchState-creds-changed", creds=creds), "kick_connect"]


class Listener(IdentityListener):
    """Records every IdentityChanged and answers with ``answer`` (a listener's problems)."""

    def __init__(self, seen: list[IdentityChanged], answer: list[str]) -> None:
        super().__init__()
        self._seen = seen
        self._answer = answer

    def on_identity_changed(self, change: IdentityChanged) -> list[str]:
        self._seen.append(change)
        return list(self._answer)

    def on_receive(self, message: Any) -> Any:
        return self.react(message)


# Seconds since the epoch, long ago and never twice the same: every file this test writes "as
# another process" gets an mtime of its own, distinct from the actor's own writes (which carry
# the current time), so the poller's (mtime, size) signature always sees the change however
# coarse the file system's clock is.
_MTIMES = itertools.count(1_500_000_000)


def put(path: Path, data: str | bytes) -> None:
    """Write a state file the way another process (or a user) would."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    ns = next(_MTIMES) * 1_000_000_000
    os.utime(path, ns=(ns, ns))


def put_json(path: Path, obj: object) -> None:
    put(path, json.dumps(obj))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Rig:
    """A StateActor on a real home; ``identity_calls`` lists what it broadcast and kicked."""

    def __init__(self, root: Path) -> None:
        self.home = Home.at(root)
        self.box: Published[StateView] = Published(StateView())
        self.seen: list[IdentityChanged] = []
        self.kicks = 0
        self.answer: list[str] = []
        self.proxy: Any = None
        self.listener: Any = None

    def start(self) -> Rig:
        loaded = load_state(self.home)
        self.listener = Listener.start(self.seen, self.answer)
        self.proxy = StateActor.start(home_=self.home, loaded=loaded, view_box=self.box,
                                      kick_connect=self.kick).proxy()
        return self

    def kick(self) -> None:
        self.kicks += 1

    def poll(self) -> None:
        self.proxy.actor_ref.ask(Poll())

    def reload(self) -> None:
        self.proxy.actor_ref.ask(Reload())

    @property
    def view(self) -> StateView:
        return self.proxy.view().get()

    def session(self, session: str = "") -> SessionView:
        return self.proxy.session(session).get()

    def identity_calls(self) -> list[Any]:
        """The IdentityChanged broadcasts the listener received, then one entry per kick."""
        self.listener.proxy().actor_urn.get()  # behind every broadcast already sent
        return [*self.seen, *["kick_connect"] * self.kicks]

    def warm(self) -> None:
        """Fill the three source caches and verify the login, as a successful server call does."""
        self.listed((BOB,))
        self.proxy.set_login_check("ok").get()
        assert self.caches_warm()

    def listed(self, sources: tuple[SourceInfo, ...], creds: Credentials = CREDS) -> None:
        """A successful ``GET /api/v1/sources`` made with ``creds``, through the single-flight."""
        flight = self.proxy.claim_sources(creds).get().flight
        self.proxy.start_sources(flight).get()
        self.proxy.finish_sources(flight, sources).get()

    def assert_no_reload(self) -> None:
        """Nothing was reloaded: caches warm, login check ``ok``, nothing broadcast."""
        assert self.caches_warm()
        assert self.view.login_check == "ok"
        assert self.identity_calls() == []

    def assert_quiet_reload(self) -> None:
        """A reload that kept the identity: caches and login check reset, nothing broadcast."""
        assert not self.caches_warm()
        assert self.view.login_check == ""
        assert self.identity_calls() == []

    def caches_warm(self) -> bool:
        known = self.proxy.is_known("bob").get()
        manifold = self.proxy.manifold("bob").get()
        completion = self.proxy.completion().get()
        assert (known, manifold == "team-a", completion is not None) in ((True, True, True),
                                                                          (False, False, False))
        return known


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """Logged in as CREDS, session ``default`` on ``alice``, caches warm, login check ``ok``."""
    r = Rig(tmp_path)
    put_json(r.home.credentials, CREDS.to_json())
    put_json(r.home.current_json, {"default": "alice", "sid-7": "carol"})
    r.start()
    r.warm()
    return r


@pytest.fixture
def logged_out(tmp_path: Path) -> Rig:
    return Rig(tmp_path).start()


# --- reload: credentials gone (home.md §5.3 step 3, §6 path 3) -----------------------------------


@pytest.mark.parametrize("gone", ["deleted", "truncated", "whitespace"])
def test_credentials_gone_on_disk_logs_out_and_tells_the_peers(rig: Rig, gone: str) -> None:
    if gone == "deleted":
        rig.home.credentials.unlink()
    else:
        put(rig.home.credentials, "" if gone == "truncated" else " \n\t ")
    rig.poll()
    assert (rig.view.creds, rig.view.login_check) == (None, "")
    assert rig.identity_calls() == CREDS_GONE
    assert not rig.caches_warm()


def test_credentials_gone_keeps_current_json_for_the_next_login(rig: Rig) -> None:
    rig.home.credentials.unlink()
    rig.poll()
    assert rig.home.current_json.exists()
    assert rig.session("sid-7").current == "carol"


# --- reload: identity changed (home.md §5.3 step 4) -----------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        {"url": "http://127.0.0.1:9090"},
        {"api_key": "ppz_ffffffffffffffffffffffffff"},
        {"account_id": OTHER_ACCT},
    ],
    ids=["url", "api_key", "account_id"],
)
def test_identity_change_on_disk_swaps_to_nothing_and_kicks_the_connect_loop(
    rig: Rig, changed: dict[str, str]
) -> None:
    new = replace(CREDS, **changed)
    put_json(rig.home.credentials, new.to_json())
    rig.poll()
    assert (rig.view.creds, rig.view.login_check) == (new, "")
    assert rig.identity_calls() == creds_changed(new)
    assert not rig.caches_warm()


def test_credentials_written_by_another_process_while_logged_out_connect(logged_out: Rig) -> None:
    put_json(logged_out.home.credentials, CREDS.to_json())
    logged_out.poll()
    assert logged_out.view.creds == CREDS
    assert logged_out.identity_calls() == creds_changed(CREDS)


def test_a_new_jwt_for_the_same_identity_leaves_connection_and_loop_alone(rig: Rig) -> None:
    rotated = CREDS.with_nats("eyJ.jwt-rotated-elsewhere", "SUA-seed-two", account_name="renamed")
    put_json(rig.home.credentials, rotated.to_json())
    rig.poll()
    assert rig.view.creds == rotated
    rig.assert_quiet_reload()  # still a reload: caches and login check reset (home.md §5.3 step 2)


# --- reload: triggers and resets ------------------------------------------------------------------


def test_a_poll_without_a_change_does_not_reload(rig: Rig) -> None:
    for _ in range(3):
        rig.poll()
    rig.assert_no_reload()


def test_an_edited_current_json_reloads_sessions_and_resets_caches(rig: Rig) -> None:
    put_json(rig.home.current_json, {"default": "dave"})
    rig.poll()
    assert rig.session().current == "dave"
    assert rig.session("sid-7").current == ""
    rig.assert_quiet_reload()


def test_reload_message_reloads_unconditionally(rig: Rig) -> None:
    # namespace.json is not polled; a SIGHUP reload picks up its edit (home.md §5.1).
    put_json(rig.home.namespace_json, {"default": "team-b"})
    rig.poll()
    assert rig.session().namespace == ""
    rig.reload()
    assert rig.session().namespace == "team-b"
    rig.assert_quiet_reload()


# --- reload: all or nothing (home.md §5.2) --------------------------------------------------------


def _make_credentials_a_directory(home: Home) -> None:
    home.credentials.unlink()
    home.credentials.mkdir()


def _restore_credentials(home: Home) -> None:
    if home.credentials.is_dir():
        home.credentials.rmdir()
    put_json(home.credentials, CREDS.to_json())


CORRUPTIONS = {
    "creds-array": lambda h: put(h.credentials, "[]"),
    "creds-bad-json": lambda h: put(h.credentials, '{"url": '),
    "creds-no-api-key": lambda h: put_json(h.credentials, {"url": "http://127.0.0.1:8080"}),
    "creds-unreadable": _make_credentials_a_directory,
    "current-bad-json": lambda h: put(h.current_json, "{not json"),
    "current-not-object": lambda h: put_json(h.current_json, ["alice"]),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_failed_read_abandons_the_reload_and_the_next_poll_retries(rig: Rig, corrupt: Any) -> None:
    corrupt(rig.home)
    rig.poll()
    assert rig.view.creds == CREDS
    assert rig.session().current == "alice"
    rig.assert_no_reload()

    _restore_credentials(rig.home)
    put_json(rig.home.current_json, {"default": "erin"})
    rig.poll()
    assert rig.session().current == "erin"
    assert rig.view.creds == CREDS
    rig.assert_quiet_reload()


def test_an_abandoned_reload_is_retried_even_when_no_polled_file_changes(rig: Rig) -> None:
    # namespace.json is read by every reload but not polled: once it is fixed, only the
    # forgotten signatures make the next tick retry.
    put(rig.home.namespace_json, "{broken")
    put_json(rig.home.current_json, {"default": "frank"})
    rig.poll()
    assert rig.session().current == "alice"
    put_json(rig.home.namespace_json, {"default": "team-c"})
    rig.poll()
    assert rig.session() == SessionView(current="frank", namespace="team-c")


def test_each_distinct_reload_error_is_logged_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ppz.actors.state")
    put(rig.home.credentials, "[]")
    for _ in range(3):
        rig.poll()
    put(rig.home.credentials, "{")
    for _ in range(3):
        rig.poll()
    abandoned = [r for r in caplog.records if "reload abandoned" in r.getMessage()]
    assert len(abandoned) == 2
    assert str(rig.home.credentials) in abandoned[0].getMessage()


# --- own writes never trigger a reload (home.md §5.1) ---------------------------------------------

NEW_LOGIN = Credentials(url="http://127.0.0.1:8080", api_key="ppz_fedcba9876543210fedcba98",
                        account_id=OTHER_ACCT, account_name="beta", nats_user_jwt="eyJ.other-account-jwt")


def test_install_logins_own_write_does_not_reload(rig: Rig) -> None:
    rig.proxy.install_login(NEW_LOGIN, exchange_for(NEW_LOGIN)).get().wait()
    rig.poll()
    assert (rig.view.creds, rig.view.login_check) == (NEW_LOGIN, "ok")
    assert [c.caller for c in rig.identity_calls()] == ["handleLogin"]  # the login's own broadcast only
    assert read_json(rig.home.credentials) == NEW_LOGIN.to_json()


def test_persist_credentials_own_write_does_not_reload(rig: Rig) -> None:
    rotated = CREDS.with_nats("eyJ.rotated-jwt-that-is-longer", "SUA-seed-rotated")
    assert rig.proxy.persist_credentials(rotated).get() == ""
    rig.poll()
    assert rig.view.creds == rotated
    rig.assert_no_reload()


def test_set_current_own_write_does_not_reload(rig: Rig) -> None:
    rig.proxy.set_current("sid-9", "bob").get()
    rig.poll()
    rig.assert_no_reload()


def test_logout_own_deletions_do_not_reload(rig: Rig) -> None:
    assert rig.proxy.logout().get().wait() == []
    rig.poll()
    # A reload would have broadcast "credentials gone" as well.
    assert [c.caller for c in rig.identity_calls()] == ["handleLogout"]


def test_an_own_write_to_current_json_does_not_hide_an_external_logout(rig: Rig) -> None:
    put(rig.home.credentials, "")  # logged out by hand ...
    rig.proxy.set_current("sid-9", "bob").get()  # ... just before the daemon's own write
    rig.poll()
    assert rig.view.creds is None
    assert rig.identity_calls() == CREDS_GONE


def test_an_own_credentials_write_does_not_hide_an_external_current_json_edit(rig: Rig) -> None:
    put_json(rig.home.current_json, {"default": "grace"})
    rig.proxy.persist_credentials(CREDS.with_nats("eyJ.rotated", "SUA-rotated")).get()
    rig.poll()
    assert rig.session().current == "grace"


# --- login / persistence / logout -------------------------------------------------------------------


def test_install_login_installs_resets_caches_marks_the_login_ok_and_broadcasts(rig: Rig) -> None:
    rig.proxy.set_login_check("invalid").get()
    exchange = exchange_for(NEW_LOGIN)
    assert rig.proxy.install_login(NEW_LOGIN, exchange).get().wait() == []
    assert (rig.view.creds, rig.view.login_check) == (NEW_LOGIN, "ok")
    assert not rig.caches_warm()
    assert rig.session().current == "alice"  # a login does not touch the sessions
    assert rig.identity_calls() == [IdentityChanged(caller="handleLogin", creds=NEW_LOGIN, exchange=exchange)]


def test_install_login_while_logged_out_writes_the_credential(logged_out: Rig) -> None:
    logged_out.proxy.install_login(CREDS, exchange_for(CREDS)).get().wait()
    assert read_json(logged_out.home.credentials) == CREDS.to_json()


def test_install_login_that_cannot_write_changes_nothing(rig: Rig) -> None:
    _make_credentials_a_directory(rig.home)
    with pytest.raises(errors.PpzError) as caught:
        rig.proxy.install_login(NEW_LOGIN, exchange_for(NEW_LOGIN)).get()
    assert caught.value.code == errors.E_INTERNAL
    assert rig.identity_calls() == []
    assert (rig.view.creds, rig.view.login_check) == (CREDS, "ok")
    assert rig.caches_warm()
    assert sorted(p.name for p in rig.home.root.iterdir()) == ["credentials", "current.json"]


def test_persist_credentials_keeps_login_check_and_caches(rig: Rig) -> None:
    rotated = CREDS.with_nats("eyJ.jwt-two", "SUA-seed-two", account_name="alpha-renamed")
    assert rig.proxy.persist_credentials(rotated).get() == ""
    assert (rig.view.creds, rig.view.login_check) == (rotated, "ok")
    assert rig.caches_warm()
    assert read_json(rig.home.credentials) == rotated.to_json()


def test_persist_credentials_refuses_a_credential_of_another_identity(rig: Rig) -> None:
    before = rig.home.credentials.read_bytes()
    assert rig.proxy.persist_credentials(NEW_LOGIN).get() == "identity changed meanwhile"
    assert rig.view.creds == CREDS
    assert rig.home.credentials.read_bytes() == before


def test_persist_credentials_while_logged_out_writes_nothing(logged_out: Rig) -> None:
    assert logged_out.proxy.persist_credentials(CREDS).get() != ""
    assert not logged_out.home.credentials.exists()
    assert logged_out.view.creds is None


def test_persist_credentials_that_cannot_write_reports_and_still_rotates_in_memory(rig: Rig) -> None:
    _make_credentials_a_directory(rig.home)
    rotated = CREDS.with_nats("eyJ.jwt-two", "SUA-seed-two")
    problem = rig.proxy.persist_credentials(rotated).get()
    assert problem
    assert rig.view.creds == rotated


def test_logout_deletes_the_logout_files_and_keeps_namespace_json(rig: Rig) -> None:
    home = rig.home
    put(home.legacy_current, "bob\n")
    (home.cursors_dir / "sub").mkdir(parents=True)
    put_json(home.cursors_dir / "default.json", {"k": {"seq": 1, "created": 0}})
    rig.proxy.set_namespace("sid-7", "team-a").get()
    assert rig.proxy.logout().get().wait() == []
    # cursors/ belongs to the cursor owner, which deletes it when the broadcast asks it to.
    assert sorted(p.name for p in home.root.iterdir()) == ["cursors", "namespace.json"]
    assert rig.identity_calls() == [IdentityChanged(caller="handleLogout", creds=None, remove_cursors=True)]
    assert (rig.view.creds, rig.view.login_check) == (None, "")
    assert rig.session("sid-7") == SessionView(current="", namespace="team-a")
    assert rig.session() == SessionView()
    assert not rig.caches_warm()


def test_logout_twice_is_fine(logged_out: Rig) -> None:
    assert logged_out.proxy.logout().get().wait() == []
    assert logged_out.proxy.logout().get().wait() == []
    assert logged_out.view.creds is None


def test_a_login_checked_tell_updates_the_login_check(rig: Rig) -> None:
    rig.proxy.actor_ref.tell(LoginChecked(value="invalid"))
    assert rig.view.login_check == "invalid"


def test_the_login_check_stays_empty_while_logged_out(logged_out: Rig) -> None:
    logged_out.proxy.actor_ref.tell(LoginChecked(value="ok"))
    logged_out.proxy.set_login_check("ok").get()
    assert logged_out.view.login_check == ""


# --- sessions: current.json, legacy current, namespace.json (home.md §2.2, §4) ---------------------


@pytest.mark.parametrize("session", ["", "default"])
def test_set_current_for_the_empty_or_default_session_writes_the_default_key(
    logged_out: Rig, session: str
) -> None:
    logged_out.proxy.set_current(session, "alice").get()
    assert read_json(logged_out.home.current_json) == {"default": "alice"}
    assert logged_out.session("").current == "alice"
    assert logged_out.session("default").current == "alice"


def test_set_current_to_empty_removes_the_key(rig: Rig) -> None:
    rig.proxy.set_current("sid-7", "").get()
    assert read_json(rig.home.current_json) == {"default": "alice"}
    rig.proxy.set_current("", "").get()
    assert read_json(rig.home.current_json) == {}
    assert rig.session() == SessionView()


def test_set_current_that_cannot_write_raises_and_changes_nothing(rig: Rig) -> None:
    rig.home.current_json.unlink()
    rig.home.current_json.mkdir()
    with pytest.raises(errors.PpzError) as caught:
        rig.proxy.set_current("", "zed").get()
    assert caught.value.code == errors.E_INTERNAL
    assert rig.session().current == "alice"


@pytest.fixture
def legacy(tmp_path: Path) -> Rig:
    """Started on a home that has only the legacy ``current`` file, holding ``bob``."""
    r = Rig(tmp_path)
    put(r.home.legacy_current, "  bob \n")
    return r.start()


def test_the_legacy_current_file_seeds_the_default_session(legacy: Rig) -> None:
    assert legacy.session().current == "bob"
    assert legacy.session("default").current == "bob"
    assert legacy.session("sid-1").current == ""


def test_the_legacy_current_file_is_read_on_reload(logged_out: Rig) -> None:
    put(logged_out.home.legacy_current, "carol")
    logged_out.reload()
    assert logged_out.session().current == "carol"


def test_the_legacy_current_file_loses_to_a_default_key(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    put(r.home.legacy_current, "bob")
    put_json(r.home.current_json, {"default": "alice"})
    r.start()
    assert r.session().current == "alice"


def test_the_first_current_json_write_carries_the_legacy_value_and_deletes_the_file(legacy: Rig) -> None:
    legacy.proxy.set_current("sid-2", "carol").get()
    assert read_json(legacy.home.current_json) == {"default": "bob", "sid-2": "carol"}
    assert not legacy.home.legacy_current.exists()
    legacy.reload()
    assert legacy.session().current == "bob"


def test_unsetting_a_legacy_handle_stays_unset_after_a_reload_and_a_restart(legacy: Rig) -> None:
    legacy.proxy.set_current("", "").get()
    assert not legacy.home.legacy_current.exists()
    legacy.reload()
    assert legacy.session().current == ""
    legacy.proxy.actor_ref.stop()
    assert Rig(legacy.home.root).start().session().current == ""


def test_clear_current_everywhere_clears_every_session_on_that_handle(rig: Rig) -> None:
    rig.proxy.set_current("sid-8", "alice").get()
    rig.proxy.clear_current_everywhere("alice").get()
    assert read_json(rig.home.current_json) == {"sid-7": "carol"}
    assert rig.session().current == ""
    assert rig.session("sid-8").current == ""
    assert rig.session("sid-7").current == "carol"


def test_clear_current_everywhere_without_a_match_does_not_write(rig: Rig) -> None:
    before = os.stat(rig.home.current_json).st_mtime_ns
    rig.proxy.clear_current_everywhere("nobody").get()
    assert os.stat(rig.home.current_json).st_mtime_ns == before


def test_set_namespace_writes_namespace_json_and_empty_clears(rig: Rig) -> None:
    rig.proxy.set_namespace("", "team-a.ops").get()
    rig.proxy.set_namespace("sid-7", "team-b").get()
    assert read_json(rig.home.namespace_json) == {"default": "team-a.ops", "sid-7": "team-b"}
    rig.proxy.set_namespace("sid-7", "").get()
    assert read_json(rig.home.namespace_json) == {"default": "team-a.ops"}
    assert rig.session() == SessionView(current="alice", namespace="team-a.ops")


# --- source caches (ipc.md §6) ----------------------------------------------------------------------


def test_sources_listed_replaces_all_three_caches(rig: Rig) -> None:
    pty = SourceInfo(handle="term", kind="pty", pipes=("notes",))
    rig.listed((pty,))
    assert not rig.proxy.is_known("bob").get()
    assert rig.proxy.is_known("term").get()
    assert rig.proxy.manifold("term").get() == ""
    assert rig.proxy.completion().get() == {
        "term": ("heartbeat", "inbox", "notes", "stdctrl", "stdin", "stdout", "system")
    }


def test_a_listing_for_another_identity_is_not_applied(rig: Rig) -> None:
    other = SourceInfo(handle="stranger", kind="message")
    rig.listed((other,), replace(CREDS, url="http://elsewhere", api_key="ppz_x", account_id="acct"))
    assert not rig.proxy.is_known("stranger").get()
    assert rig.proxy.is_known("bob").get()


def test_completion_is_cold_until_the_first_listing(logged_out: Rig) -> None:
    logged_out.proxy.remember("bob", "team-a", "message").get()
    assert logged_out.proxy.is_known("bob").get()
    assert logged_out.proxy.completion().get() is None


def test_remember_and_forget_handle_update_the_warm_caches(rig: Rig) -> None:
    rig.proxy.remember("term", "team-b", "pty").get()
    assert rig.proxy.manifold("term").get() == "team-b"
    assert rig.proxy.completion().get()["term"] == ("heartbeat", "inbox", "stdctrl", "stdin", "stdout",
                                                    "system")
    rig.proxy.remember("bob", "", "").get()  # moved to the root: a manifold miss means root
    assert rig.proxy.manifold("bob").get() == ""
    rig.proxy.forget_handle("bob").get()
    assert not rig.proxy.is_known("bob").get()
    assert "bob" not in rig.proxy.completion().get()


def test_an_unexpected_message_is_ignored(rig: Rig) -> None:
    rig.proxy.actor_ref.tell("junk")
    assert rig.view.creds == CREDS
    assert rig.identity_calls() == []


def test_a_restart_sees_what_the_actor_wrote(tmp_path: Path) -> None:
    first = Rig(tmp_path).start()
    first.proxy.install_login(CREDS, exchange_for(CREDS)).get().wait()
    first.proxy.set_current("sid-1", "bob").get()
    first.proxy.actor_ref.stop()
    second = Rig(tmp_path).start()
    assert second.view.creds == CREDS
    assert second.session("sid-1").current == "bob"


# --- the streams a lookup found (the warm Send path reads them) ------------------------------------


def test_streams_seen_are_published_per_connection_and_dropped_when_gone(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start()
    rig.proxy.actor_ref.tell(StreamSeen(nc_id="nc-1", stream="S1"))
    rig.proxy.actor_ref.tell(StreamSeen(nc_id="nc-1", stream="S2"))
    rig.proxy.actor_ref.ask(StreamGone(nc_id="nc-1", stream="S2"))

    view = rig.box.value
    assert view.stream_fresh("nc-1", "S1")
    assert not view.stream_fresh("nc-2", "S1")  # another connection has not looked it up
    assert not view.stream_fresh("nc-1", "S2")


def test_a_destroyed_source_or_pipe_forgets_every_stream_seen(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start()
    rig.proxy.actor_ref.ask(StreamSeen(nc_id="nc-1", stream="S1"))
    assert rig.box.value.stream_fresh("nc-1", "S1")
    rig.proxy.actor_ref.ask(StreamsForgotten())

    assert not rig.box.value.stream_fresh("nc-1", "S1")


def test_streams_seen_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(tmp_path).start()
    rig.proxy.actor_ref.ask(StreamSeen(nc_id="nc-1", stream="S1"))
    assert rig.box.value.stream_fresh("nc-1", "S1")
    later = time.monotonic() + STREAMS_SEEN_TTL + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)

    assert not rig.box.value.stream_fresh("nc-1", "S1")


# --- the IdentityChanged broadcast's answers -----------------------------------------------------


def test_logouts_reactions_carry_the_listeners_problems_after_its_own(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.answer.append("logout: cannot remove cursors: Permission denied")
    real_unlink = os.unlink

    def unlink(path: str | Path) -> None:
        if Path(path) == rig.home.credentials:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    assert rig.proxy.logout().get().wait() == [
        f"logout: cannot remove {rig.home.credentials}: Permission denied",
        "logout: cannot remove cursors: Permission denied",
    ]


def test_a_reload_broadcast_nobody_waits_for_still_reaches_every_listener(rig: Rig) -> None:
    second: list[IdentityChanged] = []
    other = Listener.start(second, [])
    rig.home.credentials.unlink()
    rig.poll()
    other.proxy().actor_urn.get()
    assert rig.identity_calls() == CREDS_GONE
    assert second == CREDS_GONE


# --- the login-check probe single-flight (ipc.md §7.1) -------------------------------------------


def test_concurrent_status_calls_share_one_login_probe_and_the_next_claim_starts_a_new_one(rig: Rig) -> None:
    flight, runner = rig.proxy.claim_login_probe().get()
    again, second = rig.proxy.claim_login_probe().get()
    assert runner and not second and again is flight  # one probe in flight, shared
    rig.proxy.finish_login_probe(flight, "ok").get()
    assert flight.result(timeout=0) == "ok"
    fresh, runner = rig.proxy.claim_login_probe().get()
    assert runner and fresh is not flight and not fresh.done()


def test_finishing_a_probe_that_is_no_longer_in_flight_keeps_the_current_one(rig: Rig) -> None:
    old, _ = rig.proxy.claim_login_probe().get()
    rig.proxy.finish_login_probe(old, "").get()
    current, _ = rig.proxy.claim_login_probe().get()
    rig.proxy.finish_login_probe(old, "invalid").get()  # late and stale: ignored
    assert rig.proxy.claim_login_probe().get() == (current, False)


# --- the sources single-flight (ipc.md §6, §7.13 step 2) ----------------------------------------------

STRANGER = SourceInfo(handle="stranger", kind="message")


class SlowServer:
    """``list_sources`` answers ``replies`` in order; the first call waits for ``release``."""

    def __init__(self, *replies: tuple[SourceInfo, ...] | Exception) -> None:
        self.replies = list(replies)
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def list_sources(self, creds: Credentials) -> list[SourceInfo]:
        self.calls += 1
        reply = self.replies.pop(0)
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(10)
        if isinstance(reply, Exception):
            raise reply
        return list(reply)


class CountingState:
    """The state proxy, counting the claims it has answered (so a test knows who has asked)."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.claimed = 0
        self.lock = threading.Lock()

    def claim_sources(self, creds: Credentials) -> Any:
        future = self.proxy.claim_sources(creds)
        future.get()
        with self.lock:
            self.claimed += 1
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy, name)


def call_in_threads(n: int, fn: Any) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(fn())
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def wait_for(cond: Any) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def burst_during_a_listing(rig: Rig, server: SlowServer, n: int) -> tuple[Any, list[Any], Any]:
    """One caller starts a listing; ``n`` more ask while it runs; then it ends. Returns the
    first caller's result, the burst's results and the system they used."""
    state = CountingState(rig.proxy)
    system: Any = SimpleNamespace(state=state, server=server)
    first, first_result = call_in_threads(1, lambda: list_sources(system, CREDS))
    assert server.entered.wait(10)
    burst, results = call_in_threads(n, lambda: list_sources(system, CREDS))
    wait_for(lambda: state.claimed == n + 1)
    server.release.set()
    for t in [*first, *burst]:
        t.join(10)
    return first_result, results, system


def test_callers_that_ask_while_a_listing_runs_share_the_next_one(rig: Rig) -> None:
    server = SlowServer((BOB,), (STRANGER,))
    first_result, results, _ = burst_during_a_listing(rig, server, 8)
    assert first_result == [[BOB]]
    # The burst asked after the first call had started: one later call answers all of them.
    assert results == [[STRANGER]] * 8
    assert server.calls == 2
    assert rig.proxy.is_known("stranger").get()  # the caches follow the newest listing
    assert not rig.proxy.is_known("bob").get()


def test_a_failed_listing_fails_every_caller_that_shared_it_and_the_next_caller_retries(rig: Rig) -> None:
    failure = errors.PpzError(errors.E_SERVER_UNREACHABLE)
    server = SlowServer((BOB,), failure, (STRANGER,))
    _, results, system = burst_during_a_listing(rig, server, 4)
    assert results == [failure] * 4
    assert server.calls == 2
    assert rig.proxy.is_known("bob").get()  # a failure leaves the caches alone
    assert list_sources(system, CREDS) == [STRANGER]
    assert server.calls == 3


def test_a_listing_for_another_identity_is_never_shared() -> None:
    flights = SourcesFlights()
    mine = flights.claim(CREDS)
    theirs = flights.claim(replace(CREDS, api_key="ppz_other"))
    assert mine.loader and theirs.loader
    assert mine.flight is not theirs.flight
    again = flights.claim(replace(CREDS, api_key="ppz_other"))
    assert not again.loader and again.flight is theirs.flight
