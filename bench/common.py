"""Shared pieces of the benchmark suite: the rig (a real ppz-server + daemon in a temp dir),
load-generator workers, statistics and the result rows.

Every process a benchmark starts is tracked here and stopped in ``finally`` blocks (and, as a
last resort, at interpreter exit), so a failing or interrupted run leaves nothing behind. Only
pids started by this process are ever signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests"))  # serverfixture / daemonfixture (reused, not modified)

from daemonfixture import DaemonHome  # noqa: E402
from serverfixture import ServerProcess  # noqa: E402

PY = sys.executable
PPZ_BIN = str(Path(PY).with_name("ppz"))
SESSION = "bench"
HANDLE = "bob"
PAYLOAD_SIZE = 128
WORKER = str(BENCH_DIR / "worker.py")


# --- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary table.

    ``ppz`` and ``baseline`` are in ``unit``; ``ratio`` = ppz / baseline. ``ok`` is None for
    informational rows without a target.
    """

    figure: str
    ppz: float | None
    baseline: float | None
    unit: str
    target: str = "—"
    ok: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ppz is None or not self.baseline:
            return None
        return self.ppz / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {"figure": self.figure, "ppz": self.ppz, "baseline": self.baseline, "unit": self.unit,
                "ratio": self.ratio, "target": self.target, "ok": self.ok, "note": self.note, **self.extra}


def curve_row(curve: str, x: int, x_label: str, metric: str, ppz: float | None, baseline: float | None,
              unit: str, *, target: str = "—", ok: bool | None = None, note: str = "",
              target_abs: float | None = None, target_ratio: float | None = None,
              target_at: int | None = None) -> Row:
    """One point of a scale curve (``--scale``): a summary row that ``plots.py`` can also draw.

    ``target_abs`` (in ``unit``) or ``target_ratio`` (× baseline) is drawn on the chart;
    ``target_at`` limits the drawn target to the x where it applies (None: every x)."""
    extra = {"curve": curve, "x": x, "x_label": x_label, "metric": metric, "target_abs": target_abs,
             "target_ratio": target_ratio, "target_at": target_at}
    return Row(f"{curve} @ {x:,}: {metric}", ppz, baseline, unit, target=target, ok=ok, note=note, extra=extra)


def failed_row(figure: str, exc: BaseException) -> Row:
    return Row(figure, None, None, "", target="—", ok=False, note=f"benchmark failed: {type(exc).__name__}: {exc}")


# --- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (pct in 0..100)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def log(message: str) -> None:
    print(f"  · {message}", file=sys.stderr, flush=True)


# --- process tracking --------------------------------------------------------------------------

