"""A real ``ppz-server serve`` (and its ``nats-server`` child) as a subprocess, for tests.

    server = ServerProcess(tmp_path / "server", env={"PPZ_NATS_JWT_TTL": "10s"})
    server.start()                      # waits until /healthz answers
    key = server.add_key("acme")        # `ppz-server add-key` for this server (run in-process)
    requests.get(server.url + "/api/v1/sources", headers={"Authorization": f"Bearer {key}"})
    server.kill_nats()                  # SIGKILL the NATS child; the server restarts it
    server.restart()                    # same ports, same data directory
    server.stop()                       # SIGTERM; asserts that no nats-server is left

Use the ``ppz_server`` / ``server_factory`` fixtures of ``tests/conftest.py`` rather than this
class directly where possible: they stop every server at teardown.

A JetStream cluster for ``PPZ_NATS_EXTERNAL=1`` (docs/operations.md), configured the way an
operator does it, with ``ppz-server nats-config`` from the server's data directory:

    cluster = NatsCluster(tmp_path / "cluster", server_data=tmp_path / "server").start()
    server = ServerProcess(tmp_path / "server", env=cluster.server_env(replicas=3)).start()
    # or both at once: with cluster_with_server(tmp_path) as (cluster, server): ...
    cluster.node_of("ppz-daemon")       # the node a named client is connected to (/connz)
    cluster.kill("n1"); cluster.restart("n1")
    cluster.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import requests

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

_live: set[ServerProcess] = set()
_ADD_KEY_LOCK = threading.Lock()  # add_key patches the process's environment and stdout
_live_clusters: set[NatsCluster] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortReservations:
    """Loopback ports held for servers we start: each bound with ``SO_REUSEADDR`` but not
    listening, so no other ``bind(0)`` (e.g. another xdist worker's :func:`free_port`) gets it while
    our server starts or restarts, yet the server can bind and listen on it (it sets
    ``SO_REUSEADDR`` too: ``ppz.server.web.bind``, and Go's listeners in nats-server).
    Held until :meth:`release` or garbage collection."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self.release = weakref.finalize(self, _close_all, self._sockets)

    def take(self) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        self._sockets.append(s)
        return int(s.getsockname()[1])


def _close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


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
        self.ports = PortReservations()
        self.http_port = self.ports.take()
        self.nats_port = self.ports.take()
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
        self._current_nats_pid()  # none with PPZ_NATS_EXTERNAL=1
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
        """SIGKILL the server and its NATS child (teardown of a broken state); release the ports."""
        nats_pid = self._current_nats_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if nats_pid is not None and pid_alive(nats_pid):
            with contextlib.suppress(OSError):
                os.kill(nats_pid, signal.SIGKILL)
        _live.discard(self)
        self.ports.release()

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
        """``ppz-server add-key`` with this server's data directory; returns the key. The command
        runs in this process (``ppz.server.cli.main``): a Python start-up per key costs about a
        second of a loaded machine, and most end-to-end tests make one.
        ``tests/server/test_server_lifecycle.py`` runs the real command."""
        from ppz.server import cli

        out, err = io.StringIO(), io.StringIO()
        with _ADD_KEY_LOCK, mock.patch.dict(os.environ, {"PPZ_SERVER_DATA": str(self.data_dir)}), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["add-key", f"--account={account}", f"--user={user}"])
        if status != 0:
            raise RuntimeError(f"ppz-server add-key exited with {status}: {err.getvalue()}")
        return out.getvalue().strip()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class NatsNode:
    """One ``nats-server`` of a :class:`NatsCluster`: its ports, files and process."""

    def __init__(self, root: Path, name: str, ports: PortReservations) -> None:
        self.name = name
        self.port = ports.take()
        self.cluster_port = ports.take()
        self.monitor_port = ports.take()
        self.store_dir = root / name
        self.config_path = root / f"{name}.conf"
        self.log_path = root / f"{name}.log"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """A monitoring endpoint (``jsz``, ``connz``, ``varz``…) as JSON."""
        resp = requests.get(f"http://127.0.0.1:{self.monitor_port}/{endpoint}", params=params, timeout=2)
        resp.raise_for_status()
        return dict(resp.json())

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
            return conn.recv(5) == b"INFO "
        return False


class NatsCluster:
    """A JetStream cluster of ``size`` ``nats-server`` processes on loopback ports (names
    ``n1``…), each configured by ``ppz-server nats-config`` with the trust of ``server_data``
    (minted there if missing). Every node has a monitoring port; :meth:`stop` (or the atexit
    hook) stops them."""

    def __init__(self, root: Path | str, *, server_data: Path | str, size: int = 3,
                 binary: str | None = None) -> None:
        self.root = Path(root)
        self.server_data = Path(server_data)
        self.ports = PortReservations()
        self.nodes = [NatsNode(self.root, f"n{i + 1}", self.ports) for i in range(size)]
        self.binary = binary or _nats_server_binary()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every client URL, comma-separated (``PPZ_NATS_URLS`` / ``PPZ_NATS_PUBLIC_URL``)."""
        return ",".join(self.urls)

    def server_env(self, replicas: int = 3, **extra: str) -> dict[str, str]:
        """The environment of a ``ppz-server`` using this cluster."""
        return {
            "PPZ_NATS_EXTERNAL": "1",
            "PPZ_NATS_URLS": self.url,
            "PPZ_NATS_PUBLIC_URL": self.url,
            "PPZ_STREAM_REPLICAS": str(replicas),
            **extra,
        }

    def write_configs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        routes = ",".join(f"127.0.0.1:{node.cluster_port}" for node in self.nodes)
        env = {**os.environ, "PPZ_SERVER_DATA": str(self.server_data)}
        for node in self.nodes:
            subprocess.run(
                [sys.executable, "-m", "ppz.server.cli", "nats-config", f"--name={node.name}",
                 f"--routes={routes}", f"--store-dir={node.store_dir}", f"--listen=127.0.0.1:{node.port}",
                 f"--cluster-listen=127.0.0.1:{node.cluster_port}", f"--monitor=127.0.0.1:{node.monitor_port}",
                 f"--output={node.config_path}"],
                env=env, capture_output=True, text=True, timeout=30, check=True,
            )

    def start(self, timeout: float = START_TIMEOUT) -> NatsCluster:
        """Write the configurations, start every node, and wait for a JetStream meta leader."""
        self.write_configs()
        for node in self.nodes:
            self.spawn(node)
        for node in self.nodes:
            wait_until(node.answers, timeout, message=f"nats-server {node.name}")
        self.wait_meta_leader(timeout)
        return self

    def spawn(self, node: NatsNode) -> None:
        assert not node.running, f"{node.name} already runs"
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen([self.binary, "-c", str(node.config_path)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        _live_clusters.add(self)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def kill(self, name: str) -> int:
        """SIGKILL one node; returns its pid."""
        node = self.node(name)
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(10)
        return node.proc.pid

    def restart(self, name: str, timeout: float = START_TIMEOUT) -> None:
        node = self.node(name)
        self.spawn(node)
        wait_until(node.answers, timeout, message=f"nats-server {name}")

    def live(self) -> list[NatsNode]:
        return [n for n in self.nodes if n.running]

    def meta_leader(self) -> str:
        """The JetStream meta leader's name if it is a running node that claims it, else ``""``
        (after a kill the others name the dead leader until they elect a new one)."""
        for node in self.live():
            with contextlib.suppress(requests.RequestException, ValueError):
                if (node.monitor("jsz").get("meta_cluster") or {}).get("leader") == node.name:
                    return node.name
        return ""

    def wait_meta_leader(self, timeout: float = START_TIMEOUT) -> str:
        """Wait until a running node is the meta leader (an election takes 4–9 s after the
        leader died); returns its name."""
        wait_until(lambda: bool(self.meta_leader()), timeout, interval=0.05, message="a JetStream meta leader")
        return self.meta_leader()

    def make_meta_leader(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Move the JetStream meta leader to node ``name`` (``$JS.API.META.LEADER.STEPDOWN`` with
        a preferred placement, as the system user of ``server_data``'s trust)."""
        trust = json.loads((self.server_data / "trust.json").read_text())
        self._move_leader(lambda: self.meta_leader() == name, trust["system_user_jwt"], trust["system_user_seed"],
                          "$JS.API.META.LEADER.STEPDOWN", name, timeout)

    def make_stream_leader(self, stream: str, name: str, user_jwt: str, seed: str,
                           timeout: float = START_TIMEOUT) -> None:
        """Move a stream's leader to node ``name``, with a credential of the stream's account."""
        self._move_leader(lambda: self.stream_leader(stream) == name, user_jwt, seed,
                          f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", name, timeout)

    def _move_leader(self, done: Callable[[], bool], user_jwt: str, seed: str, subject: str, name: str,
                     timeout: float) -> None:
        """Ask for a step-down with ``name`` preferred until ``done()`` (a refused step-down,
        e.g. while ``name`` is not current yet, is asked again)."""
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{subject}: {name} did not become leader: {replies[-3:]}")
            replies.append(nats_request(self.urls, user_jwt, seed, subject, {"placement": {"preferred": name}}))
            with contextlib.suppress(TimeoutError):
                wait_until(done, 2.0, interval=0.05)

    def stream_leader(self, stream: str) -> str:
        """The leader of a stream (any account) as a running node's ``/jsz`` reports it."""
        for node in self.live():
            with contextlib.suppress(requests.RequestException, ValueError):
                jsz = node.monitor("jsz", accounts="true", streams="true")
                for account in jsz.get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        leader = (detail.get("cluster") or {}).get("leader") or ""
                        if detail.get("name") == stream and leader:
                            return str(leader)
        return ""

    def node_of(self, connection_name: str) -> str:
        """The name of the running node a client named ``connection_name`` is connected to,
        else ``""`` (``/connz``)."""
        for node in self.live():
            with contextlib.suppress(requests.RequestException, ValueError):
                conns = node.monitor("connz", limit="1024").get("connections") or []
                if any(c.get("name") == connection_name for c in conns):
                    return node.name
        return ""

    def stop(self) -> None:
        """SIGTERM every node, SIGKILL after 10 s."""
        for node in self.live():
            assert node.proc is not None
            node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)
        _live_clusters.discard(self)
        self.ports.release()

    def kill_all(self) -> None:
        for node in self.live():
            assert node.proc is not None
            node.proc.kill()
            node.proc.wait(5)
        _live_clusters.discard(self)
        self.ports.release()


@contextlib.contextmanager
def cluster_with_server(root: Path | str, *, replicas: int = 3, size: int = 3,
                        **env: str) -> Iterator[tuple[NatsCluster, ServerProcess]]:
    """A started :class:`NatsCluster` under ``root/nats`` and a started ``ppz-server`` using it
    (data ``root/server``, R``replicas`` streams); both stopped on exit."""
    root = Path(root)
    cluster = NatsCluster(root / "nats", server_data=root / "server", size=size)
    server = ServerProcess(root / "server", env=cluster.server_env(replicas=replicas, **env))
    try:
        cluster.start()
        server.start()
        yield cluster, server
    finally:
        try:
            server.close()
        finally:
            cluster.stop()


def nats_request(urls: list[str], user_jwt: str, seed: str, subject: str, body: Any) -> dict[str, Any]:
    """One request/reply (JSON both ways) on a fresh connection made with a user JWT and seed."""
    import asyncio
    import base64

    import nats

    from ppz.server import natsjwt

    async def request() -> dict[str, Any]:
        async def quiet(exc: Exception) -> None:
            pass

        nc = await nats.connect(
            servers=urls, user_jwt_cb=lambda: user_jwt.encode(), error_cb=quiet, connect_timeout=3,
            signature_cb=lambda nonce: base64.b64encode(natsjwt.sign(seed, nonce.encode())),
        )
        try:
            msg = await nc.request(subject, json.dumps(body).encode(), timeout=10)
            return dict(json.loads(msg.data))
        finally:
            await nc.close()

    return asyncio.run(request())


def _nats_server_binary() -> str:
    from ppz.server.natsbin import nats_server_bin

    return nats_server_bin()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        server.kill()
    for cluster in list(_live_clusters):
        cluster.kill_all()
