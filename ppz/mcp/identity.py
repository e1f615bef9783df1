"""Who ``ppz mcp`` speaks as (spec/agents.md §3.1): the session's current handle, set from
``--as`` at start, and the daemon it needs (started when there is none and a credential is
stored, as ``ppz daemon start`` would)."""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread

from ppz import errors
from ppz.mcp.daemonclient import DaemonClient

logger = logging.getLogger(__name__)


def session_for(session: str, env_session: str, handle: str) -> str:
    """The session id: ``--session``, else ``PPZ_SESSION``, else ``mcp-<HANDLE>`` with ``--as``,
    else ``mcp``."""
    return session or env_session or (f"mcp-{handle}" if handle else "mcp")


def start_daemon_if_stored() -> None:
    """Blocking: when a credential is stored, make sure a daemon runs (probe, spawn, wait up to 5 s)."""
    from ppz.commands.daemon import CtlError, ensure_running, home

    home_ = home()
    if not home_.credentials.exists():
        return
    try:
        pid, started = ensure_running(home_)
    except CtlError as exc:
        logger.warning("%s", exc)
        return
    if started:
        logger.warning("daemon started pid=%d", pid)


class Identity:
    """The ``--as`` step, run once at start (:meth:`setup`); until it succeeds, every tool call
    (:meth:`ensure`) tries it again and fails with its error, so a failure is reported by each
    later call and heals once its cause (no daemon, not logged in…) is gone."""

    def __init__(self, daemon: DaemonClient, handle: str = "", start_daemon: bool = True) -> None:
        self.daemon = daemon
        self.handle = handle
        self.start_daemon = start_daemon
        self.error: errors.PpzError | None = None
        self._ready = anyio.Event()
        self._lock = anyio.Lock()

    async def setup(self) -> None:
        try:
            if self.start_daemon:
                await self._start_daemon()
            await self._become()
        finally:
            self._ready.set()

    async def wait(self) -> None:
        """Until :meth:`setup` has run (successfully or not)."""
        await self._ready.wait()

    async def ensure(self) -> None:
        """Raise the ``--as`` step's error unless it has succeeded (retrying it first)."""
        await self._ready.wait()
        if self.error is None:
            return
        async with self._lock:
            if self.error is not None:
                if self.start_daemon and self.error.code == errors.E_DAEMON_NOT_RUNNING:
                    await self._start_daemon()  # gone since, or slower to start than its 5 s
                await self._become()
        if self.error is not None:
            raise self.error

    async def _start_daemon(self) -> None:
        try:
            await self.daemon.call("Status", {}, timeout=2.0)
        except errors.PpzError as err:
            if err.code in ("", errors.E_DAEMON_NOT_RUNNING, errors.E_DAEMON_TIMEOUT):
                await anyio.to_thread.run_sync(start_daemon_if_stored)

    async def _become(self) -> None:
        """``Connect`` the handle (creating a message source when it does not exist)."""
        if not self.handle:
            return
        params = {"handle": self.handle, "session": self.daemon.session}
        try:
            try:
                await self.daemon.call("Connect", params)
            except errors.PpzError as err:
                if err.code != errors.E_SOURCE_NOT_FOUND:
                    raise
                await self.daemon.call("Create", {**params, "kind": "message"})
        except errors.PpzError as err:
            if self.error is None or self.error.message != err.message:
                logger.warning("--as=%s: %s", self.handle, err.message)
            self.error = err
        else:
            self.error = None
