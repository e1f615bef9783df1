"""The error-code table of spec/ipc.md §5, shared by the daemon, the CLI and the server.

One exception type, :class:`PpzError`, carries a code and a message. The code decides the
CLI exit status and the server's HTTP status; both tables live here and nowhere else.
"""

from __future__ import annotations

from typing import NamedTuple


class CodeInfo(NamedTuple):
    """Exit status, HTTP status and standard message of one error code.

    A NamedTuple rather than a dataclass: the CLI imports this module on every command and
    ``dataclasses`` costs milliseconds to import.
    """

    exit: int
    http: int | None
    message: str


E_NOT_LOGGED_IN = "E_NOT_LOGGED_IN"
E_DAEMON_NOT_RUNNING = "E_DAEMON_NOT_RUNNING"
E_INVALID_API_KEY = "E_INVALID_API_KEY"
E_SOURCE_TAKEN = "E_SOURCE_TAKEN"
E_SOURCE_NOT_FOUND = "E_SOURCE_NOT_FOUND"
E_INVALID_HANDLE = "E_INVALID_HANDLE"
E_NO_CURRENT_SOURCE = "E_NO_CURRENT_SOURCE"
E_PAYLOAD_TOO_LARGE = "E_PAYLOAD_TOO_LARGE"
E_SERVER_UNREACHABLE = "E_SERVER_UNREACHABLE"
E_NATS_UNREACHABLE = "E_NATS_UNREACHABLE"
E_INVALID_PIPE = "E_INVALID_PIPE"
E_PIPE_TAKEN = "E_PIPE_TAKEN"
E_NAME_TAKEN = "E_NAME_TAKEN"
E_PIPE_NOT_FOUND = "E_PIPE_NOT_FOUND"
E_INVALID_SUBJECT = "E_INVALID_SUBJECT"
E_INVALID_MANIFOLD = "E_INVALID_MANIFOLD"
E_DELIVERY_UNCONFIRMED = "E_DELIVERY_UNCONFIRMED"
E_DAEMON_TIMEOUT = "E_DAEMON_TIMEOUT"
E_INVALID_PRIORITY = "E_INVALID_PRIORITY"
E_CREDENTIAL_TOO_LARGE = "E_CREDENTIAL_TOO_LARGE"
E_PROTOCOL = "E_PROTOCOL"
E_INTERNAL = "E_INTERNAL"
E_HTTP = "E_HTTP"
E_NOT_IMPLEMENTED = "E_NOT_IMPLEMENTED"
E_INVALID_KIND = "E_INVALID_KIND"
# Server-only codes (spec/server-api.md §1).
E_NOT_FOUND = "E_NOT_FOUND"
E_METHOD_NOT_ALLOWED = "E_METHOD_NOT_ALLOWED"

