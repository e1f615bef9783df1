"""The thin CLI (spec/cli.md §1–2): imports, URL normalisation, session ids, usage errors, and
every messaging command run in this process against a fake daemon (a Unix-socket server that
records the exact requests and answers scripted replies and Read events)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from test_ipc import UnixServer

from ppz import __version__, cli, errors, ipc

HEAVY = ("pykka", "nats", "requests", "orjson", "ppz.bootstrap", "ppz.server")


MESSAGING = [["send", "bob", "hi"], ["read", "bob.inbox"], ["reread", "inbox"], ["ls", "--json"], ["who"],
             ["diagnostics"], ["source", "create", "x"], ["source", "destroy", "x*"], ["set", "handle", "x"],
             ["get", "handle"], ["unset", "namespace"], ["pipe", "create", "x.y", "--ttl=1h"],
             ["heartbeat", "x", "--once"], ["completion", "bash"], ["__complete", "x"], ["send", "--help"]]


def modules_after(commands: list[list[str]], tmp_path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Run the commands in one fresh interpreter (no daemon); which modules did they import?"""
    code = (
        "import sys\n"
        "from ppz import cli\n"
        f"for argv in {commands!r}:\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import json\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r})\n"
        "print(json.dumps({'heavy': heavy, 'asyncio': 'asyncio' in sys.modules, 'home': 'ppz.home' in sys.modules,\n"
        "                  'fire': 'fire' in sys.modules, 'inspect': 'inspect' in sys.modules}))\n"
    )
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home"), "PPZ_SESSION": "s"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# Complete commands run without Fire; help (and usage errors) are Fire's.
DIRECT = [argv for argv in MESSAGING if "--help" not in argv]


def test_normal_commands_import_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Nor Fire: its import and parser cost ~25 ms per run, and a complete command runs without it.
    got = modules_after([["status"], ["logout"], ["daemon", "stop"], *DIRECT], tmp_path)
    assert (got["heavy"], got["fire"]) == ([], False)


def test_help_uses_fire_and_imports_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    got = modules_after([["send", "--help"], ["send", "bob"], ["pipe", "--help"]], tmp_path)
    assert (got["heavy"], got["fire"]) == ([], True)


def test_messaging_commands_skip_asyncio_and_the_home_module(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Fire imports asyncio (~50 ms with ssl) for coroutine commands the CLI does not have; ppz.home
    # (~20 ms) is only needed by the commands that manage the daemon.
    got = modules_after(MESSAGING, tmp_path)
    assert {k: got[k] for k in ("heavy", "asyncio", "home")} == {"heavy": [], "asyncio": False, "home": False}
    # Without help, not even Fire or inspect (~4 ms with ast and dis).
    assert modules_after(DIRECT, tmp_path) == {"heavy": [], "asyncio": False, "home": False, "fire": False,
                                               "inspect": False}


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("localhost:8080/", "http://localhost:8080"),
        ("myhost:8080", "http://myhost:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("0.0.0.0", "http://0.0.0.0"),
        ("ppz.example.com", "https://ppz.example.com"),
        ("http://ppz.example.com/", "http://ppz.example.com"),
        ("https://127.0.0.1:8080", "https://127.0.0.1:8080"),
    ],
)
def test_normalise_url(given: str, want: str) -> None:
    assert cli.normalise_url(given) == want


def test_session_id_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_SESSION", "agent-7")
    assert cli.session_id() == "agent-7"
    monkeypatch.delenv("PPZ_SESSION")
    assert cli.session_id() == f"sid-{os.getsid(0)}"


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "ppz.cli", *args], env=env, capture_output=True,
                          text=True, timeout=30)


def test_unknown_flag_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["status", "--bogus"], tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""


def test_help_exits_zero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["--help"], tmp_path)
    assert out.returncode == 0
    assert "login" in out.stdout


def test_missing_daemon_is_exit_11_with_no_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["daemon", "stop"], tmp_path)
    assert (out.returncode, out.stdout) == (0, "daemon not running\n")


# --- a fake daemon ---------------------------------------------------------------------------


class Stream:
    """A scripted Read reply: these events, then close (or hold the connection open until the
    client goes away when ``hold``)."""

    def __init__(self, *events: dict[str, Any], hold: bool = False) -> None:
        self.events = events
        self.hold = hold


Reply = Any  # a result dict, a PpzError, a Stream, or a callable(params) returning one of those


class FakeDaemon:
    """A daemon stand-in on a Unix socket (``test_ipc.UnixServer``): records every request and
    answers from a per-verb script (the last reply of a verb is reused). ``stop()`` closes the
    listener (the socket file stays: connecting is refused), ``start()`` listens again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.script: dict[str, list[Reply]] = {}
        self._server: UnixServer | None = None
        self.start()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = UnixServer(self.path, self._handle)

    def stop(self) -> None:
        """Stop listening now; connections being served finish in the background."""
        server, self._server = self._server, None
        if server is not None:
            server.stop.set()
            server._threads[0].join(5)  # the accept loop: nothing is accepted after this
            server._listener.close()

    def on(self, method: str, *replies: Reply) -> FakeDaemon:
        self.script.setdefault(method, []).extend(replies)
        return self

    def methods(self) -> list[str]:
        return [m for m, _ in self.requests]

    def params(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.requests if m == method]

    def _handle(self, server: UnixServer, conn: socket.socket) -> None:
        method, params = ipc.decode_request(server.read_request(conn))
        self.requests.append((method, params))
        queue = self.script.get(method)
        if not queue:
            reply: Reply = errors.PpzError(errors.E_PROTOCOL, f"unknown method {method}")
        else:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(reply):
            reply = reply(params)
        with contextlib.suppress(OSError):  # the client may be gone already
            self._answer(conn, reply)

    @staticmethod
    def _answer(conn: socket.socket, reply: Reply) -> None:
        if isinstance(reply, errors.PpzError):
            conn.sendall(ipc.encode_error(reply))
        elif isinstance(reply, Stream):
            for event in reply.events:
                conn.sendall(json.dumps(event).encode() + b"\n")
            if reply.hold:
                conn.recv(1)
        else:
            conn.sendall(ipc.encode_result(reply))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    root = tempfile.mkdtemp(prefix="ppzfake", dir="/tmp")
    monkeypatch.setenv("PPZ_IPC_SOCKET", os.path.join(root, "d.sock"))
    monkeypatch.setenv("PPZ_HOME", os.path.join(root, "home"))
    monkeypatch.setenv("PPZ_SESSION", "s1")
    monkeypatch.setenv("HOME", root)
    monkeypatch.delenv("PPZ_CURRENT_HANDLE", raising=False)
    monkeypatch.delenv("PPZ_AGENT_HARNESS", raising=False)
    monkeypatch.delenv("PPZ_AGENT_MODEL", raising=False)
    daemon = FakeDaemon(os.path.join(root, "d.sock"))
    yield daemon
    daemon.stop()
    shutil.rmtree(root, ignore_errors=True)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def ppz(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run the CLI in this process; returns its exit status and output."""
    capsys.readouterr()
    code = 0
    try:
        cli.main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Result(code, out, err)


