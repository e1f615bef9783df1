"""The acceptor as the daemon runs it: on the asyncio loop (spec/ipc.md §2; behaviours 2–4).

``bootstrap`` always gives ``IpcAcceptorActor`` a loop thread: ``_accept_async`` and
``_serve_async`` read and validate every request on the loop, fast handlers (the warm ``Send``)
answer there, and everything else is handed to a thread of its own. These tests start that
acceptor on a real Unix socket in a temp directory with a tiny handler table and talk to it
as the CLI does. (``test_ipc.py`` covers the same framing through ``serve_connection``.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ppz import errors, ipc
from ppz.actors.ipc import IpcAcceptorActor
from ppz.aioloop import LoopThread

from .polling import wait_until
from .test_ipc import INTERNAL, MAX, TOO_LARGE, Handler, error_of, read_to_eof

pytestmark = pytest.mark.timeout(30)

LOOP_NAME = "test-ipc-loop"


class Fast:
    """A fast handler: records the params and the thread it ran on, then answers ``result``
    (None hands the request on), raises, or first awaits ``gate`` (a future the test sets)."""

    def __init__(self, result: dict[str, Any] | None = None, raises: BaseException | None = None,
                 gate: concurrent.futures.Future[None] | None = None) -> None:
        self.result = result
        self.raises = raises
        self.gate = gate
        self.calls: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self.entered = threading.Event()

    async def __call__(self, params: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(params)
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        if self.gate is not None:
            await asyncio.wrap_future(self.gate)
        if self.raises is not None:
            raise self.raises
        return self.result


class OnThread(Handler):
    """A thread handler that also records the thread it ran on."""

    def __init__(self, result: dict[str, Any] | None = None, raises: BaseException | None = None) -> None:
        super().__init__(result, raises)
        self.threads: list[str] = []

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        return super().__call__(params)


@dataclass
class Daemon:
    path: Path
    loop: LoopThread
    start: Callable[..., None]

    def serving(self) -> int:
        """How many connections ``_serve_async`` is still serving on the loop."""
        async def count() -> int:
            return sum(1 for task in asyncio.all_tasks()
                       if getattr(task.get_coro(), "__qualname__", "").endswith("._serve_async"))

        return self.loop.run(count(), 5)

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self.path))
        return sock

    def exchange(self, data: bytes, *, eof: bool = False) -> bytes:
        """Write ``data`` (maybe then EOF) and read everything until the daemon closes.

        A daemon that refuses an oversized request closes without reading the rest, so the
        write may fail: the reply is still there to read."""
        with self.connect() as sock:
            try:
                sock.sendall(data)
                if eof:
                    sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return read_to_eof(sock)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return ipc.call(method, params or {}, timeout=10, path=str(self.path))


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    root = Path(tempfile.mkdtemp(prefix="ppz-ipc-"))  # short: Unix socket paths are limited
    path = root / "d.sock"
    loop = LoopThread(LOOP_NAME)
    loop.start()
    acceptors: list[Any] = []

    def start(handlers: dict[str, Any] | None = None, fast: dict[str, Any] | None = None,
              streams: dict[str, Any] | None = None) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        acceptors.append(IpcAcceptorActor.start(listener=listener, handlers=handlers or {},
                                                stream_handlers=streams or {}, fast_handlers=fast or {},
                                                loop_thread=loop))

    try:
        yield Daemon(path=path, loop=loop, start=start)
    finally:
        for acceptor in acceptors:
            acceptor.stop()
        loop.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- fast handlers on the loop, the rest on a thread --------------------------------------------------


def test_a_fast_handler_answers_on_the_loop_and_the_thread_handler_never_runs(daemon: Daemon) -> None:
    fast, slow = Fast({"id": "x"}), OnThread({"id": "slow"})
    daemon.start({"Send": slow}, {"Send": fast})
    assert daemon.call("Send", {"handle": "bob", "payload": "hi", "session": "s"}) == {"id": "x"}
    assert fast.threads == [LOOP_NAME]
    assert fast.calls[0]["handle"] == "bob" and fast.calls[0]["priority"] == 0  # typed defaults
    assert slow.calls == []


def test_a_fast_handler_that_answers_none_hands_the_same_params_to_a_thread(daemon: Daemon) -> None:
    fast, slow = Fast(None), OnThread({"id": "cold"})
    daemon.start({"Send": slow}, {"Send": fast})
    assert daemon.call("Send", {"handle": "bob", "payload": "hi", "session": "s"}) == {"id": "cold"}
    assert slow.calls == fast.calls
    assert slow.threads == ["ppz-ipc-conn"]


def test_a_verb_without_a_fast_handler_runs_on_a_thread(daemon: Daemon) -> None:
    status = OnThread({"logged_in": False})
    daemon.start({"Status": status}, {"Send": Fast({})})
    assert daemon.call("Status", {"session": "s"}) == {"logged_in": False}
    assert status.threads == ["ppz-ipc-conn"]


def test_a_fast_handler_error_with_a_code_is_answered_verbatim(daemon: Daemon) -> None:
    slow = OnThread()
    daemon.start({"Send": slow}, {"Send": Fast(raises=errors.PpzError(errors.E_INVALID_PRIORITY))})
    reply = json.loads(daemon.exchange(b'{"method":"Send","params":{"priority":9}}\n'))
    assert error_of(reply) == (errors.E_INVALID_PRIORITY, errors.PpzError(errors.E_INVALID_PRIORITY).message)
    assert slow.calls == []


def test_a_fast_handler_that_raises_answers_internal_error_and_logs_the_traceback(
        daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ppz.actors.ipc")
    status = Handler({"ok": True})
    daemon.start({"Status": status}, {"Send": Fast(raises=RuntimeError("kaboom"))})
    assert daemon.exchange(b'{"method":"Send"}\n') == INTERNAL
    assert [r for r in caplog.records if r.exc_info] and "kaboom" in caplog.text
    assert daemon.call("Status") == {"ok": True}


def park_a_send(daemon: Daemon, result: dict[str, Any]) -> tuple[socket.socket, concurrent.futures.Future[None]]:
    """Start the acceptor with ``Status`` and a fast ``Send`` that waits on the loop for the
    returned gate; send a ``Send`` on the returned connection and wait until it is parked."""
    gate: concurrent.futures.Future[None] = concurrent.futures.Future()
    fast = Fast(result, gate=gate)
    daemon.start({"Status": Handler({"ok": True})}, {"Send": fast})
    sock = daemon.connect()
    sock.sendall(b'{"method":"Send"}\n')
    assert fast.entered.wait(10)
    return sock, gate


def test_a_fast_handler_that_waits_does_not_hold_up_other_connections(daemon: Daemon) -> None:
    waiting, gate = park_a_send(daemon, {"id": "late"})
    with waiting:
        assert daemon.call("Status") == {"ok": True}  # answered while Send is parked on the loop
        assert json.loads(daemon.exchange(b'{"method":"Frobnicate"}\n'))["error"]["code"] == errors.E_PROTOCOL
        gate.set_result(None)
        assert json.loads(read_to_eof(waiting)) == {"result": {"id": "late"}}


def test_a_client_that_hangs_up_before_a_fast_reply_does_not_break_the_acceptor(
        daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ppz.actors.ipc")
    gone, gate = park_a_send(daemon, {"id": "nobody-listens"})
    gone.close()
    gate.set_result(None)
    wait_until(lambda: daemon.serving() == 0, "the reply to the departed client was attempted")
    assert not [r for r in caplog.records if r.exc_info]
    assert daemon.call("Status") == {"ok": True}


# --- framing (ipc.md §2) -------------------------------------------------------------------------------


def test_one_mib_without_a_newline_is_refused_on_the_loop_and_the_daemon_carries_on(daemon: Daemon) -> None:
    fast, slow = Fast({}), Handler({"ok": True})
    daemon.start({"Status": slow, "Send": Handler()}, {"Send": fast})
    assert daemon.exchange(b"x" * MAX) == TOO_LARGE
    assert daemon.exchange(b" " * MAX + b'{"method":"Send"}\n') == TOO_LARGE  # the newline comes too late
    assert fast.calls == []
    assert daemon.call("Status") == {"ok": True}


def test_a_request_line_that_just_fits_is_served(daemon: Daemon) -> None:
    fast = Fast({"id": "fits"})
    daemon.start({}, {"Send": fast})
    body = b'{"method":"Send","params":{"payload":"' + b"p" * 1000 + b'"}}'
    line = body + b" " * (MAX - 1 - len(body)) + b"\n"
    assert json.loads(daemon.exchange(line)) == {"result": {"id": "fits"}}
    assert fast.calls[0]["payload"] == "p" * 1000


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"{{{", b"[1,2]", b'"Send"', b"\xff\xfe", b"\x00\x01\x02", b'{"method":5}',
     b'{"method":"Send","params":[1]}', b'{"method":"Send","params":{"priority":"1"}}'],
    ids=["empty", "garbage", "braces", "array", "string", "bad-utf8", "binary", "method-not-string",
         "params-not-object", "wrong-field-type"],
)
def test_a_junk_line_is_a_protocol_error_and_no_handler_runs(daemon: Daemon, line: bytes) -> None:
    fast, slow = Fast({}), Handler()
    daemon.start({"Send": slow}, {"Send": fast})
    reply = daemon.exchange(line + b"\n")
    assert reply.count(b"\n") == 1 and reply.endswith(b"\n")
    code, message = error_of(json.loads(reply))
    assert code == errors.E_PROTOCOL and message
    assert fast.calls == [] and slow.calls == []


def test_an_unknown_method_is_named_and_a_reserved_one_is_not_implemented(daemon: Daemon) -> None:
    daemon.start({"Status": Handler()}, {"Send": Fast({})})
    assert error_of(json.loads(daemon.exchange(b'{"method":"Frobnicate","params":{}}\n'))) == (
        errors.E_PROTOCOL, "unknown method Frobnicate")
    assert error_of(json.loads(daemon.exchange(b'{"method":"SubsList"}\n'))) == (
        errors.E_NOT_IMPLEMENTED, "SubsList not implemented")


@pytest.mark.parametrize("partial", [b"", b'{"method":"Send"', b"x" * 300_000])
def test_a_client_that_hangs_up_mid_request_gets_no_reply_and_nothing_runs(daemon: Daemon, partial: bytes) -> None:
    fast, status = Fast({}), Handler({"ok": True})
    daemon.start({"Status": status}, {"Send": fast})
    assert daemon.exchange(partial, eof=True) == b""
    assert fast.calls == [] and status.calls == []
    assert daemon.call("Status") == {"ok": True}


def test_a_request_that_arrives_in_pieces_waits_without_holding_up_others(daemon: Daemon) -> None:
    fast = Fast({"id": "pieced"})
    daemon.start({"Status": Handler({"ok": True})}, {"Send": fast})
    with daemon.connect() as slow:
        slow.sendall(b'{"method":"Se')
        assert daemon.call("Status") == {"ok": True}
        slow.sendall(b'nd","params":{"payload":"hi"}}')
        assert daemon.call("Status") == {"ok": True}
        slow.sendall(b"\n")
        assert json.loads(read_to_eof(slow)) == {"result": {"id": "pieced"}}
    assert fast.calls[0]["payload"] == "hi"


def test_only_the_first_line_is_read_and_later_bytes_stay_for_a_stream_handler(daemon: Daemon) -> None:
    """A follow learns that its client is gone from a byte sent after the request (ipc.md §3)."""
    seen: list[bytes] = []

    def follow(params: dict[str, Any], conn: socket.socket) -> None:
        seen.append(conn.recv(64))  # blocking: the handed-off connection is blocking again
        conn.sendall(b'{"msg":{"payload":"bye"}}\n')

    daemon.start({}, {"Send": Fast({})}, {"Read": follow})
    with daemon.connect() as sock:
        sock.sendall(b'{"method":"Read","params":{"follow":true}}\n{"method":"Send"}\nX')
        assert read_to_eof(sock) == b'{"msg":{"payload":"bye"}}\n'
    assert seen == [b'{"method":"Send"}\nX']


def test_many_clients_at_once_each_get_their_own_reply(daemon: Daemon) -> None:
    async def echo(params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"payload": params["payload"]}

    daemon.start({}, {"Send": echo})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: daemon.call("Send", {"payload": f"m{i}"}), range(64)))
    assert replies == [{"payload": f"m{i}"} for i in range(64)]
