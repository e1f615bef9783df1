"""Builds, starts and stops the daemon (``ppz daemon start --foreground``, spec/daemon.md §1).

Start order follows daemon.md §1.1; actors start in dependency order and every ``on_start``
has run before the socket accepts. Stop runs in reverse inside ``try/finally`` and ends with
``ActorRegistry.stop_all()``. Signals only set events or tell actors.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from ppz import __version__, handlers, home
from ppz.actors.connector import ConnectLoopActor, Kick
from ppz.actors.cursors import CursorsActor
from ppz.actors.follows import FollowActor
from ppz.actors.heartbeats import HeartbeatsActor
from ppz.actors.ipc import IpcAcceptorActor
from ppz.actors.nats import ConnView, NatsActor
from ppz.actors.refresh import RefreshActor, nats_url_override
from ppz.actors.state import StateActor, StateView
from ppz.aioloop import LoopThread
from ppz.eventlog import EventLog
from ppz.home import Home
from ppz.messages import LoginChecked, Poll, RecordEvent, RefreshView, Reload, Shutdown
from ppz.published import Published
from ppz.serverclient import LoginCheck, ServerClient
from ppz.system import System, connect_attempt

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.05
WATCHDOG_TICK = 30.0
WATCHDOG_JUMP = 60.0
WAKE_RETRY = 5.0
ACTOR_START_TIMEOUT = 10.0


class StartupError(Exception):
    """Start-up failed; the message is printed as is and the process exits 1."""


@dataclass(slots=True)
class Ticker:
    """A daemon thread calling ``fn`` every ``interval`` seconds until stopped."""

    interval: float
    fn: Callable[[], None]
    name: str
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.fn()
            except pykka.ActorDeadError:
                return
            except Exception:  # noqa: BLE001 - a ticker must keep ticking
                logger.exception("%s tick failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)


class WakeWatchdog:
    """daemon.md §5.6: detects wall-clock jumps (system sleep) and recovers the connection."""

    def __init__(self, system: System, tick: float = WATCHDOG_TICK) -> None:
        self._system = system
        self._tick = tick
        self._last = time.time()
        self._recovering = threading.Event()
        self.ticker = Ticker(tick, self.check, "ppz-wake-watchdog")

    def check(self) -> None:
        now = time.time()
        gap = now - self._last
        self._last = now
        if gap <= self._tick + WATCHDOG_JUMP:
            return
        from ppz.durations import format_duration

        self._system.nats.actor_ref.tell(
            RecordEvent(type="wake", caller="wake-watchdog",
                        reason=f"wall-clock jump {format_duration(round(gap))} (system sleep)")
        )
        if not self._recovering.is_set():
            self._recovering.set()
            threading.Thread(target=self._recover, name="ppz-wake-recovery", daemon=True).start()

    def _recover(self) -> None:
        sys_ = self._system
        try:
            while sys_.creds() is not None:
                try:
                    sys_.refresh.refresh_now_if_due().get()
                    break
                except Exception as exc:  # noqa: BLE001
                    if getattr(exc, "code", "") == "E_INVALID_API_KEY":
                        return
                time.sleep(WAKE_RETRY)
            if sys_.creds() is not None:
                try:
                    sys_.nats.rebuild("wake-watchdog").get()
                except Exception:  # noqa: BLE001
                    sys_.kick_connect()
        finally:
            self._recovering.clear()


def bind_socket(path: str) -> socket.socket:
    """daemon.md §1.1 step 8: replace a stale socket, refuse a non-socket, bind 0600."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"ppz daemon: {path} exists and is not a socket")
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    except OSError as exc:
        listener.close()
        raise StartupError(f"ppz daemon: cannot bind {path}: {exc}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(512)
    return listener


def await_started(ref: pykka.ActorRef[Any]) -> None:
    """Return once ``ref``'s actor has run ``on_start``: its first ask is answered only after.

    An actor whose ``on_start`` failed is dead, which fails the start-up."""
    try:
        ref.proxy().actor_urn.get(timeout=ACTOR_START_TIMEOUT)
    except (pykka.ActorDeadError, pykka.Timeout):
        raise StartupError(f"ppz daemon: {ref.actor_class.__name__} failed to start") from None


class Daemon:
    """One running daemon: its actors, threads and socket."""

    def __init__(self, home_: Home, events: EventLog, loaded: home.LoadedState) -> None:
        self.home = home_
        self.events = events
        self.loaded = loaded
        self.stopping = threading.Event()
        self.system: System | None = None
        self._poller: Ticker | None = None
        self._watchdog: WakeWatchdog | None = None
        self._acceptor: Any = None
        self._loop: LoopThread | None = None
        self._listener_path = str(home_.socket)

    def start(self) -> None:
        state_box: Published[StateView] = Published(StateView())
        refresh_box: Published[RefreshView] = Published(RefreshView())
        nats_box: Published[ConnView] = Published(ConnView())

        def on_login_check(check: LoginCheck) -> None:
            creds = state_box.value.creds
            if creds is not None and (creds.url, creds.api_key) == (check.url, check.api_key):
                state.actor_ref.tell(LoginChecked(value=check.value))

        server = ServerClient(on_login_check=on_login_check)
        # The asyncio loop of the NATS client and of the IPC acceptor's warm path: owned here,
        # started before the actors that use it and stopped after all of them.
        loop = self._loop = LoopThread("ppz-nats")
        loop.start()
        heartbeats = HeartbeatsActor.start().proxy()
        cursors = CursorsActor.start(home_=self.home).proxy()
        state = StateActor.start(home_=self.home, loaded=self.loaded, view_box=state_box).proxy()
        system_ref: list[System] = []
        connector = ConnectLoopActor.start(attempt=lambda: connect_attempt(system_ref[0]))

        def kick() -> None:
            try:
                connector.tell(Kick())
            except pykka.ActorDeadError:
                pass

        nats = NatsActor.start(events=self.events, view_box=nats_box, loop_thread=loop,
                               heartbeats=heartbeats.actor_ref,
                               kick_connect=kick, nats_url_override=nats_url_override(),
                               refresh_box=refresh_box).proxy()
        refresh = RefreshActor.start(server=server, state=state, nats=nats,
                                     view_box=refresh_box).proxy()
        state.connect_peers(refresh=refresh, nats=nats, heartbeats=heartbeats, kick_connect=kick,
                            on_logged_out=lambda: None).get()
        self.system = System(
            home=self.home, state=state, refresh=refresh, nats=nats, heartbeats=heartbeats,
            cursors=cursors, kick_connect=kick, server=server, state_box=state_box,
            refresh_box=refresh_box, nats_box=nats_box,
        )
        system_ref.append(self.system)
        for ref in (heartbeats.actor_ref, cursors.actor_ref, state.actor_ref, connector,
                    nats.actor_ref, refresh.actor_ref):
            await_started(ref)

        self._poller = Ticker(POLL_INTERVAL, lambda: state.actor_ref.tell(Poll()), "ppz-poller")
        self._poller.start()
        signal.signal(signal.SIGHUP, lambda *_: state.actor_ref.tell(Reload()))

        listener = bind_socket(self._listener_path)
        self._watchdog = WakeWatchdog(self.system)
        self._watchdog.ticker.start()
        if self.loaded.credentials is not None:
            kick()
        bound = self.system
        table = {verb: functools.partial(fn, bound) for verb, fn in handlers.HANDLERS.items()}
        streams = {verb: functools.partial(fn, bound) for verb, fn in handlers.STREAM_HANDLERS.items()}
        fast = {verb: functools.partial(fn, bound) for verb, fn in handlers.FAST_HANDLERS.items()}
        self._acceptor = IpcAcceptorActor.start(listener=listener, handlers=table, stream_handlers=streams,
                                                fast_handlers=fast, loop_thread=loop)
        await_started(self._acceptor)

    def stop(self) -> None:
        """daemon.md §1.2: the graceful stop, in order; every step runs even if one fails."""
        steps: list[Callable[[], None]] = [
            self._stop_accepting,
            self._unlink_socket,
            lambda: pykka.ActorRegistry.broadcast(Shutdown(), target_class=FollowActor),
            lambda: self._poller.stop() if self._poller else None,
            lambda: self._watchdog.ticker.stop() if self._watchdog else None,
            lambda: self.system.refresh.stop_loop().get(timeout=2) if self.system else None,
        ]
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - keep stopping
                logger.debug("shutdown step failed", exc_info=True)
        try:
            pykka.ActorRegistry.stop_all(block=True, timeout=10)
        finally:
            if self._loop is not None:
                self._loop.stop()

    def _stop_accepting(self) -> None:
        if self._acceptor is not None:
            self._acceptor.proxy().close().get(timeout=3)

    def _unlink_socket(self) -> None:
        try:
            if stat.S_ISSOCK(os.lstat(self._listener_path).st_mode):
                os.unlink(self._listener_path)
        except OSError:
            pass


def configure_logging() -> None:
    level = os.environ.get("PPZ_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_foreground() -> int:
    """``ppz daemon start --foreground``; returns the exit status."""
    configure_logging()
    home_ = Home.from_env()
    try:
        home_.ensure_dir()
    except OSError as exc:
        print(f"ppz daemon: cannot create {home_.root}: {exc}", file=sys.stderr)
        return 1
    lock_fd = home.try_lock(home_.lock)
    if lock_fd is None:
        pid = home.read_pid(home_.pid)
        suffix = f" (pid {pid})" if pid > 0 else ""
        print(f"ppz daemon: another daemon is already running for {home_.root}{suffix}", file=sys.stderr)
        return 1
    my_pid = os.getpid()
    try:
        home.write_pid(home_.pid, my_pid)
        events = EventLog(home_.events, home_.lifecycle)
        events.reseed()
        events.record("daemon_start", reason=f"pid={my_pid} version={__version__}")
        try:
            loaded = home.load_state(home_)
        except home.StateFileError as exc:
            print(f"ppz daemon: cannot load state: {exc}", file=sys.stderr)
            events.record("daemon_stop", reason=f"startup failed: {exc}")
            home.remove_pid_if_ours(home_.pid, my_pid)
            return 1
        return _serve(home_, events, loaded, my_pid)
    finally:
        os.close(lock_fd)


def _serve(home_: Home, events: EventLog, loaded: home.LoadedState, my_pid: int) -> int:
    daemon = Daemon(home_, events, loaded)
    stopping = daemon.stopping

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.start()
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        daemon.stop()
        events.record("daemon_stop", reason=f"startup failed: {exc}")
        home.remove_pid_if_ours(home_.pid, my_pid)
        return 1
    logger.info("ppz daemon %s serving %s (pid %d)", __version__, home_.socket, my_pid)
    # A short timeout: a signal handler cannot wake a thread blocked in Event.wait.
    while not stopping.wait(0.1):
        pass
    logger.info("stopping")
    try:
        daemon.stop()
    finally:
        events.record("daemon_stop", reason="graceful")
        home.remove_pid_if_ours(home_.pid, my_pid)
    return 0
