"""The error-code table of spec/ipc.md §5 and server-api.md §1, copied here verbatim."""

from __future__ import annotations

import pytest

from ppz import errors
from ppz.errors import PpzError

# (code, exit status, HTTP status — 500 where the spec lists none —, standard message)
TABLE: list[tuple[str, int, int, str]] = [
    ("E_NOT_LOGGED_IN", 10, 500, "not logged in; run 'ppz login URL --apikey KEY'"),
    ("E_DAEMON_NOT_RUNNING", 11, 500, "daemon not running; run 'ppz daemon start'"),
    ("E_INVALID_API_KEY", 12, 401, "invalid api key"),
    ("E_SOURCE_TAKEN", 13, 409, "source already exists in this account"),
    ("E_SOURCE_NOT_FOUND", 14, 404, "source not found"),
    (
        "E_INVALID_HANDLE",
        15,
        400,
        "invalid handle: must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)",
    ),
    (
        "E_NO_CURRENT_SOURCE",
        16,
        500,
        "no current source; run 'ppz source create HANDLE' or 'ppz set handle HANDLE' "
        "(agents: export PPZ_SESSION=<id> so every subprocess shares one session)",
    ),
    ("E_PAYLOAD_TOO_LARGE", 17, 413, "payload too large; max 64KiB encoded"),
    ("E_SERVER_UNREACHABLE", 18, 502, "server unreachable"),
    (
        "E_NATS_UNREACHABLE",
        19,
        500,
        "nats unreachable; common causes: expired credentials (try 'ppz logout' then log in again), "
        "or a wrong NATS address (set PPZ_NATS_URL=nats://127.0.0.1:4222); if neither fixes it, "
        "run 'ppz diagnostics --bundle' to capture a bug report",
    ),
    (
        "E_INVALID_PIPE",
        20,
        400,
        "invalid pipe; check for typos, or for custom pipes run 'ppz pipe create <handle>.<name>' first",
    ),
    ("E_PIPE_TAKEN", 21, 409, "pipe with this name already exists on this source"),
    ("E_NAME_TAKEN", 21, 409, "name already taken by another resource at this manifold"),
    ("E_PIPE_NOT_FOUND", 22, 404, "pipe not found on this source"),
    (
        "E_INVALID_SUBJECT",
        23,
        400,
        "invalid subject; the 'ack:' prefix is reserved for system-emitted protocol messages",
    ),
    (
        "E_INVALID_MANIFOLD",
        24,
        400,
        "invalid manifold: each dot-separated segment must match [a-z0-9-] "
        "(max 32, no leading/trailing -, not reserved)",
    ),
    (
        "E_DELIVERY_UNCONFIRMED",
        25,
        500,
        "delivery unconfirmed; the message was published but the server did not acknowledge it in "
        "time — it may or may not have landed; retry if your workflow tolerates a possible duplicate",
    ),
    (
        "E_DAEMON_TIMEOUT",
        26,
        500,
        "daemon did not respond in time; it may be busy or stuck — retry, or run 'ppz daemon restart'",
    ),
    ("E_INVALID_PRIORITY", 27, 400, "invalid priority; use high, medium or low (or 1, 2, 3)"),
    (
        "E_CREDENTIAL_TOO_LARGE",
        30,
        500,
        "credential too large: the NATS user JWT exceeds the NATS server's max control line; "
        "logging in again cannot help — raise max_control_line on the NATS server or narrow the "
        "account's grants",
    ),
    ("E_PROTOCOL", 1, 500, "protocol error"),
    ("E_INTERNAL", 1, 500, "daemon internal error"),
    ("E_HTTP", 1, 500, "HTTP error"),
    ("E_NOT_IMPLEMENTED", 1, 500, "not implemented"),
    ("E_INVALID_KIND", 1, 400, "invalid kind: must be message or pty"),
    ("E_NOT_FOUND", 1, 404, "not found"),
    ("E_METHOD_NOT_ALLOWED", 1, 405, "method not allowed"),
]


def test_table_lists_every_code_once() -> None:
    assert sorted(code for code, *_ in TABLE) == sorted(errors.CODES)


@pytest.mark.parametrize(("code", "exit_status", "http", "message"), TABLE)
def test_code_table(code: str, exit_status: int, http: int, message: str) -> None:
    assert getattr(errors, code) == code
    err = PpzError(code)
    assert err.code == code
    assert err.exit_status == exit_status == errors.exit_status(code)
    assert err.http_status == http == errors.http_status(code)
    assert err.message == message == str(err) == errors.standard_message(code)


def test_unknown_code_exits_1_with_http_500() -> None:
    err = PpzError("E_SOMETHING_NEW", "odd")
    assert err.exit_status == 1
    assert err.http_status == 500
    assert str(err) == "odd"


def test_usage_and_success_exit_statuses() -> None:
    assert (errors.EXIT_OK, errors.EXIT_ERROR, errors.EXIT_USAGE) == (0, 1, 2)


def test_exit_28_is_reserved_for_no_code() -> None:
    assert 28 not in {info.exit for info in errors.CODES.values()}


