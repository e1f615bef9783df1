"""What every command shares as a client of the daemon (spec/cli.md §1): the session id, one
IPC call, errors and output (stdout for results, stderr for the rest), flag values as typed,
targets and the current handle.

Standard library and the stdlib-only ``ppz`` modules only: every command imports this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from ppz import errors, ipc

USAGE_EXIT = 2
BROKEN_PIPE_EXIT = 128 + 13  # as if killed by SIGPIPE, like a shell pipeline expects

INVALID_TARGET = "invalid target '{}': use HANDLE.PIPE or PIPE (uncollared pipes resolve in the current namespace)"


class UsageError(Exception):
    """A usage error: message on stderr, exit 2."""


def fail(err: errors.PpzError) -> NoReturn:
    """Print a coded (or uncoded) error on stderr and exit with its status."""
    if err.code:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
    else:
        print(f"error: {err.message}", file=sys.stderr)
    raise SystemExit(err.exit_status if err.code else 1)


def fail_plain(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def error_text(err: errors.PpzError) -> str:
    """``<CODE>: <message>``, or the message alone for an uncoded error."""
    return f"{err.code}: {err.message}" if err.code else err.message


def session_id() -> str:
    """cli.md §1.3: PPZ_SESSION, else sid-<getsid>, else the tty name, else default."""
    env = os.environ.get("PPZ_SESSION", "")
    if env:
        return env
    try:
        return f"sid-{os.getsid(0)}"
    except OSError:
        pass
    try:
        name = os.ttyname(0)
    except OSError:
        return "default"
    return name.removeprefix("/dev/").replace("/", "-") or "default"


def call(method: str, params: Mapping[str, Any] | None = None, *,
         timeout: float | None = None) -> dict[str, Any]:
    """One normal IPC call; any error is printed and exits (nothing reaches stdout)."""
    try:
        return ipc.call(method, params, timeout=timeout)
    except errors.PpzError as err:
        fail(err)


def colour_enabled(json_output: bool = False) -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and not json_output


def emit(text: str) -> None:
    """Write ``text`` to stdout; characters the stream cannot encode are backslash-escaped."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        encoding = sys.stdout.encoding or "utf-8"
        sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def emit_lines(lines: Iterable[str]) -> None:
    emit("".join(line + "\n" for line in lines))


def warn(message: str) -> None:
    print(message, file=sys.stderr)


# --- argument values (Fire hands every value over as typed) -----------------------------------

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def flag_value(value: Any) -> str:
    """A value flag as typed (Fire hands values over unconverted: ``ppz.commands.fireglue``)."""
    return "" if value is None else str(value)


def flag_on(name: str, value: Any) -> bool:
    """A boolean flag: ``--name`` arrives as ``True`` (``ppz.commands.fireglue.normalise_flags``);
    ``--name=false`` and ``--noname`` turn it off."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"ppz: --{name.replace('_', '-')} takes no value (got {value!r})")


def int_flag(name: str, value: Any, minimum: int = 0) -> int:
    try:
        number = int(str(value), 10)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise UsageError(f"ppz: --{name.replace('_', '-')} must be an integer >= {minimum} (got {value!r})")
    return number


def duration_flag(name: str, value: Any) -> float:
    from ppz.durations import parse_duration

    try:
        seconds = parse_duration(str(value))
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise UsageError(f"ppz: --{name} needs a duration such as 90s, 5m or 1h (got {value!r})")
    return seconds


def output_mode(as_json: Any, raw: Any, bare: Any) -> str:
    """``json``, ``raw``, ``bare`` or "" (the default rendering); at most one may be given."""
    chosen = [name for name, value in (("json", as_json), ("raw", raw), ("bare", bare)) if flag_on(name, value)]
    if len(chosen) > 1:
        raise UsageError("ppz: use at most one of --json, --raw, --bare")
    return chosen[0] if chosen else ""


# --- targets and the current handle (cli.md §1.3, §1.4) -----------------------------------------


def env_handle() -> str:
    return os.environ.get("PPZ_CURRENT_HANDLE", "")


def daemon_handle() -> str:
    """The session's current handle according to the daemon (``Status.current``)."""
    return str(call("Status", {"session": session_id()}).get("current") or "")


def current_handle() -> str:
    """``PPZ_CURRENT_HANDLE``, else ``Status.current``; none → E_NO_CURRENT_SOURCE (exit 16)."""
    handle = env_handle() or daemon_handle()
    if not handle:
        fail(errors.PpzError(errors.E_NO_CURRENT_SOURCE))
    return handle


def parse_target(target: str) -> tuple[str, str]:
    """``HANDLE.PIPE`` → (handle, pipe); ``PIPE`` → ("", pipe). More than one dot or an empty
    part → ``PpzError(E_INVALID_PIPE)``."""
    handle, dot, pipe = target.rpartition(".")
    if "." in handle or not pipe or (dot and not handle):
        raise errors.PpzError(errors.E_INVALID_PIPE, INVALID_TARGET.format(target))
    return handle, pipe


def split_target(target: str) -> tuple[str, str]:
    """:func:`parse_target`; an invalid target prints E_INVALID_PIPE and exits 20."""
    try:
        return parse_target(target)
    except errors.PpzError as err:
        fail(err)
