"""Sources, handles, namespaces, pipes and completion end to end (spec/ipc.md §7.4–7.9, §7.16–7.18,
§7.21; behaviours 5, 6, 13–16, 24, 61, 62).

A real daemon talks to a real ppz-server through :class:`RecordingProxy`, a small HTTP proxy that
records every request (method, path, query, headers, body) and can delay or drop them. That is
how these tests see what the daemon sends, count its server calls, and make the server fail.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from daemonfixture import DaemonHome, wait_for
from httpproxy import Recorded, RecordingProxy
from serverfixture import ServerProcess

from ppz import handlers
from ppz.errors import PpzError

SOURCES = "/api/v1/sources"
PIPES = "/api/v1/pipes"
PTY_PIPES = ["heartbeat", "inbox", "stdctrl", "stdin", "stdout", "system"]
BAD_HANDLE = "invalid handle '{}': must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)"
BAD_PIPE = "pipe name '{}' is invalid: must match [a-z0-9-] (max 32, no leading/trailing -)"
SESSION_VERBS = ["Create", "EnsurePTY", "Connect", "Switch", "Disconnect", "SetNamespace",
                 "UnsetNamespace", "PipeCreate", "PipeSet", "PipeDestroy", "SourceDestroy"]


# --- fixtures and helpers ---------------------------------------------------------------------------------


@dataclass
class Rig:
    home: DaemonHome
    server: ServerProcess
    proxy: RecordingProxy
    key: str
    account_id: str

    def call(self, method: str, session: str | None = "s1", **params: Any) -> dict[str, Any]:
        if session is not None:
            params["session"] = session
        return self.home.call(method, params)

    def error(self, method: str, session: str | None = "s1", **params: Any) -> tuple[str, str]:
        with pytest.raises(PpzError) as info:
            self.call(method, session, **params)
        return info.value.code, info.value.message

    def current_json(self) -> dict[str, str]:
        return read_json(self.home.root / "current.json")

    def namespace_json(self) -> dict[str, str]:
        return read_json(self.home.root / "namespace.json")

    def server_sources(self) -> dict[str, dict[str, Any]]:
        """What the server holds, asked directly (not through the proxy)."""
        reply = requests.get(self.server.url + SOURCES, headers={"Authorization": f"Bearer {self.key}"},
                             timeout=10)
        return {s["handle"]: s for s in reply.json()["sources"]}


def read_json(path: Any) -> Any:
    return json.loads(path.read_text())


@pytest.fixture
def proxy(ppz_server: ServerProcess) -> Iterator[RecordingProxy]:
    p = RecordingProxy(ppz_server.url).start()
    yield p
    p.stop()


@pytest.fixture
def rig(ppz_server: ServerProcess, ppz_home: DaemonHome, proxy: RecordingProxy) -> Rig:
    key = ppz_server.add_key("acme")
    ppz_home.login(proxy.url, key)
    account_id = ppz_home.status()["account_id"]
    proxy.take()
    return Rig(ppz_home, ppz_server, proxy, key, account_id)


def make_cold(rig: Rig) -> list[Recorded]:
    """Reset the daemon's caches with a SIGHUP reload, so the next Complete is cold (behaviour 10).

    The reload also resets the login check, so the next Status probes the server: with the proxy
    dropping, the probe fails, the caches stay cold and ``login_check`` disappears, which is how
    we know the reload happened. Returns the requests recorded before (the probes left out)."""
    before = rig.proxy.take()
    assert rig.call("Status")["login_check"] == "ok"
    rig.proxy.drop = True
    os.kill(rig.home.pid(), signal.SIGHUP)
    wait_for(lambda: "login_check" not in rig.call("Status"), timeout=5, what="reload")
    rig.proxy.drop = False
    rig.proxy.take()
    return before


# --- behaviour 5: the session check ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a/b", "x\0y", ".", ".."])
def test_invalid_session_is_refused_first_and_writes_nothing(rig: Rig, bad: str) -> None:
    params = {"handle": "alice", "name": "notes", "namespace": "team-a"}
    for verb in SESSION_VERBS:
        assert rig.error(verb, session=bad, **params) == ("E_PROTOCOL", f"invalid session '{bad}'")
    assert rig.proxy.take() == []
    assert not (rig.home.root / "current.json").exists()
    assert not (rig.home.root / "namespace.json").exists()
    # Before the login gate too.
    assert rig.home.ppz("logout").returncode == 0
    for verb in SESSION_VERBS:
        assert rig.error(verb, session=bad, **params)[0] == "E_PROTOCOL"
    # Complete has no session field: one sent anyway is ignored.
    assert rig.call("Complete", session=bad) == {"sources": [], "stale": True}


def test_empty_or_absent_session_is_default(rig: Rig) -> None:
    rig.call("SetNamespace", session="", namespace="team-a")
    assert rig.namespace_json() == {"default": "team-a"}
    reply = rig.call("Create", session=None, handle="alice")
    assert reply["manifold"] == "team-a"
    assert rig.current_json() == {"default": "alice"}
    status = rig.home.call("Status", {})
    assert (status["current"], status["current_namespace"]) == ("alice", "team-a")
    rig.call("Disconnect", session="")
    rig.call("UnsetNamespace", session=None)
    assert rig.current_json() == {} and rig.namespace_json() == {}


# --- behaviour 6: the login gate ----------------------------------------------------------------------------


def test_logged_out_every_verb_is_refused_before_any_server_work(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    assert rig.home.ppz("logout").returncode == 0
    rig.proxy.take()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Create", {"handle": "BAD!"}),  # invalid input: the gate still comes first
        ("Create", {"handle": "bob"}),
        ("EnsurePTY", {"handle": "BAD!"}),
        ("Connect", {"handle": "BAD!"}),
        ("Switch", {"handle": "alice"}),
        ("Disconnect", {}),
        ("SetNamespace", {"namespace": "team-a.inbox"}),
        ("UnsetNamespace", {}),
        ("PipeCreate", {"handle": "alice", "name": "inbox"}),
        ("PipeSet", {"name": "Bad"}),
        ("PipeDestroy", {"name": "Bad"}),
        ("SourceDestroy", {"handle": "alice"}),
    ]
    for verb, params in calls:
        with pytest.raises(PpzError) as info:
            rig.call(verb, **params)
        assert (info.value.code, info.value.message) == (
            "E_NOT_LOGGED_IN", "not logged in; run 'ppz login URL --apikey KEY'"), verb
    assert rig.call("Complete", session=None) == {"sources": [], "stale": True}
    assert rig.proxy.take() == []
    assert not (rig.home.root / "namespace.json").exists()


# --- Create (§7.4; behaviour 13) ---------------------------------------------------------------------------


def test_create_message_becomes_current_pty_does_not(rig: Rig) -> None:
    acct = rig.account_id
    reply = rig.call("Create", handle="alice")
    assert reply == {"handle": "alice", "subject": f"{acct}.alice.inbox", "pipes": ["inbox"]}
    assert rig.current_json() == {"s1": "alice"}
    assert oct((rig.home.root / "current.json").stat().st_mode & 0o777) == "0o600"

    reply = rig.call("Create", handle="tty", kind="pty")
    assert reply == {"handle": "tty", "subject": f"{acct}.tty.inbox", "pipes": PTY_PIPES}
    assert rig.current_json() == {"s1": "alice"}
    assert rig.call("Status")["current"] == "alice"

    reply = rig.call("Create", session="s2", handle="carol", manifold="team-a")
    assert reply == {"handle": "carol", "manifold": "team-a", "subject": f"{acct}.team-a.carol.inbox",
                     "pipes": ["inbox"]}
    assert rig.current_json() == {"s1": "alice", "s2": "carol"}
    assert [r.body for r in rig.proxy.take()] == [
        {"handle": "alice", "kind": "message", "manifold": ""},
        {"handle": "tty", "kind": "pty", "manifold": ""},
        {"handle": "carol", "kind": "message", "manifold": "team-a"},
    ]
    held = rig.server_sources()
    assert (held["tty"]["kind"], held["carol"]["manifold"]) == ("pty", "team-a")


def test_create_defaults_to_the_session_namespace(rig: Rig) -> None:
    rig.call("SetNamespace", namespace="team-b.sub")
    reply = rig.call("Create", handle="dave")
    assert reply["manifold"] == "team-b.sub"
    reply = rig.call("Create", handle="erin", manifold="elsewhere")  # the request wins
    assert reply["manifold"] == "elsewhere"
    assert rig.server_sources()["dave"]["manifold"] == "team-b.sub"
    # SourceDestroy answers with the manifold Create remembered.
    assert rig.call("SourceDestroy", handle="dave") == {"handle": "dave", "manifold": "team-b.sub"}


def test_create_errors(rig: Rig) -> None:
    for bad in ("Alice", "inbox", "-x", "a" * 33, ""):
        assert rig.error("Create", handle=bad) == ("E_INVALID_HANDLE", BAD_HANDLE.format(bad))
    assert rig.proxy.take() == []
    rig.call("Create", handle="alice")
    rig.call("PipeCreate", name="room")
    rig.proxy.take()
    assert rig.error("Create", session="s2", handle="alice", manifold="team-a") == (
        "E_SOURCE_TAKEN", "source 'alice' already exists in this account")
    assert rig.error("Create", session="s2", handle="room") == (
        "E_NAME_TAKEN", "name 'room' is already taken by uncollared pipe at root")
    assert rig.error("Create", session="s2", handle="bob", manifold="team-a.inbox") == (
        "E_INVALID_MANIFOLD", "manifold segment invalid: inbox")
    assert rig.error("Create", session="s2", handle="bob", kind="blob") == (
        "E_INVALID_KIND", "invalid kind 'blob': must be message or pty")
    assert len(rig.proxy.take()) == 4
    assert rig.current_json() == {"s1": "alice"}  # failures never touch the current handle


# --- EnsurePTY (§7.5) -----------------------------------------------------------------------------------------


def test_ensure_pty_promotes_without_touching_the_current_handle(rig: Rig) -> None:
    rig.call("Create", handle="alice", manifold="team-a")
    rig.call("Create", handle="bob")
    for _ in range(2):  # idempotent
        reply = rig.call("EnsurePTY", handle="alice")
        assert reply == {"handle": "alice", "manifold": "team-a",
                         "subject": f"{rig.account_id}.team-a.alice.inbox", "pipes": PTY_PIPES}
    assert rig.current_json() == {"s1": "bob"}
    requests_ = rig.proxy.take()[2:]
    assert [(r.route, r.body) for r in requests_] == [
        (("POST", f"{SOURCES}/alice/ensure-pty"), {})] * 2
    assert rig.server_sources()["alice"]["kind"] == "pty"
    assert rig.error("EnsurePTY", handle="ghost") == ("E_SOURCE_NOT_FOUND", "source 'ghost' not found")
    assert rig.error("EnsurePTY", handle="Ghost!") == ("E_INVALID_HANDLE", BAD_HANDLE.format("Ghost!"))
    assert len(rig.proxy.take()) == 1


# --- Connect (§7.6; behaviour 13) ---------------------------------------------------------------------------


def test_connect_creates_if_missing_and_uses_existing(rig: Rig) -> None:
    rig.call("SetNamespace", namespace="team-a")
    assert rig.call("Connect", handle="alice") == {"handle": "alice"}
    assert rig.server_sources()["alice"]["manifold"] == "team-a"
    assert rig.call("Connect", session="s2", handle="alice") == {"handle": "alice"}  # taken = success
    assert rig.current_json() == {"s1": "alice", "s2": "alice"}
    assert [(r.route, r.body) for r in rig.proxy.take()] == [
        (("POST", SOURCES), {"handle": "alice", "kind": "message", "manifold": "team-a"}),
        (("POST", SOURCES), {"handle": "alice", "kind": "message", "manifold": ""}),
    ]
    # Connect remembered the handle and its manifold: SourceDestroy answers with it.
    assert rig.call("SourceDestroy", handle="alice") == {"handle": "alice", "manifold": "team-a"}


def test_connect_errors(rig: Rig) -> None:
    assert rig.error("Connect", handle="Not Valid") == (
        "E_INVALID_HANDLE",
        "invalid handle: must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)")
    assert rig.proxy.take() == []
    rig.call("PipeCreate", name="room")
    assert rig.error("Connect", handle="room") == (
        "E_NAME_TAKEN", "name 'room' is already taken by uncollared pipe at root")
    assert not (rig.home.root / "current.json").exists()


# --- Switch (§7.7; behaviour 14) ------------------------------------------------------------------------------


def test_switch_lists_every_time_and_refuses_unlisted_handles(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    rig.call("Create", session="s2", handle="bob")
    rig.proxy.take()
    assert rig.call("Switch", handle="bob") == {"handle": "bob"}
    assert rig.current_json() == {"s1": "bob", "s2": "bob"}
    for unlisted in ("ghost", "INVALID HANDLE!"):
        assert rig.error("Switch", handle=unlisted) == ("E_SOURCE_NOT_FOUND", f"source '{unlisted}' not found")
    assert rig.proxy.routes() == [("GET", SOURCES)] * 3
    assert rig.current_json() == {"s1": "bob", "s2": "bob"}
    # A handle deleted behind the daemon's back is not found, even though it was cached.
    requests.delete(f"{rig.server.url}{SOURCES}/alice", headers={"Authorization": f"Bearer {rig.key}"},
                    timeout=10)
    assert rig.error("Switch", handle="alice") == ("E_SOURCE_NOT_FOUND", "source 'alice' not found")
    rig.proxy.drop = True
    assert rig.error("Switch", handle="bob") == ("E_SERVER_UNREACHABLE", "server unreachable")


# --- Disconnect (§7.8) and the legacy ``current`` file -----------------------------------------------------


def test_disconnect_clears_only_this_session(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    rig.call("Connect", session="s2", handle="alice")
    for _ in range(2):  # idempotent
        assert rig.call("Disconnect") == {}
        assert rig.current_json() == {"s2": "alice"}
    assert "current" not in rig.call("Status")
    assert rig.call("Status", session="s2")["current"] == "alice"
    rig.proxy.take()
    rig.call("Disconnect", session="s2")
    assert rig.current_json() == {}
    assert rig.proxy.take() == []


@pytest.fixture
def legacy_rig(ppz_server: ServerProcess, ppz_home: DaemonHome, proxy: RecordingProxy) -> Rig:
    """A home whose legacy ``current`` names ``bob`` (and no ``current.json``) at daemon start."""
    ppz_home.root.mkdir(mode=0o700, parents=True)
    (ppz_home.root / "current").write_text("  bob \n")
    key = ppz_server.add_key("acme")
    ppz_home.login(proxy.url, key)
    return Rig(ppz_home, ppz_server, proxy, key, ppz_home.status()["account_id"])


def test_disconnect_deletes_the_legacy_current_for_good(legacy_rig: Rig) -> None:
    rig = legacy_rig
    assert rig.call("Status", session="")["current"] == "bob"
    assert rig.call("Disconnect", session="") == {}
    assert rig.current_json() == {}
    assert not (rig.home.root / "current").exists()
    assert rig.home.ppz("daemon", "restart").returncode == 0
    assert "current" not in rig.call("Status", session="")


def test_any_current_write_keeps_the_legacy_handle_and_drops_the_file(legacy_rig: Rig) -> None:
    rig = legacy_rig
    rig.call("Create", handle="alice")
    assert rig.current_json() == {"default": "bob", "s1": "alice"}
    assert not (rig.home.root / "current").exists()


# --- SetNamespace / UnsetNamespace (§7.9; behaviour 14) -------------------------------------------------------


def test_set_namespace_validates_segments_and_persists(rig: Rig) -> None:
    for bad, segment in (("team-a.inbox", "inbox"), ("Team", "Team"), ("a..b", ""), ("team-a.", ""),
                         ("ok.-x.y", "-x"), ("stdout", "stdout")):
        assert rig.error("SetNamespace", namespace=bad) == (
            "E_INVALID_MANIFOLD", f"namespace segment invalid: {segment}")
    assert not (rig.home.root / "namespace.json").exists()
    # Nothing has to exist there.
    assert rig.call("SetNamespace", namespace="team-a.sub") == {"namespace": "team-a.sub"}
    rig.call("SetNamespace", session="s2", namespace="ops")
    assert rig.namespace_json() == {"s1": "team-a.sub", "s2": "ops"}
    assert rig.call("Status")["current_namespace"] == "team-a.sub"
    assert rig.call("SetNamespace", namespace="") == {"namespace": ""}  # empty clears
    assert rig.namespace_json() == {"s2": "ops"}
    for _ in range(2):  # idempotent
        assert rig.call("UnsetNamespace", session="s2") == {}
        assert rig.namespace_json() == {}
    assert "current_namespace" not in rig.call("Status", session="s2")
    assert rig.proxy.take() == []


# --- PipeCreate / PipeSet (§7.16; behaviour 61) -----------------------------------------------------------------


def test_pipe_create_collared_and_uncollared(rig: Rig) -> None:
    rig.call("Create", handle="chat", manifold="team-a")
    rig.call("SetNamespace", namespace="ns")
    rig.proxy.take()
    reply = rig.call("PipeCreate", handle="chat", name="archive", ttl_seconds=3600, max_msgs=100)
    assert reply["handle"] == "chat" and reply["manifold"] == "team-a" and reply["name"] == "archive"
    assert (reply["ttl_seconds"], reply["max_msgs"]) == (3600, 100)
    assert set(reply) == {"handle", "manifold", "name", "stream_name", "ttl_seconds", "max_msgs", "max_bytes"}
    # source_handle wins over handle
    rig.call("PipeCreate", handle="nobody", source_handle="chat", name="notes", max_bytes=None)
    reply = rig.call("PipeCreate", name="room", ttl_seconds=0)
    assert reply["handle"] == "" and reply["manifold"] == "ns" and reply["ttl_seconds"] == 0
    reply = rig.call("PipeCreate", name="lobby", manifold="")
    assert reply["handle"] == "" and reply["manifold"] == "ns"  # empty = the session's namespace
    reply = rig.call("PipeCreate", session="s2", name="hall")
    assert reply["handle"] == "" and "manifold" not in reply
    assert [(r.route, r.body) for r in rig.proxy.take()] == [
        (("POST", f"{SOURCES}/chat/pipes"),
         {"handle": "chat", "manifold": "ns", "name": "archive", "ttl_seconds": 3600, "max_msgs": 100}),
        (("POST", f"{SOURCES}/chat/pipes"), {"handle": "chat", "manifold": "ns", "name": "notes"}),
        (("POST", PIPES), {"handle": "", "manifold": "ns", "name": "room", "ttl_seconds": 0}),
        (("POST", PIPES), {"handle": "", "manifold": "ns", "name": "lobby"}),
        (("POST", PIPES), {"handle": "", "manifold": "", "name": "hall"}),
    ]
    assert rig.server_sources()["chat"]["pipes"] == ["archive", "notes"]


def test_pipe_create_errors(rig: Rig) -> None:
    rig.call("Create", handle="chat")
    rig.call("Create", handle="tty", kind="pty")
    rig.proxy.take()
    for bad in ("Bad", "a.b", "", "x" * 33):
        assert rig.error("PipeCreate", handle="chat", name=bad) == ("E_INVALID_PIPE", BAD_PIPE.format(bad))
    for reserved in ("system", "db", "inbox", "heartbeat"):
        assert rig.error("PipeCreate", handle="chat", name=reserved) == (
            "E_INVALID_PIPE", f"pipe name '{reserved}' is reserved")
        assert rig.error("PipeCreate", name=reserved)[1] == f"pipe name '{reserved}' is reserved"
    assert rig.error("PipeCreate", handle="Chat!", name="notes") == (
        "E_INVALID_HANDLE", BAD_HANDLE.format("Chat!"))
    assert rig.error("PipeCreate", source_handle="stdin", name="notes") == (
        "E_INVALID_HANDLE", BAD_HANDLE.format("stdin"))
    assert rig.proxy.take() == []  # every check above is the daemon's own

    assert rig.error("PipeCreate", handle="ghost", name="notes") == (
        "E_SOURCE_NOT_FOUND", "source 'ghost' not found")
    rig.call("PipeCreate", handle="chat", name="notes")
    assert rig.error("PipeCreate", handle="chat", name="notes") == (
        "E_PIPE_TAKEN", "pipe 'notes' already exists on source 'chat'")
    assert rig.error("PipeCreate", handle="tty", name="stdout") == (
        "E_PIPE_TAKEN", "pipe 'stdout' already exists on source 'tty'")
    assert rig.error("PipeCreate", handle="chat", name="other", max_msgs=0) == (
        "E_INVALID_PIPE", "invalid retention: max_msgs")
    rig.call("PipeCreate", name="room", manifold="team-a")
    assert rig.error("PipeCreate", name="room", manifold="team-a") == (
        "E_PIPE_TAKEN", "uncollared pipe 'room' already exists at manifold 'team-a'")
    assert rig.error("PipeCreate", name="chat") == (
        "E_NAME_TAKEN", "name 'chat' is already taken by source at root")
    assert rig.error("PipeCreate", name="room", manifold="team-a.db") == (
        "E_INVALID_MANIFOLD", "manifold segment invalid: db")


def test_pipe_set_routes_and_forwarding(rig: Rig) -> None:
    rig.call("Create", handle="chat")
    rig.call("PipeCreate", handle="chat", name="archive")
    rig.call("SetNamespace", namespace="team-a")
    rig.call("PipeCreate", name="room")
    rig.proxy.take()
    reply = rig.call("PipeSet", handle="chat", name="archive", max_msgs=5)
    assert (reply["handle"], reply["name"], reply["max_msgs"]) == ("chat", "archive", 5)
    reply = rig.call("PipeSet", handle="chat", name="inbox", ttl_seconds=0)  # auto-pipes may be tuned
    assert (reply["name"], reply["ttl_seconds"]) == ("inbox", 0)
    reply = rig.call("PipeSet", name="room", max_bytes=-1)
    assert (reply["handle"], reply["manifold"], reply["max_bytes"]) == ("", "team-a", -1)
    assert [(r.route, r.body) for r in rig.proxy.take()] == [
        (("PATCH", f"{SOURCES}/chat/pipes/archive"),
         {"handle": "chat", "manifold": "team-a", "name": "archive", "max_msgs": 5}),
        (("PATCH", f"{SOURCES}/chat/pipes/inbox"),
         {"handle": "chat", "manifold": "team-a", "name": "inbox", "ttl_seconds": 0}),
        (("PATCH", PIPES), {"handle": "", "manifold": "team-a", "name": "room", "max_bytes": -1}),
    ]
    assert rig.error("PipeCreate", handle="chat", name="inbox") == (
        "E_INVALID_PIPE", "pipe name 'inbox' is reserved")
    assert rig.error("PipeSet", handle="chat", name="Bad") == ("E_INVALID_PIPE", BAD_PIPE.format("Bad"))
    assert rig.error("PipeSet", handle="BAD", name="inbox") == ("E_INVALID_HANDLE", BAD_HANDLE.format("BAD"))
    assert rig.proxy.take() == []
    # Forwarded as is; the server decides.
    assert rig.error("PipeSet", handle="chat", name="archive") == (
        "E_INVALID_PIPE", "pipe set: name at least one of --ttl, --max-msgs, --max-bytes")
    assert rig.error("PipeSet", handle="chat", name="archive", max_msgs=0) == (
        "E_INVALID_PIPE", "invalid retention: max_msgs")
    assert rig.error("PipeSet", handle="chat", name="nope", max_msgs=3) == (
        "E_PIPE_NOT_FOUND", "pipe 'nope' not found on source 'chat'")
    assert rig.error("PipeSet", name="nope", max_msgs=3) == (
        "E_PIPE_NOT_FOUND", "uncollared pipe 'nope' not found at manifold 'team-a'")
    assert rig.error("PipeSet", handle="ghost", name="inbox", max_msgs=3)[0] == "E_SOURCE_NOT_FOUND"
    assert [r.body for r in rig.proxy.take()][:2] == [
        {"handle": "chat", "manifold": "team-a", "name": "archive"},
        {"handle": "chat", "manifold": "team-a", "name": "archive", "max_msgs": 0},
    ]


# --- PipeDestroy (§7.17) --------------------------------------------------------------------------------------------


def test_pipe_destroy_collared_and_uncollared(rig: Rig) -> None:
    rig.call("Create", handle="chat", manifold="team-a")
    rig.call("PipeCreate", handle="chat", name="archive")
    rig.call("SetNamespace", namespace="ns")
    rig.call("PipeCreate", name="room")
    rig.call("PipeCreate", session="s2", name="hall")
    rig.proxy.take()
    assert rig.call("PipeDestroy", handle="chat", name="archive") == {
        "handle": "chat", "manifold": "team-a", "name": "archive"}
    assert rig.call("PipeDestroy", name="room") == {"handle": "", "manifold": "ns", "name": "room"}
    assert rig.call("PipeDestroy", session="s2", bare_target="hall") == {"handle": "", "name": "hall"}
    assert rig.call("PipeDestroy", handle="chat", name="inbox") == {  # auto-pipe without a row
        "handle": "chat", "manifold": "team-a", "name": "inbox"}
    recorded = rig.proxy.take()
    assert [r.route for r in recorded] == [
        ("DELETE", f"{SOURCES}/chat/pipes/archive"), ("DELETE", PIPES), ("DELETE", PIPES),
        ("DELETE", f"{SOURCES}/chat/pipes/inbox")]
    assert recorded[1].query == [("name", "room"), ("manifold", "ns"), ("org", rig.account_id)]
    assert recorded[2].query == [("name", "hall"), ("org", rig.account_id)]
    assert all(r.body is None for r in recorded)
    assert "archive" not in rig.server_sources()["chat"].get("pipes", [])


def test_pipe_destroy_errors(rig: Rig) -> None:
    rig.call("Create", handle="chat")
    rig.proxy.take()
    assert rig.error("PipeDestroy", handle="chat", name="Bad") == ("E_INVALID_PIPE", BAD_PIPE.format("Bad"))
    assert rig.error("PipeDestroy", handle="chat") == ("E_INVALID_PIPE", BAD_PIPE.format(""))
    assert rig.error("PipeDestroy", handle="Chat", name="notes") == (
        "E_INVALID_HANDLE", BAD_HANDLE.format("Chat"))
    assert rig.proxy.take() == []
    assert rig.error("PipeDestroy", handle="chat", name="notes") == (
        "E_PIPE_NOT_FOUND", "pipe 'notes' not found on source 'chat'")
    assert rig.error("PipeDestroy", handle="ghost", name="notes")[0] == "E_SOURCE_NOT_FOUND"
    assert rig.error("PipeDestroy", name="zzz") == ("E_PIPE_NOT_FOUND", "uncollared pipe 'zzz' not found at root")
    assert rig.error("PipeDestroy", name="zzz", manifold="a.inbox") == (
        "E_INVALID_MANIFOLD", "manifold segment invalid: inbox")


# --- SourceDestroy (§7.18; behaviour 16) -------------------------------------------------------------------------


def test_source_destroy_clears_every_session_and_completion(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    rig.call("Connect", session="s2", handle="alice")
    rig.call("Switch", session="s3", handle="alice")
    rig.call("Create", session="s4", handle="bob")
    names = [s["handle"] for s in rig.call("Complete", session=None)["sources"]]
    assert names == ["alice", "bob"]
    rig.proxy.take()
    assert rig.call("SourceDestroy", handle="alice") == {"handle": "alice"}
    assert rig.current_json() == {"s4": "bob"}
    for session in ("s1", "s2", "s3"):
        assert "current" not in rig.call("Status", session=session)
    assert rig.call("Complete", session=None) == {"sources": [{"handle": "bob", "pipes": ["inbox"]}],
                                                   "stale": False}
    assert rig.proxy.routes() == [("DELETE", f"{SOURCES}/alice")]  # Complete stayed warm
    assert "alice" not in rig.server_sources()


def test_source_destroy_errors(rig: Rig) -> None:
    assert rig.error("SourceDestroy", handle="INVALID HANDLE!") == (
        "E_INVALID_HANDLE", BAD_HANDLE.format("INVALID HANDLE!"))
    assert rig.error("SourceDestroy", handle="inbox") == ("E_INVALID_HANDLE", BAD_HANDLE.format("inbox"))
    assert rig.proxy.take() == []
    assert rig.error("SourceDestroy", handle="ghost") == ("E_SOURCE_NOT_FOUND", "source 'ghost' not found")
    assert rig.proxy.routes() == [("DELETE", f"{SOURCES}/ghost")]


# --- Complete (§7.21; behaviour 62) ---------------------------------------------------------------------------------


def test_complete_cold_then_warm(rig: Rig) -> None:
    rig.call("Create", handle="zed", kind="pty")
    rig.call("Create", handle="alice", manifold="team-a")
    rig.call("PipeSet", handle="alice", name="inbox", max_msgs=10)  # a stored row for an auto-pipe
    rig.call("PipeCreate", handle="alice", name="notes")
    rig.call("PipeCreate", name="room")
    make_cold(rig)
    rig.proxy.take()
    expected = {"sources": [{"handle": "alice", "pipes": ["inbox", "notes"]},
                            {"handle": "zed", "pipes": PTY_PIPES}], "stale": False}
    assert rig.call("Complete", session=None) == expected
    assert rig.proxy.routes() == [("GET", SOURCES)]
    rig.proxy.drop = True  # warm: answered from memory, the server is not asked
    assert rig.call("Complete", session=None) == expected
    assert rig.proxy.take() == []
    rig.proxy.drop = False
    rig.call("Create", handle="bob")  # Create adds to a warm snapshot
    assert rig.call("Complete", session=None)["sources"][1] == {"handle": "bob", "pipes": ["inbox"]}
    assert rig.proxy.routes() == [("POST", SOURCES)]


def test_complete_failure_is_stale_and_stays_cold(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    make_cold(rig)
    rig.proxy.take()
    rig.proxy.drop = True
    assert rig.call("Complete", session=None) == {"sources": [], "stale": True}
    assert rig.proxy.routes() == [("GET", SOURCES)]
    rig.proxy.drop = False
    assert rig.call("Complete", session=None) == {"sources": [{"handle": "alice", "pipes": ["inbox"]}],
                                                   "stale": False}
    assert rig.proxy.routes() == [("GET", SOURCES)]


def test_complete_concurrent_cold_callers_share_one_request(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    for drop in (False, True):
        make_cold(rig)
        rig.proxy.take()
        rig.proxy.drop = drop
        rig.proxy.delay[("GET", SOURCES)] = 0.5
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: rig.call("Complete", session=None), range(8)))
        expected = ({"sources": [], "stale": True} if drop else
                    {"sources": [{"handle": "alice", "pipes": ["inbox"]}], "stale": False})
        assert replies == [expected] * 8
        assert rig.proxy.routes() == [("GET", SOURCES)]


def test_complete_with_a_rejected_key_is_stale(rig: Rig) -> None:
    """Behaviour 24: the daemon authenticates with the bearer; the server's verdict shows through."""
    path = rig.home.root / "credentials"
    creds = read_json(path)
    creds["api_key"] = "ppz_" + "0" * 26
    tmp = rig.home.root / "credentials.edit"
    tmp.write_text(json.dumps(creds))
    tmp.replace(path)
    wait_for(lambda: rig.call("Status")["key_prefix"] == "0" * 8, timeout=3, what="reload")
    assert rig.call("Complete", session=None) == {"sources": [], "stale": True}
    assert rig.error("Create", handle="alice") == ("E_INVALID_API_KEY", "invalid api key")
    assert rig.error("Switch", handle="alice") == ("E_INVALID_API_KEY", "invalid api key")
    assert rig.call("Status")["login_check"] == "invalid"
    assert {r.headers["Authorization"] for r in rig.proxy.take()} == {f"Bearer ppz_{'0' * 26}"}


