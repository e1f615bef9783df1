"""``ppz read --wait`` and the read filters end to end: the real CLI, real daemons, a real
ppz-server and NATS (spec/agents.md §1–2, ipc.md §7.13).

One ppz-server serves the module; the reading daemon and a second daemon that sends share an
account of their own. The restart test has a daemon (and account) of its own.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemonfixture import DaemonHome, background, wait_for
from serverfixture import ServerProcess, nats_request
from sharedserver import fresh_world, module_server  # noqa: F401 - module_server is a fixture

from ppz import errors, ipc, names

pytestmark = pytest.mark.timeout(120)

_tests = itertools.count(1)


@pytest.fixture(scope="module")
def shared(module_server: ServerProcess,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("wait")
    reader, sender = DaemonHome(root / "reader"), DaemonHome(root / "sender")
    try:
        world = fresh_world(module_server, reader, ())
        sender.login(module_server.url, world["key"])
        sender.wait_connected()
        yield {**world, "sender": sender}
    finally:
        reader.kill()
        sender.kill()


@pytest.fixture
def world(shared: dict[str, Any]) -> dict[str, Any]:
    """The shared world with message sources ``alice`` and ``bob`` of this test's own."""
    n = next(_tests)
    handles = {name: f"{name}-{n}" for name in ("alice", "bob")}
    for handle in handles.values():
        shared["client"].create_source(shared["creds"], handle, "message", "")
    return {**shared, **handles}