SEND_REPLY = {"id": "3f0c1111-2222-4333-8444-a6b7c8d9", "subject": "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d.bob.inbox",
              "bytes": 3}


def msg(payload: str, sender: str = "alice", **over: Any) -> dict[str, Any]:
    m = {"id": f"id-{payload}", "sender": sender, "subject": "", "payload": payload,
         "created_at": "2026-05-01T12:00:00Z", "in_reply_to": "", "ack_requested": False, "priority": 0}
    m.update(over)
    return m


def local(ts: str) -> str:
    from ppz.timestamps import epoch_seconds

    return time.strftime("%H:%M:%S", time.localtime(epoch_seconds(ts)))


# --- send (cli.md §2.7) --------------------------------------------------------------------------


def test_send_dotless_target_and_values_as_typed(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Send", SEND_REPLY)
    r = ppz(capsys, "send", "bob", "007")
    assert (r.code, r.out, r.err) == (0, "", "sent id=a6b7c8d9 to=bob.inbox bytes=3\n")
    assert fake.requests == [("Send", {
        "handle": "bob", "channel": "inbox", "bare_target": "bob", "payload": "007", "msg_subject": "",
        "in_reply_to": "", "ack_requested": False, "priority": 0, "sender": "", "session": "s1"})]


def test_send_collared_with_every_flag(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "me")
    fake.on("Send", SEND_REPLY)
    r = ppz(capsys, "send", "--request-ack", "bob.notes", "[1, 2]", "--subject", "-x", "--in_reply_to=abc",
            "--priority", "HIGH")
    assert r.code == 0 and r.out == ""
    assert r.err == "sent id=a6b7c8d9 to=bob.inbox bytes=3 ack=requested\n"
    assert fake.methods() == ["Send"]  # the env handle satisfies --request-ack without Status
    assert fake.params("Send")[0] == {
        "handle": "bob", "channel": "notes", "payload": "[1, 2]", "msg_subject": "-x", "in_reply_to": "abc",
        "ack_requested": True, "priority": 1, "sender": "me", "session": "s1"}


@pytest.mark.parametrize(("word", "want"), [("1", 1), ("high", 1), ("Med", 2), ("medium", 2), ("2", 2),
                                            ("3", 3), ("LOW", 3)])
def test_send_priority_words(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], word: str, want: int) -> None:
    fake.on("Send", SEND_REPLY)
    assert ppz(capsys, "send", "bob", "hi", f"--priority={word}").code == 0
    assert fake.params("Send")[0]["priority"] == want


@pytest.mark.parametrize("word", ["0", "4", "-1", "urgent", ""])
def test_send_bad_priority_is_27_without_ipc(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], word: str) -> None:
    r = ppz(capsys, "send", "bob", "hi", f"--priority={word}")
    assert (r.code, r.out) == (27, "")
    assert r.err == "error: E_INVALID_PRIORITY: invalid priority; use high, medium or low (or 1, 2, 3)\n"
    assert fake.requests == []


def test_send_ack_subject_is_23_without_ipc(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    r = ppz(capsys, "send", "bob", "hi", "--subject", "ack:x")
    assert (r.code, r.out, fake.requests) == (23, "", [])
    assert r.err.startswith("error: E_INVALID_SUBJECT: invalid subject;")
    fake.on("Send", SEND_REPLY)
    assert ppz(capsys, "send", "bob", "hi", "--subject", "user:ack:read").code == 0


def test_send_request_ack_needs_a_current_handle(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Status", {"daemon_pid": 1, "logged_in": True})
    r = ppz(capsys, "send", "bob", "hi", "--request-ack")
    assert (r.code, r.out) == (16, "")
    assert r.err.startswith("error: E_NO_CURRENT_SOURCE: no current source;")
    assert fake.methods() == ["Status"]
    fake.script["Status"] = [{"daemon_pid": 1, "logged_in": True, "current": "me"}]
    fake.on("Send", SEND_REPLY)
    assert ppz(capsys, "send", "bob", "hi", "--request-ack").code == 0
    assert fake.params("Send")[0]["sender"] == ""  # only PPZ_CURRENT_HANDLE is a sender hint


def test_send_daemon_error_is_printed_with_its_exit_code(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Send", errors.PpzError(errors.E_SOURCE_NOT_FOUND, "source 'bob' not found"))
    r = ppz(capsys, "send", "bob", "hi")
    assert (r.code, r.out, r.err) == (14, "", "error: E_SOURCE_NOT_FOUND: source 'bob' not found\n")


@pytest.mark.parametrize("target", ["a.b.c", ".inbox", "bob.", ""])
def test_send_invalid_target(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], target: str) -> None:
    r = ppz(capsys, "send", target, "hi")
    assert (r.code, r.out, fake.requests) == (20, "", [])
    assert r.err == (f"error: E_INVALID_PIPE: invalid target '{target}': use HANDLE.PIPE or PIPE "
                     "(uncollared pipes resolve in the current namespace)\n")


@pytest.mark.parametrize("args", [["send", "bob"], ["send", "bob", "hi", "--bogus"], ["send", "bob", "hi", "--subject"],
                                  ["send", "bob", "hi", "extra"]])
def test_send_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    r = ppz(capsys, *args)
    assert (r.code, r.out, fake.requests) == (2, "", [])


def test_send_lone_dash_payload(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Send", SEND_REPLY)
    assert ppz(capsys, "send", "bob", "-").code == 0
    assert fake.params("Send")[0]["payload"] == "-"
    assert ppz(capsys, "send", "bob", "--payload=--help").code == 0
    assert fake.params("Send")[1]["payload"] == "--help"


# --- read (cli.md §2.8) --------------------------------------------------------------------------


def test_read_inbox_uses_the_current_handle_and_renders_a_table(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Status", {"daemon_pid": 1, "logged_in": True, "current": "me"})
    fake.on("Read", Stream({"msg": msg("hi")}, {"msg": msg("a\nb", sender="bob", priority=1, subject="s")},
                           {"more_unread": 17}))
    r = ppz(capsys, "read", "inbox")
    t = local("2026-05-01T12:00:00Z")
    assert r.code == 0 and r.err == ""
    assert r.out == (f"{t}  alice         hi\n{t}  bob           P1 [s] a\n{' ' * 24}b\n"
                     "(17 more unread - run again to continue)\n")
    assert fake.params("Read") == [{"handle": "me", "channel": "inbox", "follow": False, "head_limit": 10,
                                    "sender": "", "session": "s1"}]


def test_read_inbox_prefers_the_env_handle(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "env-me")
    fake.on("Read", Stream())
    assert ppz(capsys, "read", "inbox", "-l", "0").code == 0
    assert fake.requests == [("Read", {"handle": "env-me", "channel": "inbox", "follow": False, "head_limit": 0,
                                       "sender": "env-me", "session": "s1"})]


def test_read_inbox_without_current_is_16(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Status", {"daemon_pid": 1, "logged_in": True})
    r = ppz(capsys, "read", "inbox")
    assert (r.code, r.out, fake.methods()) == (16, "", ["Status"])


def test_read_uncollared_is_tabular_and_custom_pipes_are_plain(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"meta": {"cols": 80, "rows": 24}}, {"msg": msg("x")}, {"more_unread": 2}))
    r = ppz(capsys, "read", "room", "--limit=3")
    assert r.out.endswith("  alice         x\n(2 more unread - run again to continue)\n")
    assert fake.params("Read")[0] == {"bare_target": "room", "follow": False, "head_limit": 3, "sender": "",
                                      "session": "s1"}
    r = ppz(capsys, "read", "bob.notes")
    assert r.out == "x\n(2 more unread - run again to continue)\n"
    assert fake.params("Read")[1]["handle"] == "bob" and fake.params("Read")[1]["channel"] == "notes"


@pytest.mark.parametrize(("flag", "want"), [
    ("--json", json.dumps(msg("a\nb"), separators=(",", ":")) + "\n"),
    ("--raw", "a\nb"),
    ("--bare", "a\nb\n"),
])
def test_read_modes_have_no_trailer(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], flag: str,
                                    want: str) -> None:
    fake.on("Read", Stream({"msg": msg("a\nb")}, {"more_unread": 2}))
    r = ppz(capsys, "read", flag, "bob.inbox")
    assert (r.code, r.out, r.err) == (0, want, "")


def test_read_error_event_keeps_printed_messages(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"msg": msg("first")}, {"error": {"code": "E_NATS_UNREACHABLE", "message": "gone"}}))
    r = ppz(capsys, "read", "bob.notes")
    assert (r.code, r.out, r.err) == (19, "first\n", "error: E_NATS_UNREACHABLE: gone\n")


