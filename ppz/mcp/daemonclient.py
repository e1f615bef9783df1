"""The MCP server's side of the IPC protocol (spec/ipc.md §1–4), on the event loop.

The same framing, decoding and client errors as :mod:`ppz.ipc` (whose encoder and decoders it
uses), over an anyio Unix socket instead of a blocking one, so that nothing blocks the loop that
answers the host and every call is cancellable: cancelling a waiting ``Read`` or a ``ListWatch``
closes its socket, which is how the daemon learns that the client went away (a thread blocked
in ``recv`` could not be interrupted, and a wait it left behind would still consume a message).
"""

from __future__ import annotations

import errno
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ppz import ipc
from ppz.errors import E_DAEMON_NOT_RUNNING, E_DAEMON_TIMEOUT, PpzError

# A reply line may be large (List of a big account); the daemon's own request cap is 1 MiB.
MAX_REPLY_BYTES = 256 * 1024 * 1024
_CONNECT_RETRY_SECONDS = 0.01


class DaemonClient:
    """IPC calls for one session id; ``socket`` defaults to :func:`ppz.ipc.socket_path`,
    ``timeout`` (normal calls) to :func:`ppz.ipc.ipc_timeout`."""

    def __init__(self, session: str, socket: str | None = None, timeout: float | None = None) -> None:
        self.session = session
        self.socket = socket or ipc.socket_path()
        self.timeout = ipc.ipc_timeout() if timeout is None else timeout

    async def call(self, method: str, params: Mapping[str, Any] | None = None,
                   timeout: float | None = None) -> dict[str, Any]:
        """A normal call: the reply's ``result``, within the IPC deadline."""
        with deadline(self.timeout if timeout is None else timeout):
            async with self._open(method, params) as lines:
                return ipc.reply_result(await anext(lines, None))

    async def call_wait(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A wait call (``ListWatch``): no deadline; cancel the caller to close the socket."""
        async with self._open(method, params) as lines:
            return ipc.reply_result(await anext(lines, None))

    async def events(self, method: str, params: Mapping[str, Any] | None = None,
                     timeout: float | None = None) -> list[dict[str, Any]]:
        """A stream call (``Read``): every event until the daemon closes the stream, within
        ``timeout`` seconds (``None``: no deadline). An ``error`` event is raised."""
        with deadline(math.inf if timeout is None else timeout):
            async with self._open(method, params) as lines:
                return [ipc.decode_event(line) async for line in lines]

    def _open(self, method: str, params: Mapping[str, Any] | None) -> _Exchange:
        return _Exchange(self.socket, ipc.encode_request(method, params))


class deadline:  # noqa: N801 - used like anyio.fail_after
    """``anyio.fail_after`` whose expiry is ``E_DAEMON_TIMEOUT`` (ipc.md §4)."""

    def __init__(self, seconds: float) -> None:
        self._scope = anyio.fail_after(seconds)

    def __enter__(self) -> None:
        self._scope.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._scope.__exit__(*exc)
        except TimeoutError:
            raise PpzError(E_DAEMON_TIMEOUT) from None


class _Exchange:
    """One request on its own connection (ipc.md §2), as an async context manager over the
    reply's lines (without their ``\\n``; an unterminated rest at EOF counts as a line)."""

    def __init__(self, path: str, request: bytes) -> None:
        self._path = path
        self._request = request
        self._stream: SocketStream | None = None

    async def __aenter__(self) -> AsyncIterator[bytes]:
        self._stream = await _connect(self._path)
        try:
            await self._stream.send(self._request)
        except (anyio.BrokenResourceError, OSError) as exc:
            # The daemon may have answered and closed before reading it all ("request too large").
            if isinstance(exc, OSError) and exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                await self._stream.aclose()
                raise ipc.IpcDecodeError(str(exc)) from exc
        return _lines(BufferedByteReceiveStream(self._stream))

    async def __aexit__(self, *exc: Any) -> None:
        if self._stream is not None:
            await self._stream.aclose()


async def _connect(path: str) -> SocketStream:
    while True:
        try:
            return await anyio.connect_unix(path)
        except BlockingIOError:
            await anyio.sleep(_CONNECT_RETRY_SECONDS)  # EAGAIN: the listen backlog is full
        except OSError as exc:
            raise PpzError(E_DAEMON_NOT_RUNNING) from exc


async def _lines(stream: BufferedByteReceiveStream) -> AsyncIterator[bytes]:
    while True:
        try:
            yield await stream.receive_until(b"\n", MAX_REPLY_BYTES)
        except anyio.IncompleteRead:
            rest = stream.buffer
            if rest:
                yield bytes(rest)
            return
        except (anyio.BrokenResourceError, anyio.EndOfStream, ConnectionResetError):
            return
        except anyio.DelimiterNotFound:
            raise ipc.IpcDecodeError(f"reply line longer than {MAX_REPLY_BYTES} bytes") from None