def ok(h: DaemonHome, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = h.ppz(*args, **kw)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def as_handle(handle: str) -> dict[str, dict[str, str]]:
    return {"env": {"PPZ_CURRENT_HANDLE": handle}}


def payloads(stdout: str) -> list[str]:
    return [json.loads(line)["payload"] for line in stdout.splitlines()]


def consumers(world: dict[str, Any], handle: str) -> int:
    """The consumers of ``handle``'s inbox stream now (a waiting read has one)."""
    reply = world["client"].exchange(world["server"].url, world["key"])
    stream = names.stream_name(world["acct"], "", handle, "inbox")
    info = nats_request([world["server"].nats_url], reply.nats_user_jwt, reply.nats_user_seed,
                        f"$JS.API.STREAM.INFO.{stream}", {})
    return int(info["state"].get("consumer_count", 0))


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


# --- waiting ----------------------------------------------------------------------------------


def test_a_wait_is_woken_by_a_send_from_another_daemon(world: dict[str, Any]) -> None:
    h, other, alice, bob = world["home"], world["sender"], world["alice"], world["bob"]
    ok(other, "send", alice, "early", **as_handle(bob))
    assert payloads(ok(h, "read", f"{alice}.inbox", "--json").stdout) == ["early"]
    with background(h, "read", f"{alice}.inbox", "--wait=60s", "--json") as proc:
        wait_for(lambda: consumers(world, alice) > 0, timeout=30, what="the wait's consumer")
        assert proc.poll() is None  # waiting
        ok(other, "send", alice, "wake up", **as_handle(bob))
        code, out, err = finish(proc)
    assert (code, payloads(out), err) == (0, ["wake up"], "")
    assert ok(h, "read", f"{alice}.inbox").stdout == ""  # delivered once, the cursor past it


def test_a_wait_that_expires_prints_nothing_and_exits_124(world: dict[str, Any]) -> None:
    h, alice = world["home"], world["alice"]
    out = h.ppz("read", f"{alice}.inbox", "--wait=1s")
    assert (out.returncode, out.stdout, out.stderr) == (124, "", "")
    wait_for(lambda: consumers(world, alice) == 0, timeout=30, what="the expired wait's consumer to go")


def test_a_wait_with_unread_mail_returns_it_at_once(world: dict[str, Any]) -> None:
    h, alice = world["home"], world["alice"]
    ok(h, "send", alice, "already here")
    assert payloads(ok(h, "read", f"{alice}.inbox", "--wait", "--json").stdout) == ["already here"]


def test_wait_ms_below_minus_one_is_a_protocol_error(world: dict[str, Any]) -> None:
    h, alice = world["home"], world["alice"]
    params = {"handle": alice, "channel": "inbox", "wait_ms": -2, "session": "test-session"}
    with pytest.raises(errors.PpzError) as err:
        list(ipc.stream("Read", params, path=str(h.home.socket)))
    assert (err.value.code, err.value.message) == (errors.E_PROTOCOL, "invalid wait_ms")


def test_a_wait_across_a_daemon_restart_delivers_what_was_sent_after_it_once(
        module_server: ServerProcess, home_factory: Callable[..., DaemonHome]) -> None:  # noqa: F811
    h = home_factory("restarting")
    world = fresh_world(module_server, h, ("alice",))
    ok(h, "send", "alice", "before")
    assert payloads(ok(h, "read", "alice.inbox", "--json").stdout) == ["before"]
    with background(h, "read", "alice.inbox", "--wait=90s", "--json") as proc:
        wait_for(lambda: consumers(world, "alice") > 0, timeout=30, what="the wait's consumer")
        ok(h, "daemon", "restart")
        h.wait_connected()
        assert proc.poll() is None  # still waiting: redialled, or about to
        ok(h, "send", "alice", "after restart")
        code, out, err = finish(proc)
    assert (code, payloads(out), err) == (0, ["after restart"], "")
    assert ok(h, "read", "alice.inbox").stdout == ""


# --- filters ----------------------------------------------------------------------------------


def test_from_and_subject_are_views_that_leave_the_rest_unread(world: dict[str, Any]) -> None:
    h, other, alice, bob = world["home"], world["sender"], world["alice"], world["bob"]
    ok(other, "send", alice, "b1", "--subject", "deploy:prod", **as_handle(bob))
    ok(other, "send", alice, "a1", **as_handle(alice))
    ok(other, "send", alice, "b2", **as_handle(bob))
    target = f"{alice}.inbox"
    assert payloads(ok(h, "read", target, "--from", bob, "--json").stdout) == ["b1", "b2"]
    assert payloads(ok(h, "read", target, "--subject=deploy*", "--json").stdout) == ["b1"]
    assert payloads(ok(h, "read", target, f"--from={alice},nobody", "--json").stdout) == ["a1"]
    assert payloads(ok(h, "read", target, "--from=nobody", "--json").stdout) == []
    assert payloads(ok(h, "reread", target, "--from", bob, "--subject", "deploy:*", "--json").stdout) == ["b1"]
    # Nothing moved: every message is still unread.
    assert payloads(ok(h, "read", target, "--json").stdout) == ["b1", "a1", "b2"]


def test_a_filtered_wait_wakes_only_for_what_it_keeps(world: dict[str, Any]) -> None:
    h, other, alice, bob = world["home"], world["sender"], world["alice"], world["bob"]
    with background(h, "read", f"{alice}.inbox", "--wait=60s", f"--from={bob}", "--json") as proc:
        wait_for(lambda: consumers(world, alice) > 0, timeout=30, what="the wait's consumer")
        ok(other, "send", alice, "not for the wait", **as_handle(alice))
        ok(other, "send", alice, "from bob", **as_handle(bob))
        code, out, err = finish(proc)
    assert (code, payloads(out), err) == (0, ["from bob"], "")
    assert payloads(ok(h, "read", f"{alice}.inbox", "--json").stdout) == ["not for the wait", "from bob"]


def test_no_acks_drops_receipts_and_keeps_the_cursor_rules(world: dict[str, Any]) -> None:
    h, other, alice, bob = world["home"], world["sender"], world["alice"], world["bob"]
    ok(h, "send", f"{bob}.inbox", "please ack", "--request-ack", **as_handle(alice))
    ok(h, "read", f"{bob}.inbox", **as_handle(bob))  # sends alice an ack:read receipt
    wait_for(lambda: ok(h, "reread", f"{alice}.inbox", "--json").stdout, timeout=30, what="the receipt")
    ok(other, "send", alice, "hello", **as_handle(bob))
    assert payloads(ok(h, "read", f"{alice}.inbox", "--no-acks", "--json").stdout) == ["hello"]
    # The receipt left out counts as delivered: nothing stays unread.
    assert ok(h, "read", f"{alice}.inbox").stdout == ""
    subjects = [json.loads(line)["subject"] for line in ok(h, "reread", f"{alice}.inbox", "--json").stdout.splitlines()]
    assert subjects == ["ack:read", ""]
    assert payloads(ok(h, "reread", f"{alice}.inbox", "--no-acks", "--json").stdout) == ["hello"]
