"""The ``ppz`` command line (spec/cli.md): parse, one IPC call, render, exit code.

Generated with Python Fire. It imports only what a command needs: the standard library and
the stdlib-only ``ppz`` modules (ipc, errors, render, globs, presence, durations; ``home`` only
for the commands that manage the daemon); ``fire`` only for help and usage errors. It never
imports pykka, nats, requests or orjson; ``daemon start --foreground`` imports ``bootstrap``
lazily.

Parsing happens in three steps, each for a rule of cli.md §1.1 or §2:

* ``ppz __complete PREFIX`` and the command after ``heartbeat … --`` are split off before Fire
  sees anything (Fire hides ``_``-names and would swallow the command's own flags);
* :func:`normalise_flags` rewrites every known flag to ``--name=value`` (booleans to
  ``--name=True``) so that a boolean flag never eats the next positional argument and a value
  that starts with ``-`` stays a value;
* a complete command whose arguments bind by Fire's rules (:func:`bind_command`) runs
  directly, without importing Fire (its import and parser cost ~25 ms, most of a ``ppz send``);
  anything else (``--help``, an incomplete or unknown command, a missing or surplus argument)
  goes to Fire, run with values kept exactly as typed: it prints the help or the usage error,
  or returns an :class:`Action` that runs only once every argument was consumed.

Fire is imported without ``asyncio`` (:func:`import_fire`), which halves its import time.
"""

from __future__ import annotations

import os
import sys
import time
import types
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


def socket_path() -> str:
    """``$PPZ_IPC_SOCKET``, else ``<home>/daemon.sock`` (:func:`ppz.ipc.socket_path`)."""
    return ipc.socket_path()


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


def emit_lines(lines: Iterable[str]) -> None:
    emit("".join(line + "\n" for line in lines))


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
    if not apikey or apikey is True:
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


# --- send, read, reread (cli.md §2.7–2.9) ------------------------------------------------------

PRIORITIES = {"1": 1, "high": 1, "2": 2, "medium": 2, "med": 2, "3": 3, "low": 3}


def parse_priority(value: Any) -> int:
    """``1``/``high``, ``2``/``medium``/``med``, ``3``/``low`` (any case); not given = 0;
    anything else (``0`` included) → E_INVALID_PRIORITY (exit 27)."""
    if value is None:
        return 0
    priority = PRIORITIES.get(str(value).lower())
    if priority is None:
        fail(errors.PpzError(errors.E_INVALID_PRIORITY))
    return priority


def cmd_send(target: str, payload: str, subject: Any, in_reply_to: Any, request_ack: Any,
             priority: Any) -> None:
    from ppz.render import sent_line

    subject_text = flag_value(subject)
    ack = flag_on("request-ack", request_ack)
    if subject_text.startswith("ack:"):
        fail(errors.PpzError(errors.E_INVALID_SUBJECT))
    level = parse_priority(priority)
    params: dict[str, Any] = {
        **send_target(str(target)),
        "payload": str(payload),
        "msg_subject": subject_text,
        "in_reply_to": flag_value(in_reply_to),
        "ack_requested": ack,
        "priority": level,
        "sender": env_handle(),
        "session": session_id(),
    }
    if ack:
        current_handle()  # --request-ack needs someone to receive the receipt
    reply = call("Send", params)
    print(sent_line(reply, ack), file=sys.stderr)


class ReadView:
    """Renders the events of one Read stream as they arrive (cli.md §2.8)."""

    def __init__(self, params: Mapping[str, Any], mode: str, trailer: bool, flush: bool) -> None:
        from ppz.render import is_tabular

        self.mode = mode
        self.tabular = is_tabular(str(params.get("channel", "")), bool(params.get("bare_target")))
        self.trailer = trailer and not mode
        self.flush = flush
        self.colour = colour_enabled(mode == "json")

    def show(self, events: Iterable[dict[str, Any]]) -> None:
        """Render every event; an ``error`` event is raised by ``ipc.stream`` as PpzError."""
        from ppz.render import more_unread_line, render_message

        for event in events:
            msg = event.get("msg")
            if isinstance(msg, dict):
                emit(render_message(msg, self.mode, self.tabular, self.colour))
                if self.flush:
                    sys.stdout.flush()
            elif "more_unread" in event and self.trailer:
                emit(more_unread_line(event["more_unread"]) + "\n")


