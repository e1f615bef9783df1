"""IpcAcceptorActor: the listening Unix socket and the per-connection request threads.

The actor owns the listener. On the daemon's event loop, requests are read there and the
blocking handlers run on reused pool threads; without a loop, an accept thread hands every
connection to a thread of its own. Every request is read, validated, handled and always
answered (spec/ipc.md §2): one bad connection never stops the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pykka

from ppz import errors, ipc, verbs
from ppz.aioloop import LoopThread

logger = logging.getLogger(__name__)

INTERNAL = errors.PpzError(errors.E_INTERNAL, "daemon internal error")
ACCEPT_BURST = 64  # connections accepted per wake-up of the listener, at most
PEEK_CHUNK = 65536  # bytes peeked for the request line (a longer one takes the general path)
REPLY_WAIT = 30.0  # seconds a client may take to read a reply that did not fit the socket buffer
IDLE_SECONDS = 10.0  # a connection thread with no work for this long exits (one spare stays)


def send_all(conn: socket.socket, data: bytes) -> None:
    """Write a reply; a client that went away is not an error of ours."""
    try:
        conn.sendall(data)
    except OSError:
        pass


Handlers = dict[str, Callable[[dict[str, Any]], dict[str, Any]]]
StreamHandlers = dict[str, Callable[[dict[str, Any], socket.socket], None]]
# A fast handler runs on the event loop; it returns None when the request needs the full
# (blocking) handler, which then runs on a pool thread (ConnThreads).
FastHandlers = dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]]


def serve_connection(conn: socket.socket, handlers: Handlers, stream_handlers: StreamHandlers) -> None:
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
        except errors.PpzError as exc:
            send_all(conn, ipc.encode_error(exc))
            return
        dispatch(conn, method, params, handlers, stream_handlers)
    except Exception:
        logger.exception("IPC connection failed")
    finally:
        close_quietly(conn)


def dispatch(conn: socket.socket, method: str, params: dict[str, Any], handlers: Handlers,
             stream_handlers: StreamHandlers) -> None:
    """Run the verb's handler for an already validated request and answer (not closing)."""
    try:
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


def dispatch_and_close(conn: socket.socket, method: str, params: dict[str, Any], handlers: Handlers,
                       stream_handlers: StreamHandlers) -> None:
    try:
        conn.setblocking(True)
        dispatch(conn, method, params, handlers, stream_handlers)
    except Exception:
        logger.exception("IPC connection failed")
    finally:
        close_quietly(conn)


