"""The daemon's life from the CLI (spec/cli.md §2.1–2.4, spec/daemon.md §1.3, §1.4): ``login``,
``logout``, ``status`` and ``daemon start|stop|restart``. Only ``login``, ``daemon start`` and
``daemon restart`` start a daemon (:func:`ensure_running`); every other command fails without one.

``ppz.home`` (~20 ms to import) is imported only by the commands that manage the daemon.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ppz import __version__, errors, ipc
from ppz.commands.client import UsageError, call, colour_enabled, env_handle, fail, fail_plain, flag_on, session_id

if TYPE_CHECKING:
    from ppz.home import Home

PROBE_DEADLINE = 2.0
START_WAIT = 5.0
STOP_WAIT = 5.0
POLL = 0.05


class CtlError(Exception):
    """An uncoded CLI error (exit 1) with its message."""


def home() -> Home:
    from ppz.home import Home

    return Home.from_env()


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


# --- ensure running, stop (daemon.md §1.3, §1.4) ------------------------------------------------


def probe(socket: str, timeout: float | None = None) -> int | None:
    """The pid of the daemon that answers ``Status`` within ``timeout``; None when nothing
    answers (no daemon, no reply in time, the connection closed without a reply). Any reply
    counts, an error reply too (pid 0 then): a daemon answered, and a second one would only
    lose the lock. ``timeout`` defaults to the 2 s deadline of daemon.md §1.3."""
    try:
        reply = ipc.call("Status", {}, timeout=PROBE_DEADLINE if timeout is None else timeout, path=socket)
    except errors.PpzError as err:
        if not err.code or err.code in (errors.E_DAEMON_NOT_RUNNING, errors.E_DAEMON_TIMEOUT):
            return None
        return 0
    pid = reply.get("daemon_pid")
    return pid if isinstance(pid, int) else 0


def spawn(home_: Home) -> None:
    """Start ``ppz daemon start --foreground`` with this interpreter in a new session, stdin from
    /dev/null, stdout and stderr appended to ``daemon.log``, and ``PPZ_HOME`` and
    ``PPZ_IPC_SOCKET`` set to the resolved paths. The child is not waited for."""
    import subprocess  # not at the top: ~5 ms that status and logout do not need
    home_.ensure_dir()
    env = {**os.environ, "PPZ_HOME": str(home_.root), "PPZ_IPC_SOCKET": str(home_.socket)}
    fd = os.open(home_.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with open(os.devnull, "rb") as devnull:
            subprocess.Popen(
                [sys.executable, "-m", "ppz.cli", "daemon", "start", "--foreground"],
                stdin=devnull,
                stdout=fd,
                stderr=fd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    finally:
        os.close(fd)


def ensure_running(home_: Home) -> tuple[int, bool]:
    """daemon.md §1.3: ``Status`` with a 2 s deadline; no reply → spawn a daemon and poll
    ``Status`` every 50 ms for up to 5 s. Returns (pid, whether this call spawned it). Two CLIs
    racing may both spawn: the loser exits at the lock and both see the winner's pid."""
    socket = str(home_.socket)
    pid = probe(socket)
    if pid is not None:
        return pid, False
    spawn(home_)
    deadline = time.monotonic() + START_WAIT
    while (left := deadline - time.monotonic()) > 0:
        pid = probe(socket, timeout=min(PROBE_DEADLINE, left))
        if pid is not None:
            return pid, True
        time.sleep(max(0.0, min(POLL, deadline - time.monotonic())))
    raise CtlError(f"daemon did not come up within 5s; see {home_.log}")


def stop_daemon(home_: Home) -> int | None:
    """daemon.md §1.4: SIGTERM the lock holder and wait until the lock is free. Returns the
    stopped pid, or None when no daemon ran."""
    import errno
    import signal

    from ppz import home as home_files

    if not home_.lock.exists() or not home_files.lock_is_held(home_.lock):
        return None
    pid = home_files.read_pid(home_.pid)
    if pid <= 0:
        raise CtlError("daemon is running but daemon.pid is unreadable")
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        raise CtlError(f"cannot signal daemon pid={pid}: {exc.strerror}") from None
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        if not home_files.lock_is_held(home_.lock):
            return pid
        time.sleep(POLL)
    raise CtlError(f"daemon did not stop within 5s (pid={pid})")


def started_daemon() -> tuple[int, bool]:
    """:func:`ensure_running` for this environment's home; a failure is exit 1."""
    try:
        return ensure_running(home())
    except CtlError as exc:
        fail_plain(str(exc))


# --- commands ----------------------------------------------------------------------------------


def login(url: str, apikey: str | bool | None) -> None:
    """``apikey`` is True when Fire saw ``--apikey`` with no value."""
    if not apikey or apikey is True:
        raise UsageError("ppz login: --apikey KEY is required (device login is not supported)")
    pid, started = started_daemon()
    if started:
        print(f"daemon started pid={pid}")
    reply = call("Login", {"url": normalise_url(str(url)), "api_key": str(apikey)})
    print(f"logged in url={reply.get('url', '')} key={reply.get('key_prefix', '')} "
          f"account={reply.get('account_id', '')}")


def logout() -> None:
    """``Logout``; with no daemon, delete the logout files under the home directly (home.md §6)."""
    try:
        ipc.call("Logout", {})
    except errors.PpzError as err:
        if err.code != errors.E_DAEMON_NOT_RUNNING:
            fail(err)
        from ppz import home as home_files

        problems = home_files.remove_logout_files(home())
        if problems:
            fail_plain("; ".join(problems))
    print("logged out")


def status() -> None:
    from ppz.render import render_status

    try:
        reply = ipc.call("Status", {"session": session_id()})
    except errors.PpzError as err:
        if err.code == errors.E_DAEMON_NOT_RUNNING:
            print("daemon: not running")
            raise SystemExit(err.exit_status) from None
        fail(err)
    lines = render_status(reply, cli_version=__version__, env_handle=env_handle(), colour=colour_enabled())
    print("\n".join(lines))


def start(foreground: Any = False) -> None:
    if flag_on("foreground", foreground):
        from ppz.bootstrap import run_foreground

        raise SystemExit(run_foreground())
    pid, started = started_daemon()
    print(f"daemon started pid={pid}" if started else f"daemon already running pid={pid}")


def stop() -> None:
    try:
        pid = stop_daemon(home())
    except CtlError as exc:
        fail_plain(str(exc))
    print("daemon not running" if pid is None else f"daemon stopped pid={pid}")


def restart() -> None:
    stop()
    sys.stdout.flush()
    start()
