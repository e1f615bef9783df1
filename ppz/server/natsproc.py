"""The ``nats-server`` child process: configuration, start, supervision, stop
(spec/server-api.md §5.3).

One supervisor thread owns the child: it spawns it, waits for it, and respawns it on the same
address when it dies while the server runs. The child is spawned with ``PR_SET_PDEATHSIG`` so
the kernel kills it if this process (precisely: the spawning thread) dies, and it runs in its
own session so a terminal's Ctrl-C reaches only ``ppz-server``, which then stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ppz.server.natsconf import MAX_CONTROL_LINE, render_config
from ppz.server.settings import connect_host
from ppz.server.trust import Trust

# render_config and MAX_CONTROL_LINE live in natsconf; re-exported for existing callers.
__all__ = ["MAX_CONTROL_LINE", "NatsServerProcess", "NatsStartError", "nats_answers", "render_config"]

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
RESPAWN_DELAY = 0.05
RESPAWN_DELAY_MAX = 2.0
# A child that lived at least this long resets the respawn back-off.
STABLE_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


class NatsStartError(RuntimeError):
    """The child could not be started or did not accept connections in time."""


def _death_signal_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when its parent dies.

    Linux sends the signal when the *thread* that forked the child exits, which is why one
    long-lived supervisor thread does every spawn.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl took effect.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def nats_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a NATS server greets a new connection on ``host:port`` with its INFO line
    (a mere listening socket, e.g. someone else's, does not count)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            return conn.recv(5) == b"INFO "
    except OSError:
        return False


class NatsServerProcess:
    """Runs and supervises ``nats-server`` until :meth:`stop`."""

    def __init__(self, *, binary: str, data_dir: Path, host: str, port: int, trust: Trust) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.trust = trust
        self.config_path = data_dir / "nats-server.conf"
        self.pid_path = data_dir / "nats-server.pid"
        self.log_path = data_dir / "nats-server.log"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc else None

    def write_config(self) -> None:
        operator_path = self.data_dir / "operator.jwt"
        operator_path.write_text(self.trust.operator_jwt)
        self.config_path.write_text(
            render_config(
                host=self.host,
                port=self.port,
                data_dir=self.data_dir,
                operator_jwt_path=operator_path,
                trust=self.trust,
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """Spawn the child and return once it accepts connections."""
        self.write_config()
        self._thread = threading.Thread(target=self._supervise, name="nats-supervisor", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise NatsStartError(f"nats-server did not accept connections within {timeout:.0f}s")
        if self._error is not None:
            raise NatsStartError(f"nats-server failed to start: {self._error}") from self._error

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    [self.binary, "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_death_signal_preexec(),
                    close_fds=True,
                )
            self._proc = proc
        self.pid_path.write_text(f"{proc.pid}\n")
        logger.info("nats-server started (pid %d) on %s:%d", proc.pid, self.host, self.port)
        return proc

    def _wait_accepting(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None or self._stopping.is_set():
                return False
            if nats_answers(connect_host(self.host), self.port):
                return True
            time.sleep(0.005)
        return False

    def _supervise(self) -> None:
        delay = RESPAWN_DELAY
        first = True
        while not self._stopping.is_set():
            try:
                proc = self._spawn()
            except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
                if first:
                    self._error = exc
                    self._ready.set()
                    return
                logger.exception("cannot respawn nats-server")
                time.sleep(delay)
                delay = min(delay * 2, RESPAWN_DELAY_MAX)
                continue
            if proc is None:
                break
            started = time.monotonic()
            if first:
                if not self._wait_accepting(proc, 10.0):
                    rc = proc.poll()
                    self._error = NatsStartError(
                        f"exited with status {rc}; see {self.log_path}" if rc is not None else "not ready"
                    )
                    self._ready.set()
                    self._kill(proc)
                    return
                first = False
                self._ready.set()
            rc = proc.wait()
            if self._stopping.is_set():
                break
            self.restarts += 1
            delay = RESPAWN_DELAY if time.monotonic() - started >= STABLE_SECONDS else delay
            logger.warning("nats-server (pid %d) exited with status %s; restarting", proc.pid, rc)
            time.sleep(delay)
            delay = min(delay * 2, RESPAWN_DELAY_MAX)
        self._ready.set()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop supervising and terminate the child (SIGTERM, then SIGKILL after 5 s)."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._kill(proc)
            logger.info("nats-server (pid %d) stopped", proc.pid)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_GRACE_SECONDS)
        # A spawn racing with stop() may have produced one more child.
        with self._lock:
            late = self._proc
        if late is not None and late is not proc:
            self._kill(late)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