def test_read_error_before_any_message_writes_nothing(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"error": {"code": "E_PIPE_NOT_FOUND", "message": "pipe 'x' not found on source 'bob'"}}))
    r = ppz(capsys, "read", "bob.x")
    assert (r.code, r.out, r.err) == (22, "", "error: E_PIPE_NOT_FOUND: pipe 'x' not found on source 'bob'\n")


@pytest.mark.parametrize("args", [
    ["read", "bob.inbox", "--tail", "--limit", "5"],
    ["read", "bob.inbox", "--tail", "-l", "0"],
    ["read", "bob.inbox", "--json", "--raw"],
    ["read", "bob.inbox", "--bare", "--json"],
    ["read", "bob.inbox", "--limit", "x"],
    ["read", "bob.inbox", "--limit", "-1"],
    ["read"],
])
def test_read_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    r = ppz(capsys, *args)
    assert (r.code, r.out, fake.requests) == (2, "", [])


def test_read_more_than_one_dot_is_20(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    r = ppz(capsys, "read", "team.bob.inbox")
    assert (r.code, r.out, fake.requests) == (20, "", [])
    assert r.err == ("error: E_INVALID_PIPE: invalid target 'team.bob.inbox': use HANDLE.PIPE or PIPE "
                     "(uncollared pipes resolve in the current namespace)\n")


def test_read_tail_redials_after_a_clean_end(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "REDIAL_DELAY", 0.01)
    fake.on("Read", Stream({"msg": msg("one")}), Stream({"msg": msg("two")}),
            Stream({"error": {"code": "E_NOT_LOGGED_IN", "message": "bye"}}))
    r = ppz(capsys, "read", "--tail", "bob.notes")
    assert (r.code, r.out, r.err) == (10, "one\ntwo\n", "error: E_NOT_LOGGED_IN: bye\n")
    params = fake.params("Read")
    assert len(params) == 3 and all(p == params[0] for p in params)
    assert params[0] == {"handle": "bob", "channel": "notes", "follow": True, "head_limit": 0, "sender": "",
                         "session": "s1"}


def test_read_tail_retries_a_missing_daemon_then_gives_up(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "REDIAL_DELAY", 0.01)
    monkeypatch.setattr(cli, "RECONNECT_EVERY", 0.01)
    monkeypatch.setattr(cli, "RECONNECT_FOR", 0.2)

    def then_stop(params: dict[str, Any]) -> Stream:
        fake.stop()  # before the stream ends: the redial finds no daemon
        return Stream({"msg": msg("last")})

    fake.on("Read", then_stop)
    started = time.monotonic()
    r = ppz(capsys, "read", "bob.notes", "--tail")
    assert (r.code, r.out) == (11, "last\n")
    assert r.err == "error: E_DAEMON_NOT_RUNNING: daemon not running; run 'ppz daemon start'\n"
    assert time.monotonic() - started >= 0.2


def test_read_tail_reconnects_when_the_daemon_comes_back(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "REDIAL_DELAY", 0.01)
    monkeypatch.setattr(cli, "RECONNECT_EVERY", 0.02)

    def restart_later() -> None:
        time.sleep(0.1)
        fake.start()

    def first(params: dict[str, Any]) -> Stream:
        fake.stop()
        threading.Thread(target=restart_later).start()
        return Stream({"msg": msg("before")})

    fake.on("Read", first, Stream({"msg": msg("after")}), Stream({"error": {"code": "E_INTERNAL", "message": "x"}}))
    r = ppz(capsys, "read", "bob.notes", "--tail")
    assert (r.code, r.out) == (1, "before\nafter\n")


def test_read_tail_first_dial_without_daemon_is_11_at_once(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.stop()
    r = ppz(capsys, "read", "bob.notes", "--tail")
    assert (r.code, r.out) == (11, "")


# --- reread (cli.md §2.9) ------------------------------------------------------------------------


def test_reread_request_and_no_trailer(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"msg": msg("x")}, {"more_unread": 3}))
    r = ppz(capsys, "reread", "bob.inbox", "--skip", "2", "--since", "1m30s")
    assert r.code == 0 and r.out.endswith("  alice         x\n")
    assert fake.params("Read")[0] == {"handle": "bob", "channel": "inbox", "all": True, "limit": 10, "skip": 2,
                                      "since_ms": 90000, "sender": "", "session": "s1"}
    assert ppz(capsys, "reread", "room", "-l", "0", "--bare").out == "x\n"
    assert fake.params("Read")[1] == {"bare_target": "room", "all": True, "limit": 0, "skip": 0, "since_ms": 0,
                                      "sender": "", "session": "s1"}


@pytest.mark.parametrize("args", [["--since", "soon"], ["--skip", "-2"], ["--tail"], ["--raw", "--json"]])
def test_reread_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert ppz(capsys, "reread", "bob.inbox", *args).code == 2
    assert fake.requests == []


# --- ls (cli.md §2.10) ---------------------------------------------------------------------------

LIST_REPLY = {
    "sources": [{"handle": "alice", "manifold": "", "kind": "message", "created_by": "foo",
                 "pipes": ["inbox"], "pipe_infos": [{"pipe": "inbox", "total": 3, "unread": 1}]}],
    "uncollared_pipes": [],
}