# --- behaviour 24: bearer, ?org= and documented bodies on every call ---------------------------------------------


def test_every_server_call_carries_the_bearer_and_org(rig: Rig) -> None:
    rig.call("SetNamespace", namespace="team-a")
    rig.call("Create", handle="alice")
    rig.call("EnsurePTY", handle="alice")
    rig.call("Connect", handle="bob")
    rig.call("Switch", handle="alice")
    rig.call("PipeCreate", handle="alice", name="notes", ttl_seconds=60)
    rig.call("PipeSet", handle="alice", name="notes", max_msgs=7)
    rig.call("PipeCreate", name="room")
    rig.call("PipeSet", name="room", ttl_seconds=5)
    rig.call("PipeDestroy", name="room")
    rig.call("PipeDestroy", handle="alice", name="notes")
    rig.call("SourceDestroy", handle="bob")
    recorded = make_cold(rig)
    rig.call("Complete", session=None)
    recorded += rig.proxy.take()
    assert len(recorded) == 12
    for r in recorded:
        assert r.headers["Authorization"] == f"Bearer {rig.key}", r
        assert r.query[-1] == ("org", rig.account_id), r
        assert [k for k, _ in r.query].count("org") == 1, r
        if r.body is None:
            assert "Content-Type" not in r.headers, r
        else:
            assert r.headers["Content-Type"] == "application/json", r
    bodies = [(r.method, r.path, r.body) for r in recorded if r.body is not None]
    assert bodies == [
        ("POST", SOURCES, {"handle": "alice", "kind": "message", "manifold": "team-a"}),
        ("POST", f"{SOURCES}/alice/ensure-pty", {}),
        ("POST", SOURCES, {"handle": "bob", "kind": "message", "manifold": "team-a"}),
        ("POST", f"{SOURCES}/alice/pipes", {"handle": "alice", "manifold": "team-a", "name": "notes",
                                            "ttl_seconds": 60}),
        ("PATCH", f"{SOURCES}/alice/pipes/notes", {"handle": "alice", "manifold": "team-a", "name": "notes",
                                                   "max_msgs": 7}),
        ("POST", PIPES, {"handle": "", "manifold": "team-a", "name": "room"}),
        ("PATCH", PIPES, {"handle": "", "manifold": "team-a", "name": "room", "ttl_seconds": 5}),
    ]


# --- behaviour 15: a vanished current handle (needs Send, from handlers_messaging) -----------------------------------


@pytest.mark.skipif("Send" not in handlers.HANDLERS, reason="Send is not in the dispatch table yet")
def test_send_to_a_vanished_current_handle_clears_it(rig: Rig) -> None:
    rig.call("Create", handle="alice")
    rig.call("Connect", session="s2", handle="alice")
    requests.delete(f"{rig.server.url}{SOURCES}/alice", headers={"Authorization": f"Bearer {rig.key}"},
                    timeout=10)
    code, _ = rig.error("Send", payload="hi")
    assert code == "E_NO_CURRENT_SOURCE"
    assert rig.current_json() == {"s2": "alice"}
