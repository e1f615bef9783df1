"""ppz-server's web stack: the Starlette application (API and console) served by uvicorn on the
server's event loop, with the error envelope down to malformed HTTP (spec/server-api.md §1)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from uvicorn.protocols.http.h11_impl import H11Protocol

from ppz.server.httpapi import JSON_CONTENT_TYPE, envelope_bytes, http_exception, unexpected_error

logger = logging.getLogger(__name__)

# How long a stopping server lets open requests (and live streams, which are told to end)
# finish before it cancels them.
GRACEFUL_SHUTDOWN_SECONDS = 3
KEEP_ALIVE_SECONDS = 30
BACKLOG = 128
# Longest request head (request line and headers) accepted, like http.server's 64 KiB line cap.
MAX_HEAD_BYTES = 64 * 1024
_REQUEST_START_KEPT = 1024


class EnvelopeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose answer to a malformed request is the JSON error envelope
    (uvicorn's own is plain text). A request line without an HTTP version is an HTTP/0.9 request,
    which gets the body alone, with no status line."""

    _request_start = b""

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and len(self._request_start) < _REQUEST_START_KEPT:
            self._request_start += data[:_REQUEST_START_KEPT]
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._request_start = b""
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        body = envelope_bytes(400, "invalid HTTP request")
        request_line = self._request_start.split(b"\n", 1)[0]
        if b" HTTP/" not in request_line:
            self.transport.write(body)
            self.transport.close()
            return
        headers = [(b"content-type", JSON_CONTENT_TYPE.encode()), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def build_app(routes: Sequence[BaseRoute], middleware: Sequence[Middleware] = ()) -> Starlette:
    app = Starlette(
        routes=list(routes),
        middleware=list(middleware),
        exception_handlers={HTTPException: http_exception, Exception: unexpected_error},
    )
    # "/api/v1/sources/" is an unknown route (404), not a redirect to "/api/v1/sources".
    app.router.redirect_slashes = False
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when ``host`` is an IPv6 literal); raises OSError when the
    address is taken, before anything is served.

    The protocol is named (``IPPROTO_TCP``, not 0): asyncio sets ``TCP_NODELAY`` only on accepted
    sockets whose ``proto`` says TCP. Without it a keep-alive reply's body (written after its
    head) waits for the client's delayed ACK: every call on a reused connection took ~40 ms."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class WebServer:
    """uvicorn serving ``app`` on an already bound socket, as a task on an event loop owned by
    someone else (the server's NATS loop, so console streams and NATS share one loop)."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        self.sock = sock
        config = uvicorn.Config(
            app,
            http=EnvelopeH11Protocol,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            headers=[("server", "ppz-server")],
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self._server = uvicorn.Server(config)
        self._future: concurrent.futures.Future[None] | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self, submit: Any, timeout: float = 10.0) -> None:
        """Start serving through ``submit(coroutine) -> concurrent Future`` and wait until the
        socket accepts."""
        coro: Coroutine[Any, Any, None] = self._server.serve(sockets=[self.sock])
        self._future = submit(coro)
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._future is not None and self._future.done():
                self._future.result()
                raise RuntimeError("the HTTP server stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop accepting, let open requests finish (bounded), and wait for the serve task."""
        self._server.should_exit = True
        if self._future is not None:
            try:
                self._future.result(GRACEFUL_SHUTDOWN_SECONDS + 5.0)
            except (concurrent.futures.TimeoutError, asyncio.CancelledError):
                logger.warning("the HTTP server did not stop in time")
        self.sock.close()
