"""``ppz read`` and ``ppz reread`` (spec/cli.md §2.8, §2.9) against a fake daemon: rendering,
errors, usage errors, ``--tail`` redials, Ctrl-C and a closed stdout."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    Stream,
    cli_process,
    local,
    msg,
    ppz,
)
from ppz import cli
from ppz.commands import read


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
    monkeypatch.setattr(read, "REDIAL_DELAY", 0.01)
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
    monkeypatch.setattr(read, "REDIAL_DELAY", 0.01)
    monkeypatch.setattr(read, "RECONNECT_EVERY", 0.01)
    monkeypatch.setattr(read, "RECONNECT_FOR", 0.2)

    def then_stop(params: dict[str, Any]) -> Stream:
        fake.stop()  # before the stream ends: the redial finds no daemon
        return Stream({"msg": msg("last")})

    fake.on("Read", then_stop)
    started = time.monotonic()
    r = ppz(capsys, "read", "bob.notes", "--tail")
    assert (r.code, r.out) == (11, "last\n")
    assert r.err == "error: E_DAEMON_NOT_RUNNING: daemon not running; run 'ppz daemon start'\n"
    assert time.monotonic() - started >= 0.2


def stop_then_restart(fake: FakeDaemon, *events: dict[str, Any]) -> Any:
    """A Read reply that stops the daemon, answers ``events`` and starts it again 100 ms later."""
    def restart_later() -> None:
        time.sleep(0.1)
        fake.start()

    def first(params: dict[str, Any]) -> Stream:
        fake.stop()
        threading.Thread(target=restart_later).start()
        return Stream(*events)

    return first


def test_read_tail_reconnects_when_the_daemon_comes_back(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "REDIAL_DELAY", 0.01)
    monkeypatch.setattr(read, "RECONNECT_EVERY", 0.02)
    fake.on("Read", stop_then_restart(fake, {"msg": msg("before")}), Stream({"msg": msg("after")}),
            Stream({"error": {"code": "E_INTERNAL", "message": "x"}}))
    r = ppz(capsys, "read", "bob.notes", "--tail")
    assert (r.code, r.out) == (1, "before\nafter\n")


def test_read_tail_first_dial_without_daemon_is_11_at_once(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.stop()
    r = ppz(capsys, "read", "bob.notes", "--tail")
    assert (r.code, r.out) == (11, "")


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


# --- read --wait and the filters (agents.md §2) ------------------------------------------------


def test_read_wait_and_filters_become_read_fields(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"msg": msg("hi")}))
    r = ppz(capsys, "read", "bob.notes", "--wait=5s", "--from=a,b", "--from", "c", "--subject", "deploy*",
            "--no-acks")
    assert (r.code, r.out) == (0, "hi\n")
    params = fake.params("Read")
    assert len(params) == 1  # a message arrived: no redial
    assert 4000 < params[0].pop("wait_ms") <= 5000
    assert params[0] == {"handle": "bob", "channel": "notes", "follow": False, "head_limit": 10,
                         "from": ["a", "b", "c"], "subject": "deploy*", "no_acks": True, "sender": "",
                         "session": "s1"}


def test_read_wait_alone_has_no_deadline(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"msg": msg("hi")}))
    assert ppz(capsys, "read", "bob.notes", "--wait").code == 0
    assert fake.params("Read")[0]["wait_ms"] == -1


def test_read_wait_that_expires_is_124_with_nothing_on_stdout(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"timeout": True}))
    r = ppz(capsys, "read", "bob.inbox", "--wait=1m")
    assert (r.code, r.out, r.err) == (124, "", "")
    assert len(fake.params("Read")) == 1


def test_read_wait_ended_by_the_daemon_is_redialled_with_the_time_left(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "REDIAL_DELAY", 0.05)
    fake.on("Read", Stream(), Stream(), Stream({"msg": msg("at last")}))  # a swap, a restart, then mail
    r = ppz(capsys, "read", "bob.notes", "--wait=30s")
    assert (r.code, r.out) == (0, "at last\n")
    waits = [p["wait_ms"] for p in fake.params("Read")]
    assert len(waits) == 3
    assert 30000 >= waits[0] > waits[1] > waits[2] > 0  # each redial with what is left, at least 50 ms less


def test_read_wait_whose_time_runs_out_while_redialling_is_124(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "REDIAL_DELAY", 0.05)
    fake.on("Read", Stream())  # every stream ends without a message or a timeout
    r = ppz(capsys, "read", "bob.notes", "--wait=200ms")
    assert (r.code, r.out) == (124, "")
    assert len(fake.params("Read")) >= 2


def test_read_wait_redials_when_the_daemon_comes_back(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "REDIAL_DELAY", 0.01)
    monkeypatch.setattr(read, "RECONNECT_EVERY", 0.02)
    fake.on("Read", stop_then_restart(fake), Stream({"msg": msg("after")}))
    r = ppz(capsys, "read", "bob.notes", "--wait")
    assert (r.code, r.out) == (0, "after\n")
    assert [p["wait_ms"] for p in fake.params("Read")] == [-1, -1]


@pytest.mark.parametrize("args", [["--wait=0"], ["--wait=0s"], ["--wait=soon"], ["--wait=5s", "--tail"],
                                  ["--tail", "--wait"], ["--from="], ["--subject="], ["--no-acks=maybe"]])
def test_read_wait_and_filter_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                           args: list[str]) -> None:
    r = ppz(capsys, "read", "bob.inbox", *args)
    assert (r.code, r.out, fake.requests) == (2, "", [])


def test_filters_work_with_tail_and_reread(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Read", Stream({"msg": msg("x")}), Stream({"error": {"code": "E_INTERNAL", "message": "x"}}))
    assert ppz(capsys, "read", "bob.notes", "--tail", "--from=bob", "--no-acks").code == 1
    assert fake.params("Read")[0] == {"handle": "bob", "channel": "notes", "follow": True, "head_limit": 0,
                                      "from": ["bob"], "no_acks": True, "sender": "", "session": "s1"}
    ppz(capsys, "reread", "bob.notes", "--subject=s?", "-f", "a,b")
    assert fake.params("Read")[2] == {"handle": "bob", "channel": "notes", "all": True, "limit": 10, "skip": 0,
                                      "since_ms": 0, "from": ["a", "b"], "subject": "s?", "sender": "",
                                      "session": "s1"}