def test_ls_table_patterns_and_warnings(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", LIST_REPLY)
    r = ppz(capsys, "ls", "alice.inbox", "ghost", "--long")
    assert r.code == 0
    assert r.out.splitlines()[0].split() == ["NAMESPACE", "PIPE", "UNREAD", "BUFFERED", "LAST", "TTL", "MAX_MSGS",
                                             "MAX_BYTES", "PAYLOAD", "CREATOR"]
    assert r.err == 'ppz ls: no pipe matches "ghost" — use a glob like "ghost%" to match speculatively\n'
    assert fake.params("List") == [{"session": "s1", "patterns": ["alice.inbox", "ghost"], "long": True}]


def test_ls_json(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", LIST_REPLY)
    r = ppz(capsys, "ls", "--json")
    assert (r.code, r.out, r.err) == (0, json.dumps(LIST_REPLY, indent=2) + "\n", "")
    assert fake.params("List") == [{"session": "s1", "patterns": [], "long": False}]


def test_ls_watch_uses_listwatch(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("ListWatch", LIST_REPLY)
    r = ppz(capsys, "ls", "--watch", "al%")
    assert r.code == 0 and "alice.inbox" in r.out and r.err == ""
    assert fake.requests == [("ListWatch", {"session": "s1", "patterns": ["al%"], "long": False})]


# --- sources (cli.md §2.11) -----------------------------------------------------------------------


def test_source_create(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Create", {"handle": "bob", "subject": "acct.bob", "pipes": ["inbox"]})
    r = ppz(capsys, "source", "create", "bob")
    assert (r.code, r.out) == (0, "created handle=bob subject=acct.bob\n")
    assert fake.requests == [("Create", {"handle": "bob", "kind": "message", "session": "s1"})]
    fake.script["Create"] = [errors.PpzError(errors.E_SOURCE_TAKEN, "source 'bob' already exists in this account")]
    r = ppz(capsys, "source", "create", "bob")
    assert (r.code, r.out) == (13, "")


def test_source_destroy_literal(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("SourceDestroy", {"handle": "bob", "manifold": "team-a"})
    fake.on("PipeDestroy", {"handle": "bob", "name": "notes"})
    assert ppz(capsys, "source", "destroy", "bob").out == "destroyed source=team-a.bob\n"
    assert ppz(capsys, "source", "destroy", "bob.notes").out == "destroyed pipe=bob.notes\n"
    assert fake.requests == [("SourceDestroy", {"handle": "bob", "session": "s1"}),
                             ("PipeDestroy", {"handle": "bob", "name": "notes", "session": "s1"})]


GLOB_LIST = {"sources": [
    {"handle": "agent-b", "kind": "pty", "pipes": ["heartbeat", "inbox", "notes", "stdctrl", "stdin", "stdout",
                                                  "system"], "pipe_infos": []},
    {"handle": "agent-a", "kind": "message", "pipes": ["inbox", "logs"], "pipe_infos": []},
    {"handle": "bob", "kind": "message", "pipes": ["inbox"], "pipe_infos": []},
], "uncollared_pipes": [{"name": "agent-room", "info": {}}]}


def test_source_destroy_glob_of_sources(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    fake.on("SourceDestroy", lambda p: {"handle": p["handle"]})
    r = ppz(capsys, "source", "destroy", "agent-%")
    assert (r.code, r.out) == (0, "destroyed source=agent-a\ndestroyed source=agent-b\n")
    assert fake.requests[0] == ("List", {})
    assert [p["handle"] for p in fake.params("SourceDestroy")] == ["agent-a", "agent-b"]


def test_source_destroy_glob_of_pipes_skips_auto_pipes(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    fake.on("PipeDestroy", lambda p: {"handle": p["handle"], "name": p["name"], "manifold": "m"})
    r = ppz(capsys, "source", "destroy", "agent-?.*")
    assert (r.code, r.out) == (0, "destroyed pipe=m.agent-a.logs\ndestroyed pipe=m.agent-b.notes\n")


def test_source_destroy_glob_stops_at_the_first_error(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    fake.on("SourceDestroy", {"handle": "agent-a"}, errors.PpzError(errors.E_INTERNAL, "boom"), {"handle": "bob"})
    r = ppz(capsys, "source", "destroy", "*")
    assert (r.code, r.out, r.err) == (1, "destroyed source=agent-a\n", "error: E_INTERNAL: boom\n")
    assert len(fake.params("SourceDestroy")) == 2


def test_source_destroy_glob_without_match(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", GLOB_LIST)
    r = ppz(capsys, "source", "destroy", "zz*")
    assert (r.code, r.out, r.err) == (14, "", "error: E_SOURCE_NOT_FOUND: no source matches 'zz*'\n")
    r = ppz(capsys, "source", "destroy", "bob.i%")
    assert (r.code, r.out, r.err) == (22, "", "error: E_PIPE_NOT_FOUND: no pipe matches 'bob.i%'\n")


# --- handle and namespace (cli.md §2.12) -------------------------------------------------------------


def test_set_get_unset_handle(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake.on("Switch", {"handle": "bob"})
    fake.on("Disconnect", {})
    fake.on("Status", {"daemon_pid": 1, "logged_in": True, "current": "bob"})
    assert (ppz(capsys, "set", "handle", "bob").out) == "handle=bob\n"
    assert fake.params("Switch") == [{"handle": "bob", "session": "s1"}]
    assert ppz(capsys, "get", "handle").out == "bob\n"
    assert ppz(capsys, "unset", "handle").out == "unset\n"
    assert fake.params("Disconnect") == [{"session": "s1"}]
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "alice")
    warning = "warning: PPZ_CURRENT_HANDLE=alice overrides the current source in this shell\n"
    r = ppz(capsys, "set", "handle", "bob")
    assert (r.out, r.err) == ("handle=bob\n", warning)
    r = ppz(capsys, "get", "handle")
    assert (r.code, r.out, r.err) == (0, "alice\n", warning)
    monkeypatch.setenv("PPZ_CURRENT_HANDLE", "bob")
    assert ppz(capsys, "get", "handle").err == ""


def test_get_handle_without_current_prints_nothing_and_exits_1(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Status", {"daemon_pid": 1, "logged_in": True})
    r = ppz(capsys, "get", "handle")
    assert (r.code, r.out, r.err) == (1, "", "")


def test_namespace(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("SetNamespace", {"namespace": "team-a.x"})
    fake.on("UnsetNamespace", {})
    assert ppz(capsys, "set", "namespace", "team-a.x").out == "namespace=team-a.x\n"
    assert ppz(capsys, "unset", "namespace").out == "unset\n"
    assert fake.requests == [("SetNamespace", {"namespace": "team-a.x", "session": "s1"}),
                             ("UnsetNamespace", {"session": "s1"})]


# --- pipes (cli.md §2.13) ------------------------------------------------------------------------

PIPE_REPLY = {"handle": "bob", "name": "notes", "stream_name": "x", "ttl_seconds": 86400, "max_msgs": 5000,
              "max_bytes": 16777216}


def test_pipe_create_with_hyphen_and_underscore_flags(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("PipeCreate", PIPE_REPLY)
    r = ppz(capsys, "pipe", "create", "bob.notes", "--ttl", "24h", "--max-msgs", "5000", "--max_bytes=-1")
    assert (r.code, r.out) == (0, "created pipe=bob.notes retention=ttl=24h0m0s,msgs=5000,bytes=16777216\n")
    assert fake.params("PipeCreate") == [{"handle": "bob", "name": "notes", "ttl_seconds": 86400, "max_msgs": 5000,
                                          "max_bytes": -1, "session": "s1"}]
    ppz(capsys, "pipe", "create", "room", "--ttl=0")
    assert fake.params("PipeCreate")[1] == {"handle": "", "name": "room", "ttl_seconds": 0, "session": "s1"}


def test_pipe_set_and_destroy(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("PipeSet", {**PIPE_REPLY, "manifold": "team-a"})
    fake.on("PipeDestroy", {"handle": "", "name": "room", "manifold": "team-a"})
    fake.on("SourceDestroy", {"handle": "bob"})
    r = ppz(capsys, "pipe", "set", "bob.notes", "--max-msgs", "5000")
    assert r.out == "updated pipe=team-a.bob.notes retention=ttl=24h0m0s,msgs=5000,bytes=16777216\n"
    assert fake.params("PipeSet") == [{"handle": "bob", "name": "notes", "max_msgs": 5000, "session": "s1"}]
    assert ppz(capsys, "pipe", "destroy", "room").out == "destroyed pipe=team-a.room\n"
    assert ppz(capsys, "pipe", "destroy", "bob", "--recursive").out == "destroyed source=bob\n"
    assert fake.requests[1:] == [("PipeDestroy", {"handle": "", "name": "room", "session": "s1"}),
                                 ("SourceDestroy", {"handle": "bob", "session": "s1"})]


def test_pipe_set_needs_a_flag(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    r = ppz(capsys, "pipe", "set", "bob.notes")
    assert (r.code, r.out, fake.requests) == (20, "", [])
    assert r.err == "error: E_INVALID_PIPE: pipe set: name at least one of --ttl, --max-msgs, --max-bytes\n"


@pytest.mark.parametrize("args", [["--ttl", "forever"], ["--max-msgs", "-2"], ["--max-bytes", "1.5"], ["--ttl"]])
def test_pipe_flag_errors_are_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                           args: list[str]) -> None:
    assert ppz(capsys, "pipe", "create", "bob.notes", *args).code == 2
    assert fake.requests == []


# --- completion (cli.md §2.14) --------------------------------------------------------------------


def test_complete(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Complete", {"sources": [{"handle": "bob", "pipes": ["notes", "inbox"]},
                                     {"handle": "alice", "pipes": ["inbox"]}], "stale": False})
    assert ppz(capsys, "__complete", "b").out == "bob\nbob.inbox\nbob.notes\n"
    assert ppz(capsys, "__complete").out == "alice\nalice.inbox\nbob\nbob.inbox\nbob.notes\n"
    assert fake.requests[0] == ("Complete", {})


def test_complete_failures_print_nothing(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Complete", errors.PpzError(errors.E_INTERNAL), {"sources": [{"pipes": []}]})
    assert (ppz(capsys, "__complete", "b").__dict__) == {"code": 0, "out": "", "err": ""}
    assert (ppz(capsys, "__complete", "b").__dict__) == {"code": 0, "out": "", "err": ""}
    fake.stop()
    assert (ppz(capsys, "__complete", "b").__dict__) == {"code": 0, "out": "", "err": ""}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(capsys: pytest.CaptureFixture[str], shell: str, tmp_path: Any) -> None:
    r = ppz(capsys, "completion", shell)
    assert r.code == 0 and "ppz __complete" in r.out
    for name in ("send", "reread", "diagnostics", "heartbeat", "who"):
        assert name in r.out
    checker = shutil.which(shell)
    if checker:
        script = tmp_path / f"c.{shell}"
        script.write_text(r.out)
        assert subprocess.run([checker, "-n", str(script)]).returncode == 0


def test_completion_bash_completes_targets(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    script = tmp_path / "c.bash"
    script.write_text(ppz(capsys, "completion", "bash").out)
    shim = tmp_path / "ppz"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m ppz.cli \"$@\"\n")
    shim.chmod(0o755)
    fake.on("Complete", {"sources": [{"handle": "bob", "pipes": ["inbox"]}], "stale": False})
    driver = (f"source {script}\nCOMP_WORDS=(ppz read b); COMP_CWORD=2; _ppz; echo \"${{COMPREPLY[*]}}\"\n"
              "COMP_WORDS=(ppz pip); COMP_CWORD=1; _ppz; echo \"${COMPREPLY[*]}\"\n"
              "COMP_WORDS=(ppz pipe destroy bob.); COMP_CWORD=3; _ppz; echo \"${COMPREPLY[*]}\"\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", driver], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["bob bob.inbox", "pipe", "bob.inbox"], out.stderr


def test_completion_other_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    r = ppz(capsys, "completion", "fish")
    assert (r.code, r.out) == (2, "")


# --- who (cli.md §2.6) ----------------------------------------------------------------------------


def who_reply() -> dict[str, Any]:
    from ppz.timestamps import format_rfc3339

    now = time.time()
    beat = {"harness": "claude", "model": "m", "agent_state": "idle", "interval_sec": 60, "os": "linux",
            "arch": "arm64", "hostname": "h"}
    return {"entries": [
        {"handle": "a", "owner": "foo", "payload": json.dumps(beat), "arrived_at": format_rfc3339(now)},
        {"handle": "b", "payload": "x", "arrived_at": format_rfc3339(now - 100)},
    ]}


def test_who(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    reply = who_reply()
    fake.on("Who", reply)
    r = ppz(capsys, "who")
    assert r.code == 0 and fake.requests == [("Who", {})]
    assert r.out.splitlines()[1].split() == ["a", "online|idle", "claude", "m", "h", "linux/arm64", "-", "foo"]
    assert r.out.splitlines()[2].split() == ["b", "stale", "-", "-", "-", "-", "-", "-"]
    r = ppz(capsys, "who", "--json", "--stale")
    assert json.loads(r.out) == [{"handle": "b", "status": "stale", "owner": "",
                                  "arrived_at": reply["entries"][1]["arrived_at"], "heartbeat": None}]
    assert r.out == json.dumps(json.loads(r.out), indent=2) + "\n"
    r = ppz(capsys, "who", "--harness=claude", "--offline", "--online")
    assert [line.split()[0] for line in r.out.splitlines()] == ["HANDLE", "a"]
    r = ppz(capsys, "who", "--owner", "bar")
    assert r.out.splitlines() == [r.out.splitlines()[0]]


# --- diagnostics (cli.md §2.5) ----------------------------------------------------------------------

DIAG = {"summary": {}, "patterns": [], "nats_drops_last_hour": 0, "nats_events": [], "on_disk_count": 0}


def test_diagnostics(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Diag", DIAG)
    r = ppz(capsys, "diagnostics")
    assert r.code == 0 and r.out.startswith("nats: unknown  (—)  drops_last_hour=0\n")
    assert fake.params("Diag") == [{}]
    before = int(time.time())
    r = ppz(capsys, "diagnostics", "--json", "--since", "1h")
    assert r.out == json.dumps(DIAG, indent=2) + "\n"
    since = fake.params("Diag")[1]["since_unix"]
    assert before - 3600 - 1 <= since <= int(time.time()) - 3600
    assert ppz(capsys, "diagnostics", "--since=1h").out.count("scope=") == 0  # no events: "(none)"
    assert ppz(capsys, "diagnostics", "--since=later").code == 2


def test_diagnostics_without_daemon_is_11(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.stop()
    r = ppz(capsys, "diagnostics")
    assert (r.code, r.out) == (11, "")


def read_bundle(path: str) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_diagnostics_bundle(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    home = os.environ["PPZ_HOME"]
    os.makedirs(home)
    for name, data in (("nats-events.jsonl", "{}\n"), ("nats-events.jsonl.1", "{}\n"), ("daemon.pid", "42\n"),
                       ("credentials", "SECRET"), ("current.json", "{}")):
        with open(os.path.join(home, name), "w") as f:
            f.write(data)
    fake.on("Diag", DIAG)
    fake.on("Status", {"daemon_pid": 42, "daemon_version": "0.3.0", "logged_in": False})
    r = ppz(capsys, "diagnostics", "--bundle", "--since", "10m")
    assert r.code == 0 and r.err == ""
    path = r.out.strip()
    assert os.path.isabs(path) and os.path.dirname(path) == os.environ["HOME"]
    assert os.path.basename(path).startswith("ppz-diag-") and path.endswith(".tgz")
    files = read_bundle(path)
    assert set(files) == {"nats-events.jsonl", "nats-events.jsonl.1", "daemon.pid", "diagnostics.json",
                          "version.txt", "uname.txt", "platform.txt", "MANIFEST"}
    assert json.loads(files["diagnostics.json"]) == DIAG
    assert "since_unix" in fake.params("Diag")[0]
    assert files["version.txt"] == b"cli: 0.3.0\ndaemon: 0.3.0\n"
    manifest = files["MANIFEST"].decode().splitlines()
    assert "+ nats-events.jsonl" in manifest and "- nats-events.jsonl.2 (not found)" in manifest
    assert "- diagnostics-lifecycle.jsonl (not found)" in manifest and "+ diagnostics.json" in manifest
    assert not any("credentials" in line or "current" in line for line in manifest)


def test_diagnostics_bundle_without_daemon(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    fake.stop()
    monkeypatch.setenv("HOME", "")
    monkeypatch.chdir(tmp_path)
    r = ppz(capsys, "diagnostics", "--bundle")
    assert r.code == 0
    assert os.path.dirname(r.out.strip()) == str(tmp_path)
    files = read_bundle(r.out.strip())
    assert "diagnostics.json" not in files
    assert "- diagnostics.json (daemon not running)" in files["MANIFEST"].decode().splitlines()


def test_diagnostics_bundle_write_failure(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    fake.on("Diag", DIAG)
    fake.on("Status", {"daemon_pid": 1, "logged_in": False})
    monkeypatch.setenv("HOME", str(tmp_path / "missing"))
    r = ppz(capsys, "diagnostics", "--bundle")
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("error: diagnostics bundle: cannot write ")


# --- heartbeat (cli.md §2.15) ---------------------------------------------------------------------


def test_heartbeat_once_creates_a_missing_pty_source(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_AGENT_HARNESS", "claude")
    monkeypatch.setenv("PPZ_AGENT_MODEL", "opus")
    fake.on("EnsurePTY", errors.PpzError(errors.E_SOURCE_NOT_FOUND, "source 'agent' not found"))
    fake.on("Create", {"handle": "agent", "subject": "x", "pipes": []})
    fake.on("Send", SEND_REPLY)
    r = ppz(capsys, "heartbeat", "agent", "--once", "--interval", "10s", "--state", "working")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert fake.methods() == ["EnsurePTY", "Create", "Send"]
    assert fake.params("Create") == [{"handle": "agent", "kind": "pty", "session": "s1"}]
    send = fake.params("Send")[0]
    assert {k: send[k] for k in ("handle", "channel", "session")} == {"handle": "agent", "channel": "heartbeat",
                                                                      "session": "s1"}
    beat = json.loads(send["payload"])
    assert set(beat) == {"ts", "seq", "harness", "harness_source", "agent_state", "child_pid", "model", "hostname",
                         "os", "arch", "pid", "ppz_version", "started_at", "interval_sec"}
    assert beat["seq"] == 1 and beat["interval_sec"] == 10 and beat["agent_state"] == "working"
    assert (beat["harness"], beat["harness_source"], beat["model"]) == ("claude", "env", "opus")
    assert beat["pid"] == os.getpid() and beat["child_pid"] == 0 and beat["ppz_version"] == cli.__version__
    assert beat["os"] == os.uname().sysname.lower() and beat["hostname"] == os.uname().nodename


def test_heartbeat_once_failure_exits_with_the_code(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", errors.PpzError(errors.E_NATS_UNREACHABLE, "down"))
    r = ppz(capsys, "heartbeat", "agent", "--once", "--harness=", "--interval=500ms")
    assert (r.code, r.out, r.err) == (19, "", "error: E_NATS_UNREACHABLE: down\n")
    beat = json.loads(fake.params("Send")[0]["payload"])
    assert (beat["harness"], beat["harness_source"], beat["interval_sec"]) == ("", "", 1)


@pytest.mark.parametrize("args", [["--state", "busy"], ["--interval", "often"], ["--once", "--", "true"],
                                  ["--", ]])
def test_heartbeat_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert ppz(capsys, "heartbeat", "agent", *args).code == 2
    assert fake.requests == []


def cli_process(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ppz.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_heartbeat_wraps_a_command(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", SEND_REPLY)
    script = ('import os, sys, time; print(os.environ["PPZ_SESSION"], os.environ["PPZ_CURRENT_HANDLE"], '
              'sys.argv[1]); time.sleep(1.6); sys.exit(7)')
    proc = cli_process(["heartbeat", "agent", "--interval=1s", "--", sys.executable, "-c", script, "--json"])
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (7, "agent agent --json\n"), err
    beats = [json.loads(p["payload"]) for p in fake.params("Send")]
    assert [b["seq"] for b in beats] == [1, 2]  # at once, then after one interval
    assert beats[0]["child_pid"] > 0 and beats[0]["child_pid"] != beats[0]["pid"]
    assert beats[0]["interval_sec"] == 1 and beats[0]["started_at"] == beats[1]["started_at"]
    assert fake.methods().count("EnsurePTY") == 1


def test_heartbeat_command_not_found(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", SEND_REPLY)
    proc = cli_process(["heartbeat", "agent", "--", "/nonexistent/command"])
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (127, "")
    assert err.startswith("error: heartbeat: cannot run '/nonexistent/command': ")


def test_heartbeat_passes_signals_on_and_survives_failed_beats(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", errors.PpzError(errors.E_NOT_LOGGED_IN))
    script = "import time; print('ready', flush=True); time.sleep(30)"
    proc = cli_process(["heartbeat", "agent", "--", sys.executable, "-c", script])
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "warning: heartbeat failed: E_NOT_LOGGED_IN: not logged in; run 'ppz login URL --apikey KEY'" in err


def test_heartbeat_until_signalled(fake: FakeDaemon) -> None:
    fake.on("EnsurePTY", {"handle": "agent"})
    fake.on("Send", SEND_REPLY)
    proc = cli_process(["heartbeat", "agent"])
    deadline = time.monotonic() + 20
    while not fake.params("Send") and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, ""), err
    assert json.loads(fake.params("Send")[0]["payload"])["interval_sec"] == 60


# --- processes, signals, imports ------------------------------------------------------------------


def test_read_tail_ctrl_c_exits_0(fake: FakeDaemon) -> None:
    fake.on("Read", Stream({"msg": msg("hello")}, hold=True))
    proc = cli_process(["read", "bob.notes", "--tail"])
    assert proc.stdout is not None and proc.stdout.readline() == "hello\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, "", "")


def test_broken_pipe_is_quiet(fake: FakeDaemon) -> None:
    fake.on("Read", Stream(*({"msg": msg("x" * 1000)} for _ in range(2000))))
    proc = cli_process(["read", "bob.notes"])
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(30) == cli.BROKEN_PIPE_EXIT and err == ""


def test_socket_path_follows_home_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from ppz import home

    cases = [{"PPZ_IPC_SOCKET": "/x/s.sock"}, {"PPZ_HOME": "/h"}, {"HOME": "/u"}, {"HOME": ""}, {"PPZ_HOME": ""},
             {"HOME": None}]
    for env in cases:
        for name in ("PPZ_IPC_SOCKET", "PPZ_HOME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", "/u")
        for k, v in env.items():
            if v is None:
                monkeypatch.delenv(k)
            else:
                monkeypatch.setenv(k, v)
        assert cli.socket_path() == str(home.Home.from_env().socket), env
        assert ipc.home_dir() == str(home.resolve_home()), env


@pytest.mark.parametrize("user_home", [None, ""])
def test_without_home_the_cli_reaches_the_daemons_socket(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], user_home: str | None) -> None:
    """HOME unset: ``~/.ppz`` of the password entry; HOME empty: ``.ppz`` in the working
    directory. The CLI dials the socket the daemon listens on (``Home.from_env``), and the
    diagnostics bundle lands in the same home directory."""
    import pwd
    from pathlib import Path

    from ppz.home import Home

    root = Path(tempfile.mkdtemp(prefix="ppzhome", dir="/tmp"))
    for name in ("PPZ_IPC_SOCKET", "PPZ_HOME", "PPZ_CURRENT_HANDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: types.SimpleNamespace(pw_dir=str(root / "pw")))
    monkeypatch.chdir(root)
    if user_home is None:
        monkeypatch.delenv("HOME", raising=False)
        want = root / "pw" / ".ppz"
    else:
        monkeypatch.setenv("HOME", user_home)
        want = root / ".ppz"
    want.mkdir(parents=True)
    daemon_home = Home.from_env()
    assert (daemon_home.root.resolve(), daemon_home.socket.resolve()) == (want, want / "daemon.sock")
    daemon = FakeDaemon(str(daemon_home.socket))
    try:
        daemon.on("Status", {"daemon_pid": 42, "logged_in": False, "daemon_version": __version__})
        r = ppz(capsys, "status")
        assert (r.code, r.out.splitlines()[0]) == (0, f"daemon: not logged in (pid=42), {__version__}")
        (want / "daemon.pid").write_text("42\n")
        daemon.on("Diag", {"summary": {}, "patterns": [], "nats_events": [], "on_disk_count": 0})
        r = ppz(capsys, "diagnostics", "--bundle")
        assert r.code == 0, r
        bundle = Path(r.out.strip())
        assert bundle.parent == (want.parent if user_home is None else root)
        assert read_bundle(str(bundle))["daemon.pid"] == b"42\n"
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_deferred_asyncio_still_imports_for_real() -> None:
    code = ("import sys\nfrom ppz import cli\ncli.import_fire()\nassert 'asyncio' not in sys.modules\n"
            "import asyncio\nprint(asyncio.get_event_loop_policy().__class__.__name__)\n"
            "import fire.inspectutils\nprint(fire.inspectutils.asyncio.iscoroutinefunction(print))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == "False"


@pytest.mark.parametrize(("argv", "want"), [
    (["read", "--tail", "bob.x"], ["read", "--tail=True", "bob.x"]),
    (["read", "bob.x", "-l", "5"], ["read", "bob.x", "--limit=5"]),
    (["ls", "-l", "x"], ["ls", "--long=True", "x"]),
    (["send", "b", "p", "--subject", "--json"], ["send", "b", "p", "--subject=--json"]),
    (["pipe", "create", "x", "--max-msgs", "-1"], ["pipe", "create", "x", "--max_msgs=-1"]),
    (["read", "x", "--notail"], ["read", "x", "--tail=False"]),
    (["send", "b", "--payload=-x"], ["send", "b", "--payload=-x"]),
    (["send", "b", "-5"], ["send", "b", "-5"]),
    (["nosuch", "--x"], ["nosuch", "--x"]),
    (["send", "--help"], ["send", "--help"]),
])
def test_normalise_flags(argv: list[str], want: list[str]) -> None:
    assert cli.normalise_flags(cli.Ppz(), argv) == want


def test_help_of_a_subcommand_goes_to_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["pipe", "create", "--help"], tmp_path)
    assert out.returncode == 0 and "--max_msgs" in out.stdout.replace("-msgs", "_msgs")


# --- the direct path: complete commands bind without Fire -----------------------------------------


@pytest.fixture
def no_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of Fire fails the test (``fire`` may be in ``sys.modules`` from other tests)."""
    def refuse() -> None:
        raise AssertionError("Fire was imported for a complete command")

    monkeypatch.setattr(cli, "import_fire", refuse)


@pytest.mark.usefixtures("no_fire")
def test_send_values_as_typed_through_the_direct_path(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Send", SEND_REPLY)
    r = ppz(capsys, "send", "bob", "007")
    assert (r.code, r.out, r.err) == (0, "", "sent id=a6b7c8d9 to=bob.inbox bytes=3\n")
    assert fake.params("Send")[0]["payload"] == "007"
    assert ppz(capsys, "send", "--priority", "1", "bob.notes", "[1, 2]", "--in-reply-to", "0x1F").code == 0
    sent = fake.params("Send")[1]
    assert (sent["handle"], sent["channel"], sent["payload"], sent["priority"], sent["in_reply_to"]) == (
        "bob", "notes", "[1, 2]", 1, "0x1F")
    assert ppz(capsys, "send", "--payload=-1e3", "--target=bob").code == 0  # positionals by name
    assert (fake.params("Send")[2]["handle"], fake.params("Send")[2]["payload"]) == ("bob", "-1e3")


@pytest.mark.usefixtures("no_fire")
def test_other_commands_through_the_direct_path(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", LIST_REPLY)
    fake.on("Read", Stream({"msg": msg("1.0")}))
    fake.on("PipeCreate", PIPE_REPLY)
    assert ppz(capsys, "ls", "007", "a*", "-l").code == 0
    assert ppz(capsys, "read", "bob.notes", "--raw", "--limit", "05").out == "1.0"
    assert ppz(capsys, "pipe", "create", "bob.notes", "--max-msgs=010").code == 0
    assert fake.requests == [
        ("List", {"session": "s1", "patterns": ["007", "a*"], "long": True}),
        ("Read", {"handle": "bob", "channel": "notes", "follow": False, "head_limit": 5, "sender": "",
                  "session": "s1"}),
        ("PipeCreate", {"handle": "bob", "name": "notes", "max_msgs": 10, "session": "s1"})]


@pytest.mark.parametrize("args", [["send", "bob"], ["send"], ["send", "bob", "hi", "extra"],
                                  ["send", "bob", "hi", "--bogus"], ["send", "bob", "hi", "--subject"],
                                  ["status", "extra"], ["daemon"], ["nosuch"], ["pipe", "set"]])
def test_usage_errors_exit_2_with_nothing_on_stdout(tmp_path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    out = run(args, tmp_path)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr


def test_fire_still_reports_what_does_not_bind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["send", "bob"], tmp_path)
    assert out.stderr.startswith("ERROR: The function received no value for the required argument: payload\n"
                                 "Usage: ppz send TARGET PAYLOAD <flags>\n")
    assert run(["send", "bob", "hi", "extra"], tmp_path).stderr.startswith("ERROR: Could not consume arg: extra\n")


def test_help_of_send_goes_to_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for args in (["send", "--help"], ["send", "-h"]):
        out = run(args, tmp_path)
        assert out.returncode == 0, args
        assert "ppz send TARGET PAYLOAD" in out.stdout and "--subject" in out.stdout


def fire_action(argv: list[str]) -> Any:
    """What the Fire path makes of a normalised argv (an Action, or None)."""
    fire = cli.import_fire()
    cli._adapt_fire(False)
    try:
        return fire.Fire(cli.Ppz(), command=[*argv, "--", "--separator=\x00"], name="ppz")
    except fire.core.FireExit:
        return None


@pytest.mark.parametrize("argv", [
    ["send", "bob", "007"], ["send", "--request-ack", "bob.notes", "[1, 2]", "--subject", "-x", "--priority", "1"],
    ["send", "--payload=p", "b"], ["send", "--target=t", "--payload=p"], ["send", "b", "p", "--subject=a",
                                                                          "--subject=b"],
    ["send", "b", "-5"], ["send", "b", "-"], ["send", "b", ""], ["login", "http://x", "KEY"], ["login", "u"],
    ["ls"], ["ls", "a", "b", "--json", "-l"], ["read", "inbox", "--notail", "-l", "0"],
    ["reread", "x", "--since", "1m", "--skip=2"], ["who", "--online", "--owner", "True"],
    ["diagnostics", "--bundle=false"], ["heartbeat", "x", "--once", "--state", "idle", "--interval=1s"],
    ["daemon", "start", "--foreground=false"], ["daemon", "stop"], ["source", "destroy", "x*"],
    ["set", "namespace", "a.b"], ["unset", "handle"], ["get", "handle"], ["pipe", "create", "x", "--ttl", "1h",
                                                                       "--max-bytes", "-1"],
    ["pipe", "destroy", "x", "--recursive"], ["completion", "zsh"],
])
def test_direct_binding_is_fires_binding(argv: list[str]) -> None:
    argv = cli.normalise_flags(cli.Ppz(), argv)
    direct = cli.bind_command(cli.Ppz(), argv)
    assert isinstance(direct, cli.Action)
    fired = fire_action(argv)
    assert isinstance(fired, cli.Action)
    assert (direct.fn, direct.args) == (fired.fn, fired.args)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["send", "--help"], ["send", "b", "p", "-h"], ["send"], ["send", "b"], ["send", "b", "p", "x"],
    ["send", "b", "--payload", "p"], ["send", "b", "-payload=p"], ["daemon"], ["pipe"], ["nosuch"],
    ["status", "x"], ["send", "--payload=p", "b", "x"],
])
def test_what_does_not_bind_is_left_to_fire(argv: list[str]) -> None:
    assert cli.bind_command(cli.Ppz(), cli.normalise_flags(cli.Ppz(), argv)) is None


def command_methods() -> list[Any]:
    ppz = cli.Ppz()
    methods = []
    for group in (ppz, ppz.daemon, ppz.source, ppz.set, ppz.unset, ppz.get, ppz.pipe):
        methods += [getattr(group, name) for name in dir(group)
                    if not name.startswith("_") and isinstance(getattr(group, name), types.MethodType)]
    return methods


def test_params_agree_with_inspect_signature() -> None:
    import inspect

    methods = command_methods()
    assert len(methods) >= 25
    for fn in methods:
        params = cli.Params(fn)
        sig = inspect.signature(fn).parameters.values()
        assert params.positional == tuple(p.name for p in sig if p.kind is p.POSITIONAL_OR_KEYWORD), fn
        assert params.names == tuple(p.name for p in sig if p.kind is not p.VAR_POSITIONAL), fn
        assert params.defaults == {p.name: p.default for p in sig if p.default is not p.empty}, fn
        assert params.varargs == any(p.kind is p.VAR_POSITIONAL for p in sig), fn


def test_colour_only_on_a_tty_without_no_color(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ppz.render import BOLD_CYAN, DIM, GREEN

    fake.on("Read", Stream({"msg": msg("hi")}))
    fake.on("Who", who_reply())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" not in ppz(capsys, "read", "bob.inbox").out  # capsys is not a TTY
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    out = ppz(capsys, "read", "bob.inbox").out
    assert out.startswith(DIM) and f"{BOLD_CYAN}alice" in out
    assert "\x1b[" not in ppz(capsys, "read", "bob.inbox", "--json").out
    assert f"{GREEN}online" in ppz(capsys, "who").out
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in ppz(capsys, "read", "bob.inbox").out + ppz(capsys, "who").out


@pytest.mark.parametrize("argv", [["send", "bob", "--help"], ["send", "bob", "hi", "-h"],
                                  ["heartbeat", "x", "--once", "--help"]])
def test_help_after_arguments_is_help_on_stdout_exit_0(argv: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "ppz.cli", *argv], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"ppz {argv[0]}" in out.stdout
