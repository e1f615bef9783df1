"""A real ``ppz`` daemon and CLI for end-to-end tests.

:class:`DaemonHome` is one ``$PPZ_HOME``: it runs the real CLI as a subprocess with that
home, talks IPC to its daemon directly, and reads its files. Teardown always kills a daemon
left running (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ppz import home, ipc
from ppz.serverclient import ServerClient

CLI = [sys.executable, "-m", "ppz.cli"]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class DaemonHome:
    """One ``$PPZ_HOME`` with its daemon, driven through the real CLI."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PPZ_")}
        self.env.update({"PPZ_HOME": str(root), "PPZ_SESSION": "test-session", "NO_COLOR": "1"})
        self.env.update(env or {})
        self.home = home.Home(root=root, socket=root / "daemon.sock")
        self.foreground: subprocess.Popen[bytes] | None = None

    # --- CLI -----------------------------------------------------------------------------

    def ppz(self, *args: str, timeout: float = 60.0, env: Mapping[str, str] | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        run_env = dict(self.env)
        run_env.update(env or {})
        return subprocess.run(
            [*CLI, *args], env=run_env, capture_output=True, text=True, timeout=timeout,
            input=stdin.decode() if stdin is not None else None,
        )

    def login(self, url: str, key: str) -> subprocess.CompletedProcess[str]:
        out = self.ppz("login", url, "--apikey", key)
        assert out.returncode == 0, out.stderr
        return out

    # --- daemon ----------------------------------------------------------------------------

    def start_foreground(self, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        env.update(extra_env or {})
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root.parent / f"{self.root.name}-foreground.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([*CLI, "daemon", "start", "--foreground"], env=env,
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.foreground = proc
        wait_for(lambda: self.status_or_none() is not None or proc.poll() is not None,
                 what="daemon to answer")
        return proc

    def pid(self) -> int:
        return home.read_pid(self.home.pid)

    def call(self, method: str, params: Mapping[str, Any] | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        return ipc.call(method, params, timeout=timeout, path=str(self.home.socket))

    def status(self) -> dict[str, Any]:
        return self.call("Status", {"session": "test-session"})

    def status_or_none(self) -> dict[str, Any] | None:
        try:
            return self.call("Status", {"session": "test-session"}, timeout=2.0)
        except Exception:  # noqa: BLE001 - not up (yet)
            return None

    def wait_connected(self, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status_or_none()) and s.get("nats_state") == "connected" and s,
                        timeout=timeout, what="nats connected")

    def events(self) -> list[dict[str, Any]]:
        """Every parseable event of the active ``nats-events.jsonl``."""
        out = []
        try:
            lines = self.home.events.read_text().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def kill(self) -> None:
        """Stop whatever daemon runs for this home: SIGTERM, then SIGKILL."""
        fg = self.foreground
        if fg is not None and fg.poll() is None:
            fg.terminate()
            try:
                fg.wait(5)
            except subprocess.TimeoutExpired:
                fg.kill()
                fg.wait(5)
        pid = self.pid()
        if pid <= 0 or (fg is not None and pid == fg.pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not home.lock_is_held(self.home.lock):
                return  # (its process may linger as a zombie: the lock is the truth)
            time.sleep(0.02)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@contextlib.contextmanager
def background(h: DaemonHome, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The CLI running in the background (killed on the way out if still running)."""
    proc = subprocess.Popen([*CLI, *args], env=h.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


class Creds:
    def __init__(self, url: str, api_key: str, account_id: str) -> None:
        self.url, self.api_key, self.account_id = url, api_key, account_id


def setup_world(server: Any, h: DaemonHome, handles: tuple[str, ...] = ("alice", "bob"),
                account: str = "acme") -> dict[str, Any]:
    """Log ``h`` into ``account`` on ``server`` and create message sources ``handles``."""
    key = server.add_key(account)
    h.login(server.url, key)
    acct = h.wait_connected()["account_id"]
    creds = Creds(server.url, key, acct)
    client = ServerClient()
    for handle in handles:
        client.create_source(creds, handle, "message", "")
    return {"server": server, "home": h, "acct": acct, "creds": creds, "client": client, "key": key}