class ConnThreads:
    """Reusable threads for the blocking handlers, fed by a queue.

    Handing a connection over is one ``put``: the event loop does not wait for a thread to
    start (``Thread.start`` blocks its caller until the new thread runs, which cost the loop
    0.2–0.4 ms per request on a busy machine, docs/performance.md). One idle thread is kept as
    a spare; the thread that takes the last spare's place starts the next one itself, off the
    loop. A thread idle for ``idle_seconds`` exits unless it is the last spare.

    No lock: the bookkeeping is a second queue holding one token per idle thread. A thread
    takes its token when it takes a job and gives it back when the job is done. ``submit``
    puts the job, then starts a thread itself if no token is left; a retiring thread takes its
    token, then stays if a job is waiting. Whatever the interleaving, a job put is taken by an
    idle thread, or ``submit`` saw no token and started one.
    """

    def __init__(self, name: str = "ppz-ipc-conn", idle_seconds: float = IDLE_SECONDS) -> None:
        self._name = name
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()
        self._spares: queue.SimpleQueue[None] = queue.SimpleQueue()  # one token per idle thread

    def start(self) -> None:
        """Start the first spare (from the actor's thread, before any hand-off)."""
        self._spawn()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread; blocks only when every thread is busy."""
        self._jobs.put((fn, args))
        if self._spares.empty():  # rare: the spare's replacement has not started yet
            self._spawn()

    def _spawn(self) -> None:
        self._spares.put(None)
        try:
            threading.Thread(target=self._work, name=self._name, daemon=True).start()
        except BaseException:
            self._take_token()
            raise

    def _take_token(self) -> None:
        try:
            self._spares.get_nowait()
        except queue.Empty:  # cannot happen: every idle thread put one
            pass

    def _retire(self) -> bool:
        """True when this idle thread may exit: it is not the last spare and no job waits."""
        if self._spares.qsize() <= 1:
            return False
        self._take_token()
        if self._jobs.empty():
            return True
        self._spares.put(None)  # a job came meanwhile: stay and take it
        return False

    def _work(self) -> None:
        while True:
            try:
                fn, args = self._jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                if self._retire():
                    return
                continue
            self._take_token()
            if self._spares.empty():
                try:
                    self._spawn()
                except Exception:
                    logger.exception("cannot start an IPC connection thread")
            try:
                fn(*args)
            except Exception:
                logger.exception("IPC connection failed")
            self._spares.put(None)


def close_quietly(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def read_request_line_async(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The request line without its newline, read without blocking the loop.

    Like ``ipc.read_request_line``: peeks and consumes only up to the newline, so bytes the
    client sends later (a follow's "client gone" signal) stay in the socket.
    """
    buf = bytearray()
    while True:
        try:
            chunk = conn.recv(min(PEEK_CHUNK, ipc.MAX_REQUEST_BYTES - len(buf)), socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(loop, conn)
            continue
        if not chunk:
            raise ipc.RequestIncomplete(f"EOF after {len(buf)} bytes without a newline")
        end = chunk.find(b"\n")
        want = len(chunk) if end < 0 else end + 1
        buf += conn.recv(want)
        if end >= 0:
            return bytes(buf[:-1])
        if len(buf) >= ipc.MAX_REQUEST_BYTES:
            raise ipc.RequestTooLarge()


class IpcAcceptorActor(pykka.ThreadingActor):
    """Owns the listening socket.

    With a ``loop_thread`` the listener is served on that asyncio loop: requests are read and
    validated there, fast handlers (``Send`` on a warm path) answer there without a thread,
    and everything else runs on a reused pool thread (:class:`ConnThreads`). Without one, an
    accept thread hands each connection to a thread.
    """

    use_daemon_thread = True

    def __init__(
        self,
        *,
        listener: socket.socket,
        handlers: Handlers,
        stream_handlers: StreamHandlers,
        fast_handlers: FastHandlers | None = None,
        loop_thread: LoopThread | None = None,
    ) -> None:
        super().__init__()
        self._listener = listener
        self._handlers = handlers
        self._stream_handlers = stream_handlers
        self._fast = fast_handlers or {}
        self._loop_thread = loop_thread
        self._closing = threading.Event()
        self._threads = ConnThreads()
        self._task: concurrent.futures.Future[None] | None = None
        self._thread = threading.Thread(target=self._accept_loop, name="ppz-ipc-accept", daemon=True)

    def on_start(self) -> None:
        if self._loop_thread is not None:
            self._threads.start()
            self._listener.setblocking(False)
            self._task = self._loop_thread.submit(self._accept_async())
        else:
            self._thread.start()
        logger.debug("IPC acceptor started")

    def on_stop(self) -> None:
        self.close()
        logger.debug("IPC acceptor stopped")

    def close(self) -> None:
        """Stop accepting: close the listener (the accept thread or task then ends)."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._task is not None and self._loop_thread is not None:
            self._loop_thread.loop.call_soon_threadsafe(self._task.cancel)
            try:
                self._task.result(2.0)
            except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):  # noqa: BLE001 - closing anyway
                pass
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                logger.warning("accept failed", exc_info=True)
                time.sleep(0.01)
                continue
            threading.Thread(
                target=serve_connection,
                args=(conn, self._handlers, self._stream_handlers),
                name="ppz-ipc-conn",
                daemon=True,
            ).start()

    async def _accept_async(self) -> None:
        """Accept on the loop until cancelled: the listener is watched once (one ``add_reader``
        for its lifetime, not one per connection), and each wake-up accepts every pending
        connection."""
        loop = asyncio.get_running_loop()
        fd = self._listener.fileno()
        loop.add_reader(fd, self._accept_pending, loop)
        try:
            await loop.create_future()  # until close() cancels this task
        finally:
            loop.remove_reader(fd)

    def _accept_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._closing.is_set():
                    logger.warning("accept failed", exc_info=True)
                return
            try:
                conn.setblocking(False)
                self._serve_now(loop, conn)
            except Exception:
                logger.exception("IPC connection failed")
                close_quietly(conn)

    def _serve_now(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        """Serve a new connection from the accept callback: the request line has usually
        arrived with the connection, and then only a fast handler's work needs a task. Anything
        else (the line still on its way, a long line) takes the general path, a task."""
        try:
            chunk = conn.recv(PEEK_CHUNK, socket.MSG_PEEK)
        except BlockingIOError:
            chunk = b""
        except OSError:
            close_quietly(conn)
            return
        end = chunk.find(b"\n")
        if end < 0:
            loop.create_task(self._serve_async(loop, conn))
            return
        line = conn.recv(end + 1)[:-1]
        self._answer(loop, conn, line)

    def _answer(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, line: bytes) -> None:
        """Decode and validate the request line; answer an invalid one here, run a fast handler
        in a task, hand anything else to a thread. Owns ``conn`` from here on."""
        try:
            method, raw = decode_request(line)
            params = verbs.check_params(method, raw)
        except Exception as exc:  # noqa: BLE001 - answered: its code, or E_INTERNAL (ipc.md §2)
            reply_error(loop, conn, exc)
            return
        fast = self._fast.get(method)
        if fast is not None:
            loop.create_task(self._run_fast(loop, conn, fast, method, params))
        else:
            self._hand_off(conn, method, params)

    async def _run_fast(self, loop: asyncio.AbstractEventLoop, conn: socket.socket,
                        fast: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]], method: str,
                        params: dict[str, Any]) -> None:
        try:
            reply = await fast(params)
        except Exception as exc:  # noqa: BLE001 - answered: its code, or E_INTERNAL (ipc.md §2)
            reply_error(loop, conn, exc)
            return
        if reply is None:
            self._hand_off(conn, method, params)
        else:
            reply_and_close(loop, conn, encode_result(reply))

    def _hand_off(self, conn: socket.socket, method: str, params: dict[str, Any]) -> None:
        """The blocking handler, on a pool thread (which closes ``conn``); returns at once."""
        try:
            self._threads.submit(dispatch_and_close, conn, method, params, self._handlers,
                                 self._stream_handlers)
        except Exception:
            logger.exception("IPC connection failed")
            close_quietly(conn)

    async def _serve_async(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        """The general path: wait for the whole request line without blocking the loop."""
        try:
            line = await read_request_line_async(loop, conn)
        except ipc.RequestTooLarge as exc:
            reply_and_close(loop, conn, ipc.encode_error(exc))
            return
        except (ipc.RequestIncomplete, OSError):
            close_quietly(conn)
            return
        except BaseException:
            close_quietly(conn)
            raise
        self._answer(loop, conn, line)


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``ipc.decode_request`` with orjson, falling back to the standard library whenever orjson
    refuses (so the answers and error texts are exactly the standard library's)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ipc.decode_request(line)
    return ipc.request_fields(obj)


def encode_result(result: dict[str, Any]) -> bytes:
    """``ipc.encode_result`` with orjson (compact, non-ASCII as UTF-8); whatever orjson cannot
    write (lone surrogates, integers beyond 64 bits) goes through the standard library."""
    try:
        return orjson.dumps({"result": result}) + b"\n"
    except orjson.JSONEncodeError:
        return ipc.encode_result(result)


def reply_error(loop: asyncio.AbstractEventLoop, conn: socket.socket, exc: Exception) -> None:
    """Answer a failed request (from its ``except`` block): its PpzError, else E_INTERNAL."""
    if isinstance(exc, errors.PpzError):
        reply_and_close(loop, conn, ipc.encode_error(exc))
        return
    logger.exception("IPC handler failed")
    reply_and_close(loop, conn, ipc.encode_error(INTERNAL))


def reply_and_close(loop: asyncio.AbstractEventLoop, conn: socket.socket, data: bytes) -> None:
    """Write ``data`` and close ``conn``: at once when the socket takes it all (a reply fits in
    the socket buffer), else in a task that gives the client ``REPLY_WAIT`` seconds to read."""
    try:
        sent = conn.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        close_quietly(conn)
        return
    if sent == len(data):
        close_quietly(conn)
        return
    loop.create_task(_reply_rest(loop, conn, data[sent:]))


async def _reply_rest(loop: asyncio.AbstractEventLoop, conn: socket.socket, data: bytes) -> None:
    try:
        await asyncio.wait_for(loop.sock_sendall(conn, data), REPLY_WAIT)
    except (OSError, TimeoutError):
        pass
    finally:
        close_quietly(conn)
