"""``ppz send`` (spec/cli.md §2.7) against a fake daemon."""

from __future__ import annotations

import pytest

from commands.fakedaemon import (
    SEND_REPLY,
    FakeDaemon,
    ppz,
)
from ppz import errors


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
