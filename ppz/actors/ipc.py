"""IpcAcceptorActor: the listening Unix socket and the per-connection request threads.

The actor owns the listener; an accept thread hands every connection to a thread of its
own, which reads one request line, validates it, runs the verb's handler and always
answers (spec/ipc.md §2): one bad connection never stops the daemon.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import pykka

from ppz import errors, ipc, verbs

logger = logging.getLogger(__name__)

INTERNAL = errors.PpzError(errors.E_INTERNAL, "daemon internal error")


def send_all(conn: socket.socket, data: bytes) -> None:
    """Write a reply; a client that went away is not an error of ours."""
    try:
        conn.sendall(data)
    except OSError:
        pass


def serve_connection(
    conn: socket.socket,
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]],
    stream_handlers: dict[str, Callable[[dict[str, Any], socket.socket], None]],
) -> None:
    """Serve one request on ``conn`` and close it. Total: every path answers or closes."""
    try:
        try:
            line = ipc.read_request_line(conn)
        except ipc.RequestTooLarge as exc:
            send_all(conn, ipc.encode_error(exc))
            return
        except (ipc.RequestIncomplete, OSError):
            return
        try:
            method, raw = ipc.decode_request(line)
            params = verbs.check_params(method, raw)
            stream = stream_handlers.get(method)
            if stream is not None:
                stream(params, conn)
                return
            handler = handlers.get(method)
            if handler is None:
                raise errors.not_implemented(method)
            reply = ipc.encode_result(handler(params))
        except errors.PpzError as exc:
            reply = ipc.encode_error(exc)
        except Exception:
            logger.exception("IPC handler failed")
            reply = ipc.encode_error(INTERNAL)
        send_all(conn, reply)
    except Exception:
        logger.exception("IPC connection failed")
    finally:
        try:
            conn.close()
        except OSError:
            pass


class IpcAcceptorActor(pykka.ThreadingActor):
    """Owns the listening socket; hands each connection to its own thread."""

    use_daemon_thread = True

    def __init__(
        self,
        *,
        listener: socket.socket,
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]],
        stream_handlers: dict[str, Callable[[dict[str, Any], socket.socket], None]],
    ) -> None:
        super().__init__()
        self._listener = listener
        self._handlers = handlers
        self._stream_handlers = stream_handlers
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="ppz-ipc-accept", daemon=True)

    def on_start(self) -> None:
        self._thread.start()
        logger.debug("IPC acceptor started")

    def on_stop(self) -> None:
        self.close()
        logger.debug("IPC acceptor stopped")

    def close(self) -> None:
        """Stop accepting: close the listener (the accept thread then ends)."""
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(2.0)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                logger.warning("accept failed", exc_info=True)
                continue
            threading.Thread(
                target=serve_connection,
                args=(conn, self._handlers, self._stream_handlers),
                name="ppz-ipc-conn",
                daemon=True,
            ).start()
