"""The ``ppz`` command line (spec/cli.md): parse, one IPC call, render, exit code.

Generated with Python Fire. It imports only what a command needs: the standard library,
``fire``, and the stdlib-only ``ppz`` modules (ipc, errors, render, globs, presence, durations;
``home`` only for the commands that manage the daemon). It never imports pykka, nats, requests
or orjson; ``daemon start --foreground`` imports ``bootstrap`` lazily.

Parsing happens in three steps, each for a rule of cli.md §1.1 or §2:

* ``ppz __complete PREFIX`` and the command after ``heartbeat … --`` are split off before Fire
  sees anything (Fire hides ``_``-names and would swallow the command's own flags);
* :func:`normalise_flags` rewrites every known flag to ``--name=value`` (booleans to
  ``--name=True``) so that a boolean flag never eats the next positional argument and a value
  that starts with ``-`` stays a value;
* Fire runs with values kept exactly as typed, and returns an :class:`Action` that runs only
  once every argument was consumed (so an unknown flag is a usage error before any IPC).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from ppz import __version__, errors, ipc

USAGE_EXIT = 2
BROKEN_PIPE_EXIT = 128 + 13  # as if killed by SIGPIPE, like a shell pipeline expects

# read --tail (cli.md §2.8): redial 200 ms after a stream ends without an error; when the daemon
# cannot be reached, retry every second for up to 30 s.
REDIAL_DELAY = 0.2
RECONNECT_EVERY = 1.0
RECONNECT_FOR = 30.0
COMPLETE_DEADLINE = 2.0

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


def user_home() -> str | None:
    """The user's home directory, or None when there is none (``HOME`` empty, or unset with
    no password entry) — the rule of ``ppz.home.resolve_home``."""
    if os.environ.get("HOME") == "":
        return None
    path = os.path.expanduser("~")
    return None if not path or path.startswith("~") else path


def home_root() -> str:
    """``$PPZ_HOME``, else ``~/.ppz``, else ``.ppz``: ``ppz.home.resolve_home`` without importing
    ``ppz.home`` (it costs the messaging commands ~20 ms; a test keeps the two in step)."""
    return os.environ.get("PPZ_HOME") or os.path.join(user_home() or "", ".ppz")


def socket_path() -> str:
    """``$PPZ_IPC_SOCKET``, else ``<home>/daemon.sock`` (``ppz.home.resolve_socket``)."""
    return os.environ.get("PPZ_IPC_SOCKET") or os.path.join(home_root(), "daemon.sock")


def home() -> Any:
    from ppz.home import Home

    return Home.from_env()


def call(method: str, params: Mapping[str, Any] | None = None, *,
         timeout: float | None = None) -> dict[str, Any]:
    """One normal IPC call; any error is printed and exits (nothing reaches stdout)."""
    try:
        return ipc.call(method, params, timeout=timeout, path=socket_path())
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


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def normalise_url(url: str) -> str:
    """cli.md §2.1: keep an explicit scheme; http for local hosts, else https; no trailing /."""
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        hostport = url.split("/", 1)[0]
        if hostport.startswith("["):
            host = hostport[: hostport.find("]") + 1] if "]" in hostport else hostport
        elif hostport.count(":") > 1:
            host = hostport  # a bare IPv6 literal
        else:
            host = hostport.split(":", 1)[0]
        local = host in ("localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]") or "." not in host
        url = ("http://" if local else "https://") + url
    return url.rstrip("/")


# --- argument values (Fire hands every value over as typed) -----------------------------------

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def flag_value(value: Any) -> str:
    """A value flag as typed (Fire hands values over unconverted; see ``_adapt_fire``)."""
    return "" if value is None else str(value)


def flag_on(name: str, value: Any) -> bool:
    """A boolean flag: ``--name`` arrives as ``True`` (see :func:`normalise_flags`);
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


def split_target(target: str) -> tuple[str, str]:
    """``HANDLE.PIPE`` → (handle, pipe); ``PIPE`` → ("", pipe). More than one dot or an empty
    part → E_INVALID_PIPE (exit 20)."""
    handle, dot, pipe = target.rpartition(".")
    if "." in handle or not pipe or (dot and not handle):
        fail(errors.PpzError(errors.E_INVALID_PIPE, INVALID_TARGET.format(target)))
    return handle, pipe


def send_target(target: str) -> dict[str, str]:
    """Send: dotless ``T`` → the uncollared pipe T if it exists, else ``T.inbox``."""
    handle, pipe = split_target(target)
    if not handle:
        return {"handle": pipe, "channel": "inbox", "bare_target": pipe}
    return {"handle": handle, "channel": pipe}


def read_target(target: str) -> dict[str, str]:
    """Read/reread: ``inbox`` → ``<current>.inbox``; dotless → uncollared; ``H.P`` collared."""
    handle, pipe = split_target(target)
    if not handle and pipe == "inbox":
        return {"handle": current_handle(), "channel": "inbox"}
    if not handle:
        return {"bare_target": pipe}
    return {"handle": handle, "channel": pipe}


# --- commands ----------------------------------------------------------------------------------


