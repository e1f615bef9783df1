"""A real ``ppz-server serve`` (and its ``nats-server`` child) as a subprocess, for tests.

    server = ServerProcess(tmp_path / "server", env={"PPZ_NATS_JWT_TTL": "10s"})
    server.start()                      # waits until /healthz answers
    key = server.add_key("acme")        # runs `ppz-server add-key` with the same environment
    requests.get(server.url + "/api/v1/sources", headers={"Authorization": f"Bearer {key}"})
    server.kill_nats()                  # SIGKILL the NATS child; the server restarts it
    server.restart()                    # same ports, same data directory
    server.stop()                       # SIGTERM; asserts that no nats-server is left

Use the ``ppz_server`` / ``server_factory`` fixtures of ``tests/conftest.py`` rather than this
class directly where possible: they stop every server at teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

_live: set[ServerProcess] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        pass
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            return True
    return False


def nats_server_pids(data_dir: Path | str) -> list[int]:
    """Live nats-server processes started with ``<data_dir>/nats-server.conf`` (orphan check)."""
    config = str(Path(data_dir) / "nats-server.conf").encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"nats-server") and config in argv and pid_alive(int(entry)):
            pids.append(int(entry))
    return pids


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.02, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class ServerProcess:
    """One ``ppz-server serve`` subprocess with its own data directory and ephemeral ports."""

    def __init__(self, data_dir: Path | str, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.http_port = free_port()
        self.nats_port = free_port()
        self.http_addr = f"127.0.0.1:{self.http_port}"
        self.nats_addr = f"127.0.0.1:{self.nats_port}"
        self.url = f"http://{self.http_addr}"
        self.nats_url = f"nats://{self.nats_addr}"
        self.env = {
            **os.environ,
            "PPZ_SERVER_DATA": str(self.data_dir),
            "PPZ_HTTP_ADDR": self.http_addr,
            "PPZ_NATS_ADDR": self.nats_addr,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._nats_pid: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start ``ppz-server serve`` without waiting for it to be ready."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ppz.server.cli", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _live.add(self)
        return self.proc

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Start and wait until ``/healthz`` answers 200."""
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ppz-server exited with {proc.returncode}:\n{self.log_text()}")
            if self.healthy():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ppz-server not ready after {timeout}s:\n{self.log_text()}")
            time.sleep(0.01)
        self._nats_pid = self.nats_pid()
        return self

    def healthy(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, and assert that the NATS child is gone. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return 0
        nats_pid = self._current_nats_pid()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"ppz-server did not stop within {timeout}s:\n{self.log_text()}"
                ) from None
        _live.discard(self)
        if nats_pid is not None:
            # The server reaps its child before exiting; allow a moment for init to reap after a kill.
            try:
                wait_until(lambda: not pid_alive(nats_pid), 5.0, message=f"nats-server {nats_pid} to exit")
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.kill(nats_pid, signal.SIGKILL)
                raise AssertionError(f"nats-server {nats_pid} outlived ppz-server") from None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the server and its NATS child (teardown of a broken state)."""
        nats_pid = self._current_nats_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if nats_pid is not None and pid_alive(nats_pid):
            with contextlib.suppress(OSError):
                os.kill(nats_pid, signal.SIGKILL)
        _live.discard(self)

    def close(self) -> None:
        """Stop if running; kill whatever is left if stopping fails."""
        try:
            self.stop()
        finally:
            self.kill()

    def restart(self) -> ServerProcess:
        """Stop and start again on the same ports and data directory."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- the NATS child --------------------------------------------------------------------

    @property
    def nats_pid_path(self) -> Path:
        return self.data_dir / "nats-server.pid"

    def nats_pid(self) -> int:
        """The pid of the current nats-server child (from ``<data>/nats-server.pid``)."""
        return int(self.nats_pid_path.read_text().strip())

    def _current_nats_pid(self) -> int | None:
        try:
            self._nats_pid = self.nats_pid()
        except (FileNotFoundError, ValueError):
            pass
        return self._nats_pid

    def kill_nats(self) -> int:
        """SIGKILL the NATS child; returns its pid. The server restarts it on its own."""
        pid = self.nats_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_nats_restarted(self, old_pid: int, timeout: float = 10.0) -> int:
        """Wait until a new NATS child (not ``old_pid``) accepts connections; returns its pid."""

        def restarted() -> bool:
            try:
                pid = self.nats_pid()
            except (FileNotFoundError, ValueError):
                return False
            if pid == old_pid or not pid_alive(pid):
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.nats_port), 0.2):
                return True
            return False

        wait_until(restarted, timeout, message="nats-server restart")
        return self.nats_pid()

    # --- administration --------------------------------------------------------------------

    def add_key(self, account: str = "acme", user: str = "admin") -> str:
        """Run ``ppz-server add-key`` with this server's environment; returns the key."""
        out = subprocess.run(
            [sys.executable, "-m", "ppz.server.cli", "add-key", f"--account={account}", f"--user={user}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        server.kill()