_children: set[subprocess.Popen[Any]] = set()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """Terminate one child we started (SIGTERM, then SIGKILL) and reap it."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
    finally:
        _children.discard(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_children):
        with contextlib.suppress(Exception):
            stop_process(proc, 1.0)


# --- workers -----------------------------------------------------------------------------------


class Worker:
    """A load-generator subprocess (``bench/worker.py``) speaking one JSON line at a time.

    Protocol: the worker prints ``{"ready": …}`` once set up, waits for ``go`` on stdin, runs,
    and prints ``{"result": …}``. Follow workers print extra lines (see worker.py). A reader
    thread queues the lines, so :meth:`poll` never blocks.
    """

    def __init__(self, args: Sequence[Any], env: dict[str, str]) -> None:
        self.args = [str(a) for a in args]
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [PY, WORKER, *self.args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, text=True, bufsize=1,
        )
        _children.add(self.proc)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _decode(self, line: str | None) -> dict[str, Any]:
        if line is None:
            self._lines.put(None)  # stay at EOF
            raise RuntimeError(f"worker {self.args[0]} exited ({self.proc.wait()}) without output")
        obj = json.loads(line)
        if "error" in obj:
            raise RuntimeError(f"worker {self.args[0]}: {obj['error']}")
        return obj

    def readline(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line; raises on EOF, on an ``error`` line, or after ``timeout``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"worker {self.args[0]} silent for {timeout}s") from None
        return self._decode(line)

    def poll(self) -> dict[str, Any] | None:
        """The next JSON line if one arrived, else None."""
        try:
            line = self._lines.get_nowait()
        except queue.Empty:
            return None
        return self._decode(line)

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        stop_process(self.proc)


@contextlib.contextmanager
def workers(specs: Sequence[Sequence[Any]], env: dict[str, str]) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for args in specs:
            started.append(Worker(args, env))
        yield started
    finally:
        for w in started:
            w.stop()


def run_workers(specs: Sequence[Sequence[Any]], env: dict[str, str], timeout: float = 120.0
                ) -> list[dict[str, Any]]:
    """Start workers, wait until all are ready, release them together, collect their results."""
    with workers(specs, env) as ws:
        for w in ws:
            w.readline(timeout)
        for w in ws:
            w.send()
        return [w.readline(timeout)["result"] for w in ws]


# --- the rig -----------------------------------------------------------------------------------


@dataclass
class NatsCreds:
    url: str
    jwt: str
    seed: str


class Rig:
    """A ppz-server (with its nats-server) and one logged-in daemon with source ``bob``,
    all under a fresh temp dir. Use as a context manager: everything is stopped on exit."""

    def __init__(self, name: str, daemon_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.daemon_env = daemon_env or {}
        self.root = Path(tempfile.mkdtemp(prefix=f"ppz-bench-{name}-"))
        self.server: ServerProcess | None = None
        self.home: DaemonHome | None = None
        self.key = ""
        self.account_id = ""
        self.nats: NatsCreds | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Rig:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        # A long JWT lifetime: no credential rotation in the middle of a measurement.
        self.server = ServerProcess(self.root / "server", env={"PPZ_NATS_JWT_TTL": "1h"}).start()
        self.key = self.server.add_key("bench")
        self.home = DaemonHome(self.root / "home", env={"PPZ_SESSION": SESSION, **self.daemon_env})
        self.home.login(self.server.url, self.key)
        status = self.home.wait_connected()
        self.account_id = status["account_id"]
        self.call("Create", {"handle": HANDLE, "kind": "message", "manifold": "", "session": SESSION})
        from ppz.serverclient import ServerClient

        reply = ServerClient().exchange(self.server.url, self.key)
        self.nats = NatsCreds(url=reply.nats_url or self.server.nats_url, jwt=reply.nats_user_jwt,
                              seed=reply.nats_user_seed)

    def close(self) -> None:
        try:
            if self.home is not None:
                self.home.kill()
        finally:
            try:
                if self.server is not None:
                    try:
                        self.server.close()
                    except Exception as exc:  # noqa: BLE001 - report, but keep cleaning
                        log(f"server stop: {exc}")
                        self.server.kill()
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------------------

    @property
    def socket(self) -> str:
        assert self.home is not None
        return str(self.home.home.socket)

    @property
    def subject(self) -> str:
        return self.subject_of(HANDLE)

    def subject_of(self, handle: str) -> str:
        from ppz import names

        return names.subject(self.account_id, "", handle, "inbox")

    def stream_of(self, handle: str) -> str:
        from ppz import names

        return names.stream_name(self.account_id, "", handle, "inbox")

    def create_source(self, handle: str) -> dict[str, str]:
        """Create a message source; returns the environment overrides that point workers at it."""
        self.call("Create", {"handle": handle, "kind": "message", "manifold": "", "session": SESSION})
        return {"BENCH_HANDLE": handle, "BENCH_SUBJECT": self.subject_of(handle),
                "BENCH_STREAM": self.stream_of(handle)}

    def daemon_pid(self) -> int:
        assert self.home is not None
        return self.home.pid()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        assert self.home is not None
        return self.home.call(method, params, timeout=timeout)

    def env(self) -> dict[str, str]:
        """Environment for CLI runs and workers: the daemon's home, the raw NATS credential
        (for baseline workers), and a bytecode cache outside the source tree (this sandbox sets
        PYTHONDONTWRITEBYTECODE, which would make every CLI run recompile ppz)."""
        assert self.home is not None and self.nats is not None
        env = dict(self.home.env)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        env.update({
            "BENCH_SOCKET": self.socket,
            "BENCH_SESSION": SESSION,
            "BENCH_HANDLE": HANDLE,
            "BENCH_SUBJECT": self.subject,
            "BENCH_STREAM": self.stream_of(HANDLE),
            "BENCH_NATS_URL": self.nats.url,
            "BENCH_NATS_JWT": self.nats.jwt,
            "BENCH_NATS_SEED": self.nats.seed,
        })
        return env


def proc_stat(pid: int) -> tuple[float, int]:
    """(utime + stime in seconds, RSS in bytes) of ``pid`` from /proc, children excluded."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def proc_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def sign_cb(seed: str) -> Any:
    """nats-py ``signature_cb`` for a user nkey seed (as tests/e2e/test_login.py does)."""
    import base64

    import nkeys

    def sign(nonce: str) -> bytes:
        return base64.b64encode(nkeys.from_seed(bytearray(seed.encode())).sign(nonce.encode()))

    return sign


class TimingProxy:
    """A TCP proxy in front of ppz-server's HTTP port that times every request it forwards:
    from the request's first bytes to the response's first bytes, per path (HTTP/1.1 keep-alive:
    one request at a time per connection). It runs on an asyncio loop of its own thread, so the
    latency it records is what a client of the server sees, plus one loopback hop both ways,
    for the daemons and for the baseline alike."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import asyncio

        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self.port = 0
        self.samples: list[tuple[str, float, float]] = []  # (path, start monotonic, latency s)
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TimingProxy:
        import asyncio

        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        import asyncio

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _cancel_all(self) -> None:
        """On the proxy's loop (asyncio's Server is not thread-safe): stop listening, then end
        every connection's task."""
        import asyncio

        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def take(self, path: str, since: float = 0.0) -> list[float]:
        """Latencies in ms of requests to ``path`` started at or after ``since`` (monotonic)."""
        return [lat * 1000 for p, t, lat in list(self.samples) if p == path and t >= since]

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        pending: list[tuple[str, float]] = []
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return

        async def upstream() -> None:
            while chunk := await reader.read(65536):
                if chunk[:1].isalpha() and b" " in chunk[:16]:  # a request line starts here
                    parts = chunk.split(b" ", 2)
                    path = parts[1].split(b"?")[0].decode("latin-1") if len(parts) > 1 else ""
                    pending.append((path, time.monotonic()))
                up_writer.write(chunk)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while chunk := await up_reader.read(65536):
                if chunk.startswith(b"HTTP/") and pending:
                    path, t0 = pending.pop(0)
                    self.samples.append((path, t0, time.monotonic() - t0))
                writer.write(chunk)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a cancelled connection ends quietly (3.11's stream callback would print it)
        finally:
            writer.close()
            up_writer.close()


def clock_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock shared by every process on the machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