def test_credential_too_large_names_control_line_and_never_suggests_logout() -> None:
    message = PpzError(errors.E_CREDENTIAL_TOO_LARGE).message
    assert "control line" in message
    assert "logout" not in message


@pytest.mark.parametrize(
    ("err", "code", "message"),
    [
        (errors.source_not_found("bob"), "E_SOURCE_NOT_FOUND", "source 'bob' not found"),
        (errors.source_taken("bob"), "E_SOURCE_TAKEN", "source 'bob' already exists in this account"),
        (
            errors.invalid_handle("Bob!"),
            "E_INVALID_HANDLE",
            "invalid handle 'Bob!': must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)",
        ),
        (errors.pipe_not_found("notes", "bob"), "E_PIPE_NOT_FOUND", "pipe 'notes' not found on source 'bob'"),
        (errors.pipe_taken("notes", "bob"), "E_PIPE_TAKEN", "pipe 'notes' already exists on source 'bob'"),
        (
            errors.uncollared_not_found("room", ""),
            "E_PIPE_NOT_FOUND",
            "uncollared pipe 'room' not found at root",
        ),
        (
            errors.uncollared_not_found("room", "team-a.ops"),
            "E_PIPE_NOT_FOUND",
            "uncollared pipe 'room' not found at manifold 'team-a.ops'",
        ),
        (
            errors.uncollared_taken("room", "team-a"),
            "E_PIPE_TAKEN",
            "uncollared pipe 'room' already exists at manifold 'team-a'",
        ),
        (
            errors.name_taken_by_source("room", ""),
            "E_NAME_TAKEN",
            "name 'room' is already taken by source at root",
        ),
        (
            errors.name_taken_by_uncollared("room", ""),
            "E_NAME_TAKEN",
            "name 'room' is already taken by uncollared pipe at root",
        ),
        (
            errors.manifold_reserved_by_source("alice", "alice", ""),
            "E_NAME_TAKEN",
            "manifold path 'alice' is reserved by source 'alice' at root",
        ),
        (
            errors.manifold_used_by_uncollared("team-a.x"),
            "E_NAME_TAKEN",
            "manifold path 'team-a.x' is already used by uncollared pipes",
        ),
        (errors.pipe_name_reserved("inbox"), "E_INVALID_PIPE", "pipe name 'inbox' is reserved"),
        (
            errors.pipe_name_invalid("Bad_Name"),
            "E_INVALID_PIPE",
            "pipe name 'Bad_Name' is invalid: must match [a-z0-9-] (max 32, no leading/trailing -)",
        ),
        (
            errors.namespace_segment_invalid("inbox"),
            "E_INVALID_MANIFOLD",
            "namespace segment invalid: inbox",
        ),
        (
            errors.manifold_segment_invalid("x_y"),
            "E_INVALID_MANIFOLD",
            "manifold segment invalid: x_y",
        ),
        (errors.not_implemented("SubsList"), "E_NOT_IMPLEMENTED", "SubsList not implemented"),
        (errors.invalid_kind("robot"), "E_INVALID_KIND", "invalid kind 'robot': must be message or pty"),
    ],
)
def test_named_entity_messages(err: PpzError, code: str, message: str) -> None:
    assert (err.code, err.message) == (code, message)


def test_to_json_shape() -> None:
    err = errors.source_not_found("bob")
    assert err.to_json() == {"error": {"code": "E_SOURCE_NOT_FOUND", "message": "source 'bob' not found"}}


@pytest.mark.parametrize(("code", "exit_status", "http", "message"), TABLE)
def test_json_round_trip(code: str, exit_status: int, http: int, message: str) -> None:
    back = PpzError.from_json(PpzError(code, "custom text").to_json())
    assert back is not None
    assert (back.code, back.message, back.exit_status) == (code, "custom text", exit_status)


def test_from_json_without_message_uses_the_standard_message() -> None:
    back = PpzError.from_json({"error": {"code": "E_PIPE_NOT_FOUND"}})
    assert back is not None
    assert back.message == "pipe not found on this source"
    back = PpzError.from_json({"error": {"code": "E_PIPE_NOT_FOUND", "message": 7}})
    assert back is not None
    assert back.message == "pipe not found on this source"


def test_from_json_keeps_unknown_codes_and_ignores_extra_fields() -> None:
    back = PpzError.from_json({"error": {"code": "E_FUTURE", "message": "later", "hint": "x"}, "more": 1})
    assert back is not None
    assert (back.code, back.message, back.exit_status) == ("E_FUTURE", "later", 1)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        "error",
        [],
        {},
        {"result": {}},
        {"error": None},
        {"error": "E_INTERNAL"},
        {"error": {}},
        {"error": {"code": ""}},
        {"error": {"code": 17, "message": "x"}},
        {"error": {"message": "no code"}},
    ],
)
def test_from_json_rejects_bad_shapes(obj: object) -> None:
    assert PpzError.from_json(obj) is None


def test_repr_names_code_and_message() -> None:
    assert repr(PpzError("E_INTERNAL")) == "PpzError('E_INTERNAL', 'daemon internal error')"