CODES: dict[str, CodeInfo] = {
    E_NOT_LOGGED_IN: CodeInfo(10, None, "not logged in; run 'ppz login URL --apikey KEY'"),
    E_DAEMON_NOT_RUNNING: CodeInfo(11, None, "daemon not running; run 'ppz daemon start'"),
    E_INVALID_API_KEY: CodeInfo(12, 401, "invalid api key"),
    E_SOURCE_TAKEN: CodeInfo(13, 409, "source already exists in this account"),
    E_SOURCE_NOT_FOUND: CodeInfo(14, 404, "source not found"),
    E_INVALID_HANDLE: CodeInfo(
        15, 400, "invalid handle: must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)"
    ),
    E_NO_CURRENT_SOURCE: CodeInfo(
        16,
        None,
        "no current source; run 'ppz source create HANDLE' or 'ppz set handle HANDLE' "
        "(agents: export PPZ_SESSION=<id> so every subprocess shares one session)",
    ),
    E_PAYLOAD_TOO_LARGE: CodeInfo(17, 413, "payload too large; max 64KiB encoded"),
    E_SERVER_UNREACHABLE: CodeInfo(18, 502, "server unreachable"),
    E_NATS_UNREACHABLE: CodeInfo(
        19,
        None,
        "nats unreachable; common causes: expired credentials (try 'ppz logout' then log in again), "
        "or a wrong NATS address (set PPZ_NATS_URL=nats://127.0.0.1:4222); if neither fixes it, "
        "run 'ppz diagnostics --bundle' to capture a bug report",
    ),
    E_INVALID_PIPE: CodeInfo(
        20,
        400,
        "invalid pipe; check for typos, or for custom pipes run 'ppz pipe create <handle>.<name>' first",
    ),
    E_PIPE_TAKEN: CodeInfo(21, 409, "pipe with this name already exists on this source"),
    E_NAME_TAKEN: CodeInfo(21, 409, "name already taken by another resource at this manifold"),
    E_PIPE_NOT_FOUND: CodeInfo(22, 404, "pipe not found on this source"),
    E_INVALID_SUBJECT: CodeInfo(
        23,
        400,
        "invalid subject; the 'ack:' prefix is reserved for system-emitted protocol messages",
    ),
    E_INVALID_MANIFOLD: CodeInfo(
        24,
        400,
        "invalid manifold: each dot-separated segment must match [a-z0-9-] "
        "(max 32, no leading/trailing -, not reserved)",
    ),
    E_DELIVERY_UNCONFIRMED: CodeInfo(
        25,
        None,
        "delivery unconfirmed; the message was published but the server did not acknowledge it in "
        "time — it may or may not have landed; retry if your workflow tolerates a possible duplicate",
    ),
    E_DAEMON_TIMEOUT: CodeInfo(
        26,
        None,
        "daemon did not respond in time; it may be busy or stuck — retry, or run 'ppz daemon restart'",
    ),
    E_INVALID_PRIORITY: CodeInfo(27, 400, "invalid priority; use high, medium or low (or 1, 2, 3)"),
    E_CREDENTIAL_TOO_LARGE: CodeInfo(
        30,
        None,
        "credential too large: the NATS user JWT exceeds the NATS server's max control line; "
        "logging in again cannot help — raise max_control_line on the NATS server or narrow the "
        "account's grants",
    ),
    E_PROTOCOL: CodeInfo(1, None, "protocol error"),
    E_INTERNAL: CodeInfo(1, 500, "daemon internal error"),
    E_HTTP: CodeInfo(1, None, "HTTP error"),
    E_NOT_IMPLEMENTED: CodeInfo(1, None, "not implemented"),
    E_INVALID_KIND: CodeInfo(1, 400, "invalid kind: must be message or pty"),
    E_NOT_FOUND: CodeInfo(1, 404, "not found"),
    E_METHOD_NOT_ALLOWED: CodeInfo(1, 405, "method not allowed"),
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def exit_status(code: str) -> int:
    """CLI exit status for an error code; unknown codes exit 1."""
    info = CODES.get(code)
    return info.exit if info else EXIT_ERROR


def http_status(code: str) -> int:
    """HTTP status for an error code (server-api.md §1); anything not listed is 500."""
    info = CODES.get(code)
    return info.http if info and info.http is not None else 500


def standard_message(code: str) -> str:
    """The standard message for a code, used when no entity name is known."""
    info = CODES.get(code)
    return info.message if info else code


class PpzError(Exception):
    """An error with a spec code. ``str()`` is the message; ``code`` the spec code."""

    def __init__(self, code: str, message: str | None = None) -> None:
        self.code = code
        self.message = message if message is not None else standard_message(code)
        super().__init__(self.message)

    @property
    def exit_status(self) -> int:
        return exit_status(self.code)

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def to_json(self) -> dict[str, dict[str, str]]:
        """The single error envelope shared by IPC replies and the HTTP API."""
        return {"error": {"code": self.code, "message": self.message}}

    @classmethod
    def from_json(cls, obj: object) -> PpzError | None:
        """Decode ``{"error": {"code", "message"}}``; ``None`` when it is not that shape."""
        if not isinstance(obj, dict):
            return None
        err = obj.get("error")
        if not isinstance(err, dict):
            return None
        code = err.get("code")
        if not isinstance(code, str) or not code:
            return None
        message = err.get("message")
        return cls(code, message if isinstance(message, str) else standard_message(code))

    def __repr__(self) -> str:
        return f"PpzError({self.code!r}, {self.message!r})"


def where(manifold: str) -> str:
    """``root`` or ``manifold '<m>'`` as used in entity messages."""
    return f"manifold '{manifold}'" if manifold else "root"


# Messages that name the entity (ipc.md §5).
def source_not_found(handle: str) -> PpzError:
    return PpzError(E_SOURCE_NOT_FOUND, f"source '{handle}' not found")


def source_taken(handle: str) -> PpzError:
    return PpzError(E_SOURCE_TAKEN, f"source '{handle}' already exists in this account")


def invalid_handle(handle: str) -> PpzError:
    return PpzError(
        E_INVALID_HANDLE,
        f"invalid handle '{handle}': must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)",
    )


def pipe_not_found(pipe: str, handle: str) -> PpzError:
    return PpzError(E_PIPE_NOT_FOUND, f"pipe '{pipe}' not found on source '{handle}'")


def pipe_taken(pipe: str, handle: str) -> PpzError:
    return PpzError(E_PIPE_TAKEN, f"pipe '{pipe}' already exists on source '{handle}'")


def uncollared_not_found(pipe: str, manifold: str) -> PpzError:
    return PpzError(E_PIPE_NOT_FOUND, f"uncollared pipe '{pipe}' not found at {where(manifold)}")


def uncollared_taken(pipe: str, manifold: str) -> PpzError:
    return PpzError(E_PIPE_TAKEN, f"uncollared pipe '{pipe}' already exists at {where(manifold)}")


def name_taken_by_source(name: str, manifold: str) -> PpzError:
    return PpzError(E_NAME_TAKEN, f"name '{name}' is already taken by source at {where(manifold)}")


def name_taken_by_uncollared(name: str, manifold: str) -> PpzError:
    return PpzError(E_NAME_TAKEN, f"name '{name}' is already taken by uncollared pipe at {where(manifold)}")


def manifold_reserved_by_source(prefix: str, handle: str, manifold: str) -> PpzError:
    return PpzError(
        E_NAME_TAKEN, f"manifold path '{prefix}' is reserved by source '{handle}' at {where(manifold)}"
    )


def manifold_used_by_uncollared(prefix: str) -> PpzError:
    return PpzError(E_NAME_TAKEN, f"manifold path '{prefix}' is already used by uncollared pipes")


def pipe_name_reserved(pipe: str) -> PpzError:
    return PpzError(E_INVALID_PIPE, f"pipe name '{pipe}' is reserved")


def pipe_name_invalid(pipe: str) -> PpzError:
    return PpzError(
        E_INVALID_PIPE,
        f"pipe name '{pipe}' is invalid: must match [a-z0-9-] (max 32, no leading/trailing -)",
    )


def namespace_segment_invalid(segment: str) -> PpzError:
    return PpzError(E_INVALID_MANIFOLD, f"namespace segment invalid: {segment}")


def manifold_segment_invalid(segment: str) -> PpzError:
    return PpzError(E_INVALID_MANIFOLD, f"manifold segment invalid: {segment}")


def not_implemented(verb: str) -> PpzError:
    return PpzError(E_NOT_IMPLEMENTED, f"{verb} not implemented")


def invalid_kind(kind: str) -> PpzError:
    return PpzError(E_INVALID_KIND, f"invalid kind '{kind}': must be message or pty")