def cmd_login(url: str, apikey: str | None) -> None:
    if not apikey or apikey in (True, "True"):
        raise UsageError("ppz login: --apikey KEY is required (device login is not supported)")
    from ppz import daemonctl

    h = home()
    try:
        pid, started = daemonctl.ensure_running(h)
    except daemonctl.CtlError as exc:
        fail_plain(str(exc))
    if started:
        print(f"daemon started pid={pid}")
    reply = call("Login", {"url": normalise_url(str(url)), "api_key": str(apikey)})
    print(f"logged in url={reply.get('url', '')} key={reply.get('key_prefix', '')} "
          f"account={reply.get('account_id', '')}")


def cmd_logout() -> None:
    h = home()
    try:
        ipc.call("Logout", {}, path=str(h.socket))
    except errors.PpzError as err:
        if err.code != errors.E_DAEMON_NOT_RUNNING:
            fail(err)
        from ppz import home as home_mod

        problems = home_mod.remove_logout_files(h)
        if problems:
            fail_plain("; ".join(problems))
    print("logged out")


def cmd_status() -> None:
    from ppz.render import render_status

    try:
        reply = ipc.call("Status", {"session": session_id()}, path=socket_path())
    except errors.PpzError as err:
        if err.code == errors.E_DAEMON_NOT_RUNNING:
            print("daemon: not running")
            raise SystemExit(err.exit_status) from None
        fail(err)
    lines = render_status(reply, cli_version=__version__,
                          env_handle=os.environ.get("PPZ_CURRENT_HANDLE", ""), colour=colour_enabled())
    print("\n".join(lines))


def cmd_daemon_start(foreground: bool = False) -> None:
    if foreground:
        from ppz.bootstrap import run_foreground

        raise SystemExit(run_foreground())
    from ppz import daemonctl

    try:
        pid, started = daemonctl.ensure_running(home())
    except daemonctl.CtlError as exc:
        fail_plain(str(exc))
    print(f"daemon started pid={pid}" if started else f"daemon already running pid={pid}")


def cmd_daemon_stop() -> None:
    from ppz import daemonctl

    try:
        pid = daemonctl.stop(home())
    except daemonctl.CtlError as exc:
        fail_plain(str(exc))
    print("daemon not running" if pid is None else f"daemon stopped pid={pid}")


def cmd_daemon_restart() -> None:
    cmd_daemon_stop()
    sys.stdout.flush()
    cmd_daemon_start()


#@@MESSAGING@@


# --- the Fire surface -------------------------------------------------------------------------


class Action:
    """A command to run once Fire has consumed every argument.

    Fire calls a method and only then notices arguments it could not use; returning the work
    instead of doing it lets an unknown flag fail as a usage error before anything happens.
    """

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., None], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def run(self) -> None:
        self.fn(*self.args)


class DaemonCommands:
    """Run and control the per-user daemon."""

    def start(self, foreground: bool = False) -> Action:
        """Start the daemon (in the background unless --foreground)."""
        return Action(cmd_daemon_start, foreground is True or foreground in ("True", "true", "1"))

    def stop(self) -> Action:
        """Stop the running daemon."""
        return Action(cmd_daemon_stop)

    def restart(self) -> Action:
        """Stop, then start the daemon."""
        return Action(cmd_daemon_restart)

    def login(self, url: str, apikey: str | None = None) -> Action:
        """Alias of `ppz login`."""
        return Action(cmd_login, url, apikey)

    def logout(self) -> Action:
        """Alias of `ppz logout`."""
        return Action(cmd_logout)


class Ppz:
    """ppz: pipes for AI agents."""

    def __init__(self) -> None:
        self.daemon = DaemonCommands()

    def login(self, url: str, apikey: str | None = None) -> Action:
        """Log the daemon in: ppz login URL --apikey KEY."""
        return Action(cmd_login, url, apikey)

    def logout(self) -> Action:
        """Log out and forget the credential."""
        return Action(cmd_logout)

    def status(self) -> Action:
        """Show the daemon's state."""
        return Action(cmd_status)


def _adapt_fire(help_requested: bool) -> None:
    """Three adjustments to Fire, each for a rule of spec/cli.md §1.1:

    values stay exactly as typed (Fire would turn ``007`` into 7 and ``[1, 2]`` into a list);
    an :class:`Action` result is run by us rather than printed; ``--help`` goes to stdout
    without a pager.
    """
    import fire.core
    import fire.parser

    fire.parser.DefaultParseValue = lambda value: value
    print_result = fire.core._PrintResult

    def quiet_print_result(component_trace: Any, verbose: bool = False, serialize: Any = None) -> None:
        # An Action is run by run_fire; anything else is an incomplete command (a usage error).
        if help_requested and not isinstance(component_trace.GetResult(), Action):
            print_result(component_trace, verbose=verbose, serialize=serialize)

    fire.core._PrintResult = quiet_print_result
    stream = sys.stdout if help_requested else sys.stderr

    def display(lines: list[str], out: Any = None) -> None:
        stream.write("\n".join(lines) + "\n")

    fire.core.Display = display


def run_fire(component: Any, argv: list[str]) -> None:
    import fire

    help_requested = any(a in ("--help", "-h") for a in argv)
    _adapt_fire(help_requested)
    try:
        result = fire.Fire(component, command=argv, name="ppz")
    except fire.core.FireExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise SystemExit(USAGE_EXIT if code not in (0, USAGE_EXIT) else code) from None
    if isinstance(result, Action):
        result.run()
    elif not help_requested:
        raise UsageError(f"ppz: incomplete command: {' '.join(argv)} (see 'ppz --help')")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        run_fire(Ppz(), args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