def read_stream(params: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    return ipc.stream("Read", params, path=socket_path())


def drain(params: Mapping[str, Any], view: ReadView) -> None:
    try:
        view.show(read_stream(params))
    except errors.PpzError as err:
        sys.stdout.flush()
        fail(err)


def follow(params: Mapping[str, Any], view: ReadView) -> None:
    """``read --tail``: stream until interrupted. A stream that ends without an ``error`` event
    (connection swap, daemon restart) is redialled after 200 ms with the same request — the
    cursor advanced with every message, so nothing repeats. A daemon that cannot be reached is
    retried every second for up to 30 s (only once a stream was open: a first dial that fails
    is ``E_DAEMON_NOT_RUNNING`` at once, like every other command)."""
    opened = False
    give_up_at: float | None = None
    while True:
        try:
            view.show(read_stream(params))
        except errors.PpzError as err:
            sys.stdout.flush()
            now = time.monotonic()
            if err.code != errors.E_DAEMON_NOT_RUNNING or not opened:
                fail(err)
            if give_up_at is None:
                give_up_at = now + RECONNECT_FOR
            if now >= give_up_at:
                fail(err)
            time.sleep(min(RECONNECT_EVERY, give_up_at - now))
            continue
        opened = True
        give_up_at = None
        time.sleep(REDIAL_DELAY)


def cmd_read(target: str, tail: Any, limit: Any, as_json: Any, raw: Any, bare: Any) -> None:
    mode = output_mode(as_json, raw, bare)
    following = flag_on("tail", tail)
    if following and limit is not None:
        raise UsageError("ppz read: --limit cannot be combined with --tail")
    head_limit = 0 if following else (10 if limit is None else int_flag("limit", limit))
    params: dict[str, Any] = {
        **read_target(str(target)),
        "follow": following,
        "head_limit": head_limit,
        "sender": env_handle(),
        "session": session_id(),
    }
    view = ReadView(params, mode, trailer=True, flush=following)
    if not following:
        drain(params, view)
        return
    try:
        follow(params, view)
    except KeyboardInterrupt:
        raise SystemExit(0) from None


def cmd_reread(target: str, limit: Any, skip: Any, since: Any, as_json: Any, raw: Any, bare: Any) -> None:
    mode = output_mode(as_json, raw, bare)
    window = {
        "limit": 10 if limit is None else int_flag("limit", limit),
        "skip": 0 if skip is None else int_flag("skip", skip),
        "since_ms": 0 if since is None else round(duration_flag("since", since) * 1000),
    }
    params: dict[str, Any] = {
        **read_target(str(target)),
        "all": True,
        **window,
        "sender": env_handle(),
        "session": session_id(),
    }
    drain(params, ReadView(params, mode, trailer=False, flush=False))


# --- ls (cli.md §2.10) ----------------------------------------------------------------------------


def cmd_ls(patterns: Sequence[str], as_json: Any, long: Any, watch: Any) -> None:
    from ppz.render import indented_json, ls_warnings, render_ls

    pats = [str(p) for p in patterns]
    with_long = flag_on("long", long)
    params = {"session": session_id(), "patterns": pats, "long": with_long}
    if flag_on("watch", watch):
        try:
            reply = ipc.call_wait("ListWatch", params, path=socket_path())
        except errors.PpzError as err:
            fail(err)
        except KeyboardInterrupt:
            raise SystemExit(0) from None
    else:
        reply = call("List", params)
    if flag_on("json", as_json):
        emit_lines([indented_json(reply)])
    else:
        emit_lines(render_ls(reply, with_long))
    for warning in ls_warnings(pats, reply):
        warn(warning)


# --- sources (cli.md §2.11) -------------------------------------------------------------------------


def cmd_source_create(handle: str) -> None:
    reply = call("Create", {"handle": str(handle), "kind": "message", "session": session_id()})
    print(f"created handle={reply.get('handle', handle)} subject={reply.get('subject', '')}")


def destroy_source(handle: str) -> None:
    from ppz.render import qualified

    reply = call("SourceDestroy", {"handle": handle, "session": session_id()})
    print(f"destroyed source={qualified(reply.get('manifold'), reply.get('handle') or handle)}")
    sys.stdout.flush()


def destroy_pipe(handle: str, name: str) -> None:
    from ppz.render import pipe_path

    reply = call("PipeDestroy", {"handle": handle, "name": name, "session": session_id()})
    print(f"destroyed pipe={pipe_path({'handle': handle, 'name': name, **reply})}")
    sys.stdout.flush()


def glob_destroy_matches(pattern: str, reply: Mapping[str, Any]) -> list[str]:
    """What ``source destroy PATTERN`` (a glob) destroys, sorted: source handles for a dotless
    pattern; ``<handle>.<pipe>`` of pipes that are not auto-provisioned for a dotted one."""
    from ppz.globs import glob_match
    from ppz.names import AUTO_PROVISIONED

    names = set()
    for source in reply.get("sources") or ():
        handle = str(source.get("handle", ""))
        if "." not in pattern:
            names.add(handle)
            continue
        pipes = {str(p) for p in source.get("pipes") or ()}
        pipes |= {str(i.get("pipe", "")) for i in source.get("pipe_infos") or ()}
        names |= {f"{handle}.{p}" for p in pipes if p and p not in AUTO_PROVISIONED}
    return sorted(n for n in names if glob_match(pattern, n))


def cmd_source_destroy(pattern: str) -> None:
    from ppz.globs import is_literal

    pattern = str(pattern)
    dotted = "." in pattern
    if is_literal(pattern):
        handle, dot, pipe = pattern.partition(".")
        if not dot:
            destroy_source(handle)
            return
        if not handle or not pipe or "." in pipe:
            fail(errors.PpzError(errors.E_INVALID_PIPE, f"invalid target '{pattern}': use HANDLE or HANDLE.PIPE"))
        destroy_pipe(handle, pipe)
        return
    matches = glob_destroy_matches(pattern, call("List", {}))
    if not matches:
        if dotted:
            fail(errors.PpzError(errors.E_PIPE_NOT_FOUND, f"no pipe matches '{pattern}'"))
        fail(errors.PpzError(errors.E_SOURCE_NOT_FOUND, f"no source matches '{pattern}'"))
    for name in matches:
        if dotted:
            handle, _, pipe = name.partition(".")
            destroy_pipe(handle, pipe)
        else:
            destroy_source(name)


# --- handle and namespace (cli.md §2.12) -------------------------------------------------------------


def warn_env_override(other: str) -> None:
    env = env_handle()
    if env and other and env != other:
        warn(f"warning: PPZ_CURRENT_HANDLE={env} overrides the current source in this shell")


def cmd_set_handle(handle: str) -> None:
    reply = call("Switch", {"handle": str(handle), "session": session_id()})
    new = str(reply.get("handle") or handle)
    print(f"handle={new}")
    warn_env_override(new)


def cmd_get_handle() -> None:
    env = env_handle()
    if env:
        try:
            reply = ipc.call("Status", {"session": session_id()}, path=socket_path())
        except errors.PpzError:
            reply = {}  # the variable answers on its own; the daemon only adds the warning
        print(env)
        warn_env_override(str(reply.get("current") or ""))
        return
    handle = daemon_handle()
    if not handle:
        raise SystemExit(1)
    print(handle)


def cmd_unset_handle() -> None:
    call("Disconnect", {"session": session_id()})
    print("unset")


def cmd_set_namespace(path: str) -> None:
    reply = call("SetNamespace", {"namespace": str(path), "session": session_id()})
    print(f"namespace={reply.get('namespace', path)}")


def cmd_unset_namespace() -> None:
    call("UnsetNamespace", {"session": session_id()})
    print("unset")


# --- pipes (cli.md §2.13) -----------------------------------------------------------------------------


def pipe_name(name: str) -> tuple[str, str]:
    """``[H.]NAME`` → (handle or "", name)."""
    return split_target(str(name))


def retention_params(ttl: Any, max_msgs: Any, max_bytes: Any) -> dict[str, int]:
    """Only the retention fields whose flag was given (``--ttl`` in whole seconds; -1 allowed
    for the integers)."""
    params: dict[str, int] = {}
    if ttl is not None:
        params["ttl_seconds"] = int(duration_flag("ttl", ttl))
    if max_msgs is not None:
        params["max_msgs"] = int_flag("max_msgs", max_msgs, minimum=-1)
    if max_bytes is not None:
        params["max_bytes"] = int_flag("max_bytes", max_bytes, minimum=-1)
    return params


def cmd_pipe_write(verb: str, name: str, ttl: Any, max_msgs: Any, max_bytes: Any) -> None:
    """``pipe create`` (``PipeCreate``) and ``pipe set`` (``PipeSet``)."""
    from ppz.render import pipe_path, retention_text

    retention = retention_params(ttl, max_msgs, max_bytes)
    if verb == "PipeSet" and not retention:
        fail(errors.PpzError(errors.E_INVALID_PIPE, "pipe set: name at least one of --ttl, --max-msgs, --max-bytes"))
    handle, pipe = pipe_name(name)
    reply = call(verb, {"handle": handle, "name": pipe, **retention, "session": session_id()})
    done = "created" if verb == "PipeCreate" else "updated"
    print(f"{done} pipe={pipe_path({'handle': handle, 'name': pipe, **reply})} {retention_text(reply)}")


def cmd_pipe_destroy(name: str, recursive: Any) -> None:
    handle, pipe = pipe_name(name)
    if flag_on("recursive", recursive) and not handle:
        destroy_source(pipe)
    else:
        destroy_pipe(handle, pipe)


# --- completion (cli.md §2.14) -------------------------------------------------------------------------

COMMAND_NAMES = ("completion daemon diagnostics get heartbeat login logout ls pipe read reread send set "
                 "source status unset who")

BASH_COMPLETION = """# ppz bash completion. Load it with:  source <(ppz completion bash)
_ppz_words() {
    COMPREPLY=($(compgen -W "$1" -- "${COMP_WORDS[COMP_CWORD]}"))
}

_ppz_targets() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=($(compgen -W "$(ppz __complete "$cur" 2>/dev/null)" -- "$cur"))
}

_ppz() {
    local n=$COMP_CWORD cmd=${COMP_WORDS[1]} sub=${COMP_WORDS[2]}
    COMPREPLY=()
    case "${COMP_WORDS[COMP_CWORD]}" in -*) return ;; esac
    if [ "$n" -eq 1 ]; then _ppz_words "@COMMANDS@"; return; fi
    case "$cmd" in
        send|read|reread) [ "$n" -eq 2 ] && _ppz_targets ;;
        ls) _ppz_targets ;;
        daemon) [ "$n" -eq 2 ] && _ppz_words "start stop restart login logout" ;;
        completion) [ "$n" -eq 2 ] && _ppz_words "bash zsh" ;;
        get) [ "$n" -eq 2 ] && _ppz_words "handle" ;;
        unset) [ "$n" -eq 2 ] && _ppz_words "handle namespace" ;;
        source)
            if [ "$n" -eq 2 ]; then _ppz_words "create destroy"
            elif [ "$n" -eq 3 ] && [ "$sub" = destroy ]; then _ppz_targets; fi ;;
        set)
            if [ "$n" -eq 2 ]; then _ppz_words "handle namespace"
            elif [ "$n" -eq 3 ] && [ "$sub" = handle ]; then _ppz_targets; fi ;;
        pipe)
            if [ "$n" -eq 2 ]; then _ppz_words "create set destroy"
            elif [ "$n" -eq 3 ]; then _ppz_targets; fi ;;
    esac
}

complete -o default -F _ppz ppz
"""

ZSH_COMPLETION = """#compdef ppz
# ppz zsh completion. Load it with:  source <(ppz completion zsh)
_ppz_targets() {
    local -a targets
    targets=(${(f)"$(ppz __complete "$PREFIX" 2>/dev/null)"})
    compadd -a targets
}

_ppz() {
    local n=$CURRENT cmd=${words[2]} sub=${words[3]}
    [[ $PREFIX == -* ]] && return
    if (( n == 2 )); then compadd -- @COMMANDS@; return; fi
    case $cmd in
        send|read|reread) (( n == 3 )) && _ppz_targets ;;
        ls) _ppz_targets ;;
        daemon) (( n == 3 )) && compadd -- start stop restart login logout ;;
        completion) (( n == 3 )) && compadd -- bash zsh ;;
        get) (( n == 3 )) && compadd -- handle ;;
        unset) (( n == 3 )) && compadd -- handle namespace ;;
        source)
            if (( n == 3 )); then compadd -- create destroy
            elif (( n == 4 )) && [[ $sub == destroy ]]; then _ppz_targets; fi ;;
        set)
            if (( n == 3 )); then compadd -- handle namespace
            elif (( n == 4 )) && [[ $sub == handle ]]; then _ppz_targets; fi ;;
        pipe)
            if (( n == 3 )); then compadd -- create set destroy
            elif (( n == 4 )); then _ppz_targets; fi ;;
    esac
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _ppz "$@"
else
    compdef _ppz ppz
fi
"""


def completion_script(shell: str) -> str:
    """The completion script: command names from a fixed list, targets from ``ppz __complete``."""
    script = BASH_COMPLETION if shell == "bash" else ZSH_COMPLETION
    return script.replace("@COMMANDS@", COMMAND_NAMES)


def cmd_completion(shell: str) -> None:
    if shell not in ("bash", "zsh"):
        raise UsageError(f"ppz completion: unsupported shell '{shell}' (use bash or zsh)")
    emit(completion_script(shell))


def cmd_complete(prefix: str) -> None:
    """The hidden ``ppz __complete PREFIX``: handles and ``<handle>.<pipe>`` names starting with
    PREFIX, sorted, one per line. Any failure prints nothing (exit 0)."""
    try:
        reply = ipc.call("Complete", {}, timeout=COMPLETE_DEADLINE, path=socket_path())
        names = set()
        for source in reply.get("sources") or ():
            handle = str(source["handle"])
            names.add(handle)
            names.update(f"{handle}.{pipe}" for pipe in source.get("pipes") or ())
        emit_lines(sorted(n for n in names if n.startswith(prefix)))
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - completion must never print an error
        return


# --- who (cli.md §2.6) ------------------------------------------------------------------------------------


def cmd_who(as_json: Any, online: Any, stale: Any, offline: Any, harness: Any, owner: Any) -> None:
    from ppz.render import filter_who, indented_json, render_who, who_entries

    wanted = [name for name, value in (("online", online), ("stale", stale), ("offline", offline))
              if flag_on(name, value)]
    json_output = flag_on("json", as_json)
    entries = filter_who(who_entries(call("Who", {})), wanted,
                         None if harness is None else str(harness), None if owner is None else str(owner))
    if json_output:
        emit_lines([indented_json(entries)])
    else:
        emit_lines(render_who(entries, colour_enabled()))


# --- diagnostics (cli.md §2.5) ------------------------------------------------------------------------

BUNDLE_LOGS = ("nats-events.jsonl", "nats-events.jsonl.1", "nats-events.jsonl.2",
               "diagnostics-lifecycle.jsonl", "daemon.pid")


def diag_params(since: Any) -> dict[str, Any]:
    if since is None:
        return {}
    return {"since_unix": int(time.time() - duration_flag("since", since))}


def cmd_diagnostics(as_json: Any, since: Any, bundle: Any) -> None:
    from ppz.render import indented_json, render_diagnostics

    params = diag_params(since)
    if flag_on("bundle", bundle):
        write_bundle(params)
        return
    reply = call("Diag", params)
    if flag_on("json", as_json):
        emit_lines([indented_json(reply)])
    else:
        emit_lines(render_diagnostics(reply, "" if since is None else str(since)))


class Bundle:
    """The members of a diagnostics bundle and its MANIFEST (``+ name`` / ``- name (reason)``)."""

    def __init__(self) -> None:
        self.members: list[tuple[str, bytes]] = []
        self.manifest: list[str] = []

    def add(self, name: str, data: bytes) -> None:
        self.members.append((name, data))
        self.manifest.append(f"+ {name}")

    def missing(self, name: str, reason: str) -> None:
        self.manifest.append(f"- {name} ({reason})")


def _daemon_reply(method: str, params: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A best-effort call: (reply, "") or (None, why it is missing)."""
    try:
        return ipc.call(method, params, path=socket_path()), ""
    except errors.PpzError as err:
        return None, "daemon not running" if err.code == errors.E_DAEMON_NOT_RUNNING else error_text(err)


def bundle_contents(params: Mapping[str, Any], root: str) -> Bundle:
    """Everything ``diagnostics --bundle`` collects; never credentials, current.json or cursors."""
    import platform
    import subprocess

    from ppz.render import indented_json

    bundle = Bundle()
    for name in BUNDLE_LOGS:
        try:
            with open(os.path.join(root, name), "rb") as f:
                bundle.add(name, f.read())
        except FileNotFoundError:
            bundle.missing(name, "not found")
        except OSError as exc:
            bundle.missing(name, exc.strerror or str(exc))
    reply, why = _daemon_reply("Diag", params)
    if reply is None:
        bundle.missing("diagnostics.json", why)
    else:
        bundle.add("diagnostics.json", (indented_json(reply) + "\n").encode())
    status, why = _daemon_reply("Status", {"session": session_id()})
    daemon_version = (str(status.get("daemon_version") or "unknown")) if status is not None else f"unknown ({why})"
    bundle.add("version.txt", f"cli: {__version__}\ndaemon: {daemon_version}\n".encode())
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, timeout=5, check=True)
        bundle.add("uname.txt", uname.stdout)
    except (OSError, subprocess.SubprocessError) as exc:
        bundle.missing("uname.txt", str(exc))
    bundle.add("platform.txt", (f"python: {platform.python_version()}\nos: {platform.system()}\n"
                                f"arch: {platform.machine()}\nplatform: {platform.platform()}\n").encode())
    return bundle


def write_bundle(params: Mapping[str, Any]) -> None:
    """``diagnostics --bundle``: ``~/ppz-diag-<YYYYmmdd-HHMMSS>.tgz`` (the current directory
    without a home); prints its absolute path. Works without a daemon."""
    import io
    import tarfile

    bundle = bundle_contents(params, ipc.home_dir())
    bundle.add("MANIFEST", ("\n".join([*bundle.manifest, "+ MANIFEST"]) + "\n").encode())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.abspath(os.path.join(ipc.user_home() or os.getcwd(), f"ppz-diag-{stamp}.tgz"))
    now = time.time()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            for name, data in bundle.members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        fail_plain(f"diagnostics bundle: cannot write {path}: {exc.strerror or exc}")
    print(path)


# --- heartbeat (cli.md §2.15) -----------------------------------------------------------------------------

AGENT_STATES = ("", "idle", "working")
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
           "i686": "386", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64"}


def host_facts() -> dict[str, str]:
    """``hostname``, ``os`` and ``arch`` as Go-style tokens (``linux``/``amd64``)."""
    uname = os.uname()
    machine = uname.machine.lower()
    return {"hostname": uname.nodename, "os": uname.sysname.lower(), "arch": _ARCHES.get(machine, machine)}


class Heartbeat:
    """Publishes the presence beats of one handle (payload of nats.md §10)."""

    def __init__(self, handle: str, interval: int, state: str, harness: str, model: str) -> None:
        from ppz.timestamps import format_rfc3339

        self.handle = handle
        self.interval = interval
        self.session = session_id()
        self.seq = 0
        self.ensured = False
        self.child_pid = 0
        self.fixed = {"harness": harness, "harness_source": "env" if harness else "", "agent_state": state,
                      "model": model, **host_facts(), "pid": os.getpid(), "ppz_version": __version__,
                      "started_at": format_rfc3339(time.time())}

    def _call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return ipc.call(method, {**params, "session": self.session}, path=socket_path())

    def ensure(self) -> None:
        """``EnsurePTY``, or ``Create`` a pty source when the handle does not exist yet."""
        try:
            self._call("EnsurePTY", {"handle": self.handle})
        except errors.PpzError as err:
            if err.code != errors.E_SOURCE_NOT_FOUND:
                raise
            self._call("Create", {"handle": self.handle, "kind": "pty"})
        self.ensured = True

    def payload(self) -> str:
        import json

        from ppz.timestamps import format_rfc3339

        self.seq += 1
        beat = {"ts": format_rfc3339(time.time()), "seq": self.seq, **self.fixed, "child_pid": self.child_pid,
                "interval_sec": self.interval}
        return json.dumps(beat, separators=(",", ":"))

    def beat(self) -> None:
        """One beat; raises PpzError."""
        if not self.ensured:
            self.ensure()
        self._call("Send", {"handle": self.handle, "channel": "heartbeat", "payload": self.payload()})

    def beat_or_warn(self) -> None:
        try:
            self.beat()
        except errors.PpzError as err:
            warn(f"warning: heartbeat failed: {error_text(err)}")

    def run(self, stop: Any) -> None:
        """Beat now and then every interval until ``stop`` (a threading.Event) is set."""
        due = time.monotonic()
        while True:
            self.beat_or_warn()
            due = max(due + self.interval, time.monotonic())
            if stop.wait(due - time.monotonic()):
                return


def cmd_heartbeat(handle: str, interval: Any, state: Any, harness: Any, model: Any, once: Any,
                  command: Sequence[str] | None) -> None:
    seconds = 60 if interval is None else max(int(duration_flag("interval", interval)), 1)
    agent_state = flag_value(state)
    if agent_state not in AGENT_STATES:
        raise UsageError(f"ppz heartbeat: --state must be idle or working (got {agent_state!r})")
    one = flag_on("once", once)
    if one and command:
        raise UsageError("ppz heartbeat: --once cannot be combined with a command")
    hb = Heartbeat(str(handle), seconds, agent_state,
                   os.environ.get("PPZ_AGENT_HARNESS", "") if harness is None else str(harness),
                   os.environ.get("PPZ_AGENT_MODEL", "") if model is None else str(model))
    if one:
        try:
            hb.beat()
        except errors.PpzError as err:
            fail(err)
        return
    if command:
        raise SystemExit(run_wrapped(hb, list(command)))
    beat_until_signalled(hb)


def beat_until_signalled(hb: Heartbeat) -> None:
    import signal
    import threading

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    hb.run(stop)


def run_wrapped(hb: Heartbeat, command: list[str]) -> int:
    """Run COMMAND with inherited stdio while beating in the background; its exit status
    (128 + N when killed by signal N). SIGINT/SIGTERM are passed on to it."""
    import signal
    import subprocess
    import threading

    env = {**os.environ, "PPZ_SESSION": hb.handle, "PPZ_CURRENT_HANDLE": hb.handle}
    children: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # signals that arrived before the command started

    def forward(signum: int, frame: Any) -> None:
        if not children:
            pending.append(signum)
        elif children[0].poll() is None:
            children[0].send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        warn(f"error: heartbeat: cannot run {command[0]!r}: {exc.strerror or exc}")
        return 126 if isinstance(exc, PermissionError) else 127
    children.append(child)
    for signum in pending:
        child.send_signal(signum)
    hb.child_pid = child.pid
    stop = threading.Event()
    threading.Thread(target=hb.run, args=(stop,), name="heartbeat", daemon=True).start()
    code = child.wait()
    stop.set()
    return 128 - code if code < 0 else code


# --- the Fire surface -------------------------------------------------------------------------


class Action:
    """A command to run once every argument was consumed (by :func:`bind_command` or Fire).

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

    def start(self, *, foreground: bool = False) -> Action:
        """Start the daemon (in the background unless --foreground)."""
        return Action(cmd_daemon_start, flag_on("foreground", foreground))

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


class SourceCommands:
    """Create and destroy sources (handles)."""

    def create(self, handle: str) -> Action:
        """Create a message source and make it this session's current handle."""
        return Action(cmd_source_create, handle)

    def destroy(self, pattern: str) -> Action:
        """Destroy a source (HANDLE), a pipe (HANDLE.PIPE), or every match of a glob (* ? [..] %)."""
        return Action(cmd_source_destroy, pattern)


class SetCommands:
    """Set this session's current handle or namespace."""

    def handle(self, handle: str) -> Action:
        """Use an existing source as this session's current handle."""
        return Action(cmd_set_handle, handle)

    def namespace(self, path: str) -> Action:
        """Set this session's namespace (dot-separated segments)."""
        return Action(cmd_set_namespace, path)


class UnsetCommands:
    """Clear this session's current handle or namespace."""

    def handle(self) -> Action:
        """Forget this session's current handle."""
        return Action(cmd_unset_handle)

    def namespace(self) -> Action:
        """Go back to the root namespace."""
        return Action(cmd_unset_namespace)


class GetCommands:
    """Show this session's settings."""

    def handle(self) -> Action:
        """Print the current handle (PPZ_CURRENT_HANDLE first); exit 1 when there is none."""
        return Action(cmd_get_handle)


class PipeCommands:
    """Create, tune and destroy pipes ([HANDLE.]NAME; no handle = uncollared)."""

    def create(self, name: str, *, ttl: str | None = None, max_msgs: str | None = None,
               max_bytes: str | None = None) -> Action:
        """Create a pipe, optionally with retention (--ttl=DUR, --max-msgs=N, --max-bytes=N)."""
        return Action(cmd_pipe_write, "PipeCreate", name, ttl, max_msgs, max_bytes)

    def set(self, name: str, *, ttl: str | None = None, max_msgs: str | None = None,
            max_bytes: str | None = None) -> Action:
        """Change a pipe's retention (at least one of --ttl, --max-msgs, --max-bytes)."""
        return Action(cmd_pipe_write, "PipeSet", name, ttl, max_msgs, max_bytes)

    def destroy(self, name: str, *, recursive: bool = False) -> Action:
        """Destroy a pipe; with --recursive and a bare NAME, the whole source NAME."""
        return Action(cmd_pipe_destroy, name, recursive)


class Ppz:
    """ppz: pipes for AI agents."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.daemon = DaemonCommands()
        self.source = SourceCommands()
        self.set = SetCommands()
        self.unset = UnsetCommands()
        self.get = GetCommands()
        self.pipe = PipeCommands()
        self.__command = command  # heartbeat's COMMAND (split off before Fire)

    def login(self, url: str, apikey: str | None = None) -> Action:
        """Log the daemon in: ppz login URL --apikey KEY."""
        return Action(cmd_login, url, apikey)

    def logout(self) -> Action:
        """Log out and forget the credential."""
        return Action(cmd_logout)

    def status(self) -> Action:
        """Show the daemon's state."""
        return Action(cmd_status)

    def send(self, target: str, payload: str, *, subject: str | None = None, in_reply_to: str | None = None,
             request_ack: bool = False, priority: str | None = None) -> Action:
        """Send PAYLOAD to TARGET (HANDLE.PIPE, or a bare name: uncollared pipe, else NAME.inbox)."""
        return Action(cmd_send, target, payload, subject, in_reply_to, request_ack, priority)

    def read(self, target: str, *, tail: bool = False, limit: str | None = None, json: bool = False,
             raw: bool = False, bare: bool = False) -> Action:
        """Read unread messages of TARGET (inbox = your own); --tail keeps streaming."""
        return Action(cmd_read, target, tail, limit, json, raw, bare)

    def reread(self, target: str, *, limit: str | None = None, skip: str | None = None, since: str | None = None,
               json: bool = False, raw: bool = False, bare: bool = False) -> Action:
        """Show retained messages of TARGET again (the last 10 by default) without moving cursors."""
        return Action(cmd_reread, target, limit, skip, since, json, raw, bare)

    def ls(self, *patterns: str, json: bool = False, long: bool = False, watch: bool = False) -> Action:
        """List pipes (optionally matching globs: * ? [..] %); --watch waits for unread messages."""
        return Action(cmd_ls, patterns, json, long, watch)

    def who(self, *, json: bool = False, online: bool = False, stale: bool = False, offline: bool = False,
            harness: str | None = None, owner: str | None = None) -> Action:
        """Show presence: who is online, stale or offline."""
        return Action(cmd_who, json, online, stale, offline, harness, owner)

    def diagnostics(self, *, json: bool = False, since: str | None = None, bundle: bool = False) -> Action:
        """Show the NATS connection's health; --bundle writes a tarball for a bug report."""
        return Action(cmd_diagnostics, json, since, bundle)

    def heartbeat(self, handle: str, *, interval: str | None = None, state: str | None = None,
                  harness: str | None = None, model: str | None = None, once: bool = False) -> Action:
        """Publish presence for HANDLE (every --interval, default 60s); -- COMMAND... wraps a command."""
        return Action(cmd_heartbeat, handle, interval, state, harness, model, once, self.__command)

    def completion(self, shell: str) -> Action:
        """Print a completion script: ppz completion bash|zsh."""
        return Action(cmd_completion, shell)


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


class _Deferred(types.ModuleType):
    """Stands in for a module that Fire imports but never needs here (``asyncio``: ~50 ms,
    with ``ssl``). The first attribute access imports the real module and delegates to it."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        import importlib

        return getattr(importlib.import_module(self.__name__), name)


def import_fire() -> Any:
    """``fire``, imported without ``asyncio``. Fire only uses asyncio for coroutine commands,
    which this CLI has none of; the stand-in leaves ``sys.modules`` once Fire is loaded, so a
    later ``import asyncio`` (``daemon start --foreground``) gets the real module."""
    deferred = None
    if "asyncio" not in sys.modules:
        deferred = sys.modules["asyncio"] = _Deferred("asyncio")
    try:
        import fire
        import fire.inspectutils
    finally:
        if deferred is not None and sys.modules.get("asyncio") is deferred:
            del sys.modules["asyncio"]
    import inspect

    fire.inspectutils.IsCoroutineFunction = inspect.iscoroutinefunction
    return fire


def _is_flag(token: str) -> bool:
    """Fire's notion of a flag: ``--x``, or ``-`` followed by a letter (``-5`` is a value)."""
    return token.startswith("--") or (len(token) > 1 and token[0] == "-" and token[1].isalpha())


_CO_VARARGS = 0x04  # inspect.CO_VARARGS, without importing inspect (~4 ms with ast and dis)


class Params:
    """The parameters of a command method as Fire sees them (``self`` left out), read from its
    code object rather than with ``inspect.signature``: ``positional`` (in order), ``names``
    (every parameter a flag can set: the positional ones and the keyword-only ones),
    ``defaults`` (by name) and ``varargs`` (whether ``*args`` takes the remaining arguments)."""

    __slots__ = ("positional", "names", "defaults", "varargs")

    def __init__(self, fn: Callable[..., Any]) -> None:
        func = getattr(fn, "__func__", fn)
        code = func.__code__
        count = code.co_argcount
        every = code.co_varnames[: count + code.co_kwonlyargcount]
        first = 1 if hasattr(fn, "__self__") else 0
        pos_defaults = func.__defaults__ or ()
        self.positional: tuple[str, ...] = every[first:count]
        self.names: tuple[str, ...] = every[first:]
        self.defaults: dict[str, Any] = dict(zip(every[count - len(pos_defaults) : count], pos_defaults, strict=True))
        self.defaults.update(func.__kwdefaults__ or {})
        self.varargs = bool(code.co_flags & _CO_VARARGS)


def resolve_command(component: Any, argv: Sequence[str]) -> tuple[Callable[..., Any] | None, int]:
    """The method an argv names (following command groups) and how many tokens name it."""
    obj = component
    for i, token in enumerate(argv):
        if token.startswith("_") or _is_flag(token):
            break
        attr = getattr(obj, token, None)
        if attr is None:
            break
        if callable(attr):
            return attr, i + 1
        obj = attr
    return None, 0


def normalise_flags(component: Any, argv: list[str]) -> list[str]:
    """Rewrite the known flags of the command ``argv`` names so that Fire cannot misread them:

    ``--flag`` of a boolean → ``--flag=True`` (Fire would otherwise take the next positional
    argument as its value); ``--flag VALUE`` → ``--flag=VALUE`` (so a value such as ``-x`` or
    ``--`` stays a value); a value flag without a value is a usage error. Hyphens and
    underscores are equivalent; ``-l`` style short forms resolve as Fire does (a unique prefix
    letter). An unknown flag is a usage error.
    """
    fn, start = resolve_command(component, argv)
    if fn is None:
        return argv
    params = Params(fn)
    bools = {name for name, default in params.defaults.items() if default is False}
    values = set(params.defaults) - bools
    names = params.names
    out = list(argv[:start])
    i = start
    while i < len(argv):
        token = argv[i]
        i += 1
        if not _is_flag(token) or token in ("-h", "--help"):
            out.append(token)
            continue
        key, eq, value = token.lstrip("-").partition("=")
        name = key.replace("-", "_")
        if len(key) == 1 and not token.startswith("--"):
            candidates = [n for n in names if n.startswith(key)]
            name = candidates[0] if len(candidates) == 1 else name
        if name in bools:
            out.append(f"--{name}={value if eq else 'True'}")
        elif name.startswith("no") and name[2:] in bools and not eq:
            out.append(f"--{name[2:]}=False")
        elif name in values:
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"ppz: flag --{key} needs a value")
                value = argv[i]
                i += 1
            out.append(f"--{name}={value}")
        elif name in names:
            out.append(token)  # a positional argument given by name (--payload=…)
        else:
            raise UsageError(f"ppz {' '.join(argv[:start])}: unknown flag {token} "
                             f"(see 'ppz {' '.join(argv[:start])} --help')")
    return out


def bind_command(component: Any, argv: list[str]) -> Action | None:
    """The :class:`Action` of a complete command, bound the way Fire binds it, without Fire.

    ``argv`` is normalised (:func:`normalise_flags`): every flag reads ``--name=value`` with
    the value as typed. Flags set their parameters; positional arguments fill the remaining
    positional parameters in order (``*patterns`` takes the rest); a parameter left over takes
    its default. Whatever does not bind this way — help, a group or unknown command, a missing
    or surplus argument, a flag in another form — returns None and is left to Fire, so help
    and usage errors stay Fire's.
    """
    if "--help" in argv or "-h" in argv:
        return None
    fn, start = resolve_command(component, argv)
    if fn is None:
        return None
    params = Params(fn)
    positional: list[str] = []
    flags: dict[str, str] = {}
    for token in argv[start:]:
        if not _is_flag(token):
            positional.append(token)
            continue
        name, eq, value = token[2:].partition("=")
        if not token.startswith("--") or not eq or name not in params.names:
            return None
        flags[name] = value  # the last one wins, as with Fire
    args: list[Any] = []
    for name in params.positional:
        if name in flags:
            args.append(flags.pop(name))
        elif positional:
            args.append(positional.pop(0))
        elif name in params.defaults:
            args.append(params.defaults[name])
        else:
            return None  # a required argument is missing
    if params.varargs:
        args += positional
    elif positional:
        return None  # a surplus argument
    action = fn(*args, **flags)
    return action if isinstance(action, Action) else None


def run_fire(component: Any, argv: list[str], help_requested: bool) -> None:
    """The generated CLI: Fire parses the normalised ``argv`` (help, usage errors, and every
    command that :func:`bind_command` leaves to it)."""
    fire = import_fire()
    _adapt_fire(help_requested)
    try:
        # Fire's own flags follow the last "--": a separator nobody types, so that a lone "-"
        # (Fire's default separator) is an ordinary value.
        result = fire.Fire(component, command=[*argv, "--", "--separator=\x00"], name="ppz")
    except fire.core.FireExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise SystemExit(USAGE_EXIT if code not in (0, USAGE_EXIT) else code) from None
    if isinstance(result, Action):
        result.run()
    elif not help_requested:
        raise UsageError(f"ppz: incomplete command: {' '.join(argv)} (see 'ppz --help')")


def help_argv(component: Any, argv: list[str]) -> list[str]:
    """``--help`` anywhere: help for the command named by the leading words (``ppz send bob
    --help`` → ``send --help``), so that Fire shows it and exits 0 (cli.md §1.1) instead of
    complaining about the arguments given with it."""
    words: list[str] = []
    node = component
    for token in argv:
        if token.startswith("-") or token.startswith("_"):
            break
        attr = getattr(node, token.replace("-", "_"), None)
        if attr is None:
            break
        words.append(token)
        if isinstance(attr, types.MethodType):
            break
        node = attr
    return [*words, "--help"]


def dispatch(component: Any, argv: list[str]) -> None:
    """Normalise the flags, then run a complete command directly (Fire's import and parser
    cost ~25 ms, most of a command's run time) or leave everything else to Fire."""
    help_requested = any(a in ("--help", "-h") for a in argv)
    if help_requested:
        argv = help_argv(component, argv)
    argv = normalise_flags(component, argv)
    action = None if help_requested else bind_command(component, argv)
    if action is None:
        run_fire(component, argv, help_requested)
    else:
        action.run()


def split_heartbeat_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``heartbeat … -- COMMAND…``: everything after the first standalone ``--`` is the command."""
    if argv[:1] != ["heartbeat"] or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    command = argv[cut + 1 :]
    if not command:
        raise UsageError("ppz heartbeat: no command after --")
    return argv[:cut], command


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["__complete"]:
            cmd_complete(args[1] if len(args) > 1 else "")
            return
        args, command = split_heartbeat_command(args)
        dispatch(Ppz(command), args)
        sys.stdout.flush()
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # The reader went away (``ppz read … | head -1``): leave quietly, as a SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(BROKEN_PIPE_EXIT) from None


if __name__ == "__main__":
    main()
