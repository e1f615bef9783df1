"""CursorsActor: the one owner of the cursor files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ppz.actors.cursors import CursorsActor
from ppz.cursors import CursorEntry
from ppz.home import CursorStore, Home
from ppz.messages import Advance

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
        except BaseException as err:  # pragma: no cover - reported below
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
