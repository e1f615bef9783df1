"""CursorsActor: the one owner of the cursor files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from ppz import home as home_files
from ppz.actors.cursors import CursorsActor
from ppz.actors.state import StateActor, StateView
from ppz.cursors import CursorEntry
from ppz.home import CursorStore, Home
from ppz.messages import Advance
from ppz.published import Published

from .identities import ACCT_A, CREDS_GONE, LOGOUT, creds_changed, creds_of, login

T1 = 1777636200123456789


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.at(tmp_path)


def test_concurrent_advances_from_many_threads_lose_no_update(home: Home) -> None:
    cursors = CursorsActor.start(home_=home).proxy()
    keys, rounds = 12, 25
    barrier = threading.Barrier(keys)
    errors: list[BaseException] = []

    def reader(n: int) -> None:
        try:
            barrier.wait()
            for seq in range(1, rounds + 1):
                if seq % 2:
                    cursors.actor_ref.tell(Advance(session="shared", key=f"acct.h{n}.inbox", seq=seq, created=T1))
                else:
                    cursors.advance("shared", f"acct.h{n}.inbox", seq, T1).get()
        except BaseException as err:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert cursors.load("shared").get() == {f"acct.h{n}.inbox": CursorEntry(rounds, T1) for n in range(keys)}
    assert sorted(p.name for p in home.cursors_dir.iterdir()) == ["shared.json"]


def test_a_told_advance_is_on_disk_before_a_later_ask_is_answered(home: Home) -> None:
    cursors = CursorsActor.start(home_=home).proxy()

    cursors.actor_ref.tell(Advance(session="s", key="k", seq=7, created=T1))

    assert cursors.get("s", "k").get() == CursorEntry(7, T1)
    assert CursorStore(home).get("s", "k") == CursorEntry(7, T1)


def test_seed_only_stores_a_missing_entry(home: Home) -> None:
    cursors = CursorsActor.start(home_=home).proxy()

    assert cursors.seed("s", "k", 5, T1).get()
    assert not cursors.seed("s", "k", 9, T1).get()
    assert cursors.advance("s", "k", 6, T1).get()
    assert cursors.get("s", "k").get() == CursorEntry(6, T1)


def test_a_failed_told_write_leaves_the_actor_serving(home: Home) -> None:
    home.cursors_dir.parent.mkdir(parents=True, exist_ok=True)
    home.cursors_dir.write_text("not a directory")
    cursors = CursorsActor.start(home_=home).proxy()

    cursors.actor_ref.tell(Advance(session="s", key="k", seq=1, created=T1))

    assert cursors.load("s").get() == {}


# --- IdentityChanged: logout deletes cursors/ in this actor's mailbox (ipc.md §7.3; home.md §6) ----

CREDS = creds_of(ACCT_A)


def logged_in(tmp_path: Path) -> tuple[Home, Any, Any]:
    """A home logged in as CREDS with its StateActor and CursorsActor (proxies)."""
    home = Home.at(tmp_path / "home")
    home.ensure_dir()
    home_files.write_credentials(home.credentials, CREDS)
    state = StateActor.start(home_=home, loaded=home_files.load_state(home),
                             view_box=Published(StateView())).proxy()
    return home, state, CursorsActor.start(home_=home).proxy()


def test_the_logout_broadcast_deletes_the_cursor_files(home: Home) -> None:
    cursors = CursorsActor.start(home_=home).proxy()
    cursors.advance("s", "k", 3, T1).get()
    cursors.advance("other", "k", 4, T1).get()

    assert cursors.actor_ref.ask(LOGOUT) == []

    assert not home.cursors_dir.exists()
    assert cursors.load("s").get() == {}


def test_the_logout_broadcast_reports_what_it_could_not_remove(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursors = CursorsActor.start(home_=home).proxy()
    cursors.advance("s", "k", 3, T1).get()
    monkeypatch.setattr(os, "rmdir", Mock(side_effect=PermissionError(13, "Permission denied",
                                                                     str(home.cursors_dir))))

    assert cursors.actor_ref.ask(LOGOUT) == [f"logout: cannot remove {home.cursors_dir}: Permission denied"]


def test_a_late_advance_after_logout_does_not_bring_a_cursor_back(tmp_path: Path) -> None:
    """The known race: a follow's last flush (or a drain's advance) that reaches the cursor owner
    after the logout must not recreate a cursor file: after logging in again every retained
    message is unread (behaviour 21)."""
    home, state, cursors = logged_in(tmp_path)
    cursors.advance("s", "k", 3, T1).get()

    assert state.logout().get().wait() == []
    cursors.actor_ref.tell(Advance(session="s", key="k", seq=9, created=T1))
    assert not cursors.advance("s", "k", 10, T1).get()
    assert not cursors.seed("s", "k2", 10, T1).get()

    assert not home.cursors_dir.exists()
    # The next identity writes again.
    assert cursors.actor_ref.ask(login(CREDS)) == []
    assert cursors.advance("s", "k", 11, T1).get()
    assert cursors.get("s", "k").get() == CursorEntry(11, T1)


def test_advances_racing_a_logout_leave_no_cursor_and_no_removal_error(tmp_path: Path) -> None:
    home, state, cursors = logged_in(tmp_path)
    cursors.advance("s", "k0", 1, T1).get()
    stop = threading.Event()
    writing = threading.Event()

    def follow(n: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            # A told flush, then an ask (a drain's advance): at most two in the mailbox per thread.
            cursors.actor_ref.tell(Advance(session=f"s{n % 3}", key=f"k{n}", seq=seq, created=T1))
            cursors.advance(f"s{n % 3}", f"k{n}", seq, T1).get()
            writing.set()

    threads = [threading.Thread(target=follow, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        assert writing.wait(10)
        problems = state.logout().get().wait()
        cursors.load("s0").get()  # behind every Advance told so far
    finally:
        stop.set()
        for t in threads:
            t.join()
    cursors.load("s0").get()  # behind the last Advance told
    assert problems == []
    assert not home.cursors_dir.exists()


def test_credentials_gone_on_disk_keeps_the_cursor_files_but_writes_nothing(home: Home) -> None:
    cursors = CursorsActor.start(home_=home).proxy()
    cursors.advance("s", "k", 3, T1).get()

    assert cursors.actor_ref.ask(CREDS_GONE) == []
    cursors.actor_ref.tell(Advance(session="s", key="k", seq=9, created=T1))

    assert cursors.get("s", "k").get() == CursorEntry(3, T1)  # home.md §6 path 3: they apply again
    assert cursors.actor_ref.ask(creds_changed(CREDS)) == []
    assert cursors.advance("s", "k", 4, T1).get()


# --- coalesced told advances (issue 13 §2: 1 000 follows) ----------------------------------------


def test_told_advances_are_written_without_an_ask_once_per_file(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[Path] = []
    real_write = CursorStore._write

    def counting_write(self: CursorStore, path: Path, entries: Any) -> None:
        writes.append(path)
        real_write(self, path, entries)

    monkeypatch.setattr(CursorStore, "_write", counting_write)
    cursors = CursorsActor.start(home_=home, write_every=0.2)
    for seq in range(1, 21):
        cursors.tell(Advance(session="s", key="k", seq=seq, created=T1))
        cursors.tell(Advance(session="t", key=f"k{seq % 2}", seq=seq, created=T1))

    # No ask: the timer writes them, one rewrite per file however many advances it noted.
    wait_for(lambda: CursorStore(home).load("t") == {"k0": CursorEntry(20, T1), "k1": CursorEntry(19, T1)})
    assert CursorStore(home).get("s", "k") == CursorEntry(20, T1)
    assert sorted(p.name for p in writes) == ["s.json", "t.json"]
    cursors.stop()


def test_noted_advances_are_written_when_the_actor_stops(home: Home) -> None:
    cursors = CursorsActor.start(home_=home, write_every=60.0)
    cursors.tell(Advance(session="s", key="k", seq=4, created=T1))
    cursors.stop()

    assert CursorStore(home).get("s", "k") == CursorEntry(4, T1)


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)
