"""The daemon's side of IPC: framing, dispatch and the acceptor (spec/ipc.md §2, §6, §8; behaviours 2–5).

``serve_connection`` is driven over a ``socket.socketpair()`` with real handler callables;
``IpcAcceptorActor`` over a real Unix socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ppz import errors, ipc
from ppz.actors.ipc import ConnThreads, IpcAcceptorActor, serve_connection
from ppz.verbs import RESERVED

pytestmark = pytest.mark.timeout(20)

MAX = ipc.MAX_REQUEST_BYTES
TOO_LARGE = b'{"error":{"code":"E_PROTOCOL","message":"request too large"}}\n'
INTERNAL = b'{"error":{"code":"E_INTERNAL","message":"daemon internal error"}}\n'


class Handler:
    """A verb handler that records the params it was given and answers ``result`` (or raises)."""

    def __init__(self, result: dict[str, Any] | None = None, raises: BaseException | None = None) -> None:
        self.result = {} if result is None else result
        self.raises = raises
        self.calls: list[dict[str, Any]] = []

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(params)
        if self.raises is not None:
            raise self.raises
        return self.result


class Stream:
    """A streaming handler (``Read``): writes ``lines`` to the connection, then maybe raises."""

    def __init__(self, lines: tuple[bytes, ...] = (), raises: BaseException | None = None) -> None:
        self.lines = lines
        self.raises = raises
        self.calls: list[dict[str, Any]] = []

    def __call__(self, params: dict[str, Any], conn: socket.socket) -> None:
        self.calls.append(params)
        for line in self.lines:
            conn.sendall(line)
        if self.raises is not None:
            raise self.raises


def read_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def serve(request: bytes, handlers: dict[str, Any] | None = None, streams: dict[str, Any] | None = None,
          *, eof: bool = False) -> bytes:
    """Send ``request`` to ``serve_connection`` on a socketpair; everything it wrote before closing.

    ``eof`` closes the client's sending side after the request. Without it the reply can only
    end with EOF if the daemon closes the connection itself.
    """
    client, server = socket.socketpair()
    client.settimeout(10)
    thread = threading.Thread(target=serve_connection, args=(server, handlers or {}, streams or {}),
                              daemon=True)
    thread.start()
    with client:
        client.sendall(request)
        if eof:
            client.shutdown(socket.SHUT_WR)
        reply = read_to_eof(client)
    thread.join(10)
    assert not thread.is_alive(), "serve_connection did not return"
    return reply


def call(method: str, params: object = None, handlers: dict[str, Any] | None = None,
         streams: dict[str, Any] | None = None) -> Any:
    """One request with ``params`` (omitted when None); the decoded single reply line."""
    request = {"method": method} if params is None else {"method": method, "params": params}
    reply = serve(json.dumps(request).encode() + b"\n", handlers, streams)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
    return json.loads(reply)


def error_of(reply: Any) -> tuple[str, str]:
    assert set(reply) == {"error"}, reply
    return reply["error"]["code"], reply["error"]["message"]


# --- framing (ipc.md §2) -----------------------------------------------------------------------------


def test_success_is_exactly_one_result_line_then_close() -> None:
    who = Handler({"entries": [{"handle": "bob", "payload": "héllo"}]})
    reply = serve(b'{"method":"Who","params":{}}\n', {"Who": who})
    assert reply.count(b"\n") == 1 and reply.endswith(b"\n")
    assert json.loads(reply) == {"result": {"entries": [{"handle": "bob", "payload": "héllo"}]}}


def test_an_empty_result_is_an_empty_object() -> None:
    assert serve(b'{"method":"Logout"}\n', {"Logout": Handler()}) == b'{"result":{}}\n'


def test_one_mib_without_a_newline_is_refused_and_the_handler_never_runs() -> None:
    who = Handler()
    assert serve(b"x" * MAX, {"Who": who}) == TOO_LARGE
    assert who.calls == []


def test_a_newline_right_after_one_mib_is_too_late() -> None:
    assert serve(b" " * MAX + b"\n", {"Who": Handler()}) == TOO_LARGE


def test_a_request_line_that_just_fits_is_served() -> None:
    body = b'{"method":"Who"}'
    who = Handler({"ok": True})
    reply = serve(body + b" " * (MAX - 1 - len(body)) + b"\n", {"Who": who})
    assert json.loads(reply) == {"result": {"ok": True}}
    assert who.calls == [{}]


@pytest.mark.parametrize("partial", [b"", b'{"method":"Who"}', b"x" * 300_000])
def test_eof_before_the_newline_closes_without_a_reply(partial: bytes) -> None:
    who = Handler()
    assert serve(partial, {"Who": who}, eof=True) == b""
    assert who.calls == []


def test_only_the_first_line_is_the_request() -> None:
    who, logout = Handler({"who": 1}), Handler()
    reply = serve(b'{"method":"Who"}\n{"method":"Logout"}\n', {"Who": who, "Logout": logout})
    assert json.loads(reply) == {"result": {"who": 1}}
    assert logout.calls == []


@pytest.mark.parametrize(
    "line",
    [b'{"method":', b"not json", b"[1,2]", b'"Who"', b"\xff\xfe", b'{"method":5}'],
    ids=["truncated", "garbage", "array", "string", "bad-utf8", "method-not-string"],
)
def test_a_request_that_does_not_decode_is_a_protocol_error(line: bytes) -> None:
    who = Handler()
    code, message = error_of(json.loads(serve(line + b"\n", {"Who": who})))
    assert code == errors.E_PROTOCOL
    assert message
    assert who.calls == []


@pytest.mark.parametrize("params", [[], ["a"], "x", 1, True], ids=["empty-array", "array", "string",
                                                                 "number", "bool"])
def test_params_that_are_not_an_object_are_a_protocol_error(params: object) -> None:
    status = Handler()
    assert error_of(call("Status", params, {"Status": status}))[0] == errors.E_PROTOCOL
    assert status.calls == []


@pytest.mark.parametrize("request_line", [b'{"method":"Who"}', b'{"method":"Who","params":null}'])
def test_absent_or_null_params_read_as_an_empty_object(request_line: bytes) -> None:
    who = Handler()
    serve(request_line + b"\n", {"Who": who})
    assert who.calls == [{}]


def test_absent_params_give_the_handler_typed_defaults() -> None:
    status = Handler()
    call("Status", None, {"Status": status})
    assert status.calls == [{"session": ""}]


def test_unknown_params_are_ignored() -> None:
    status = Handler({"logged_in": False})
    reply = call("Status", {"session": "sid-1", "bogus": [1, {"x": None}], "jsonrpc": "2.0"},
                 {"Status": status})
    assert reply == {"result": {"logged_in": False}}
    assert status.calls == [{"session": "sid-1"}]


WRONG_TYPES = [
    ("Status", "session", 7),
    ("Login", "url", ["http://x"]),
    ("Send", "payload", {"text": "hi"}),
    ("Send", "priority", "1"),
    ("Send", "priority", 1.5),
    ("Send", "ack_requested", 1),
    ("SendBatch", "payloads", "hi"),
    ("SendBatch", "payloads", ["hi", 2]),
    ("Read", "follow", "true"),
    ("Read", "head_limit", True),
    ("List", "patterns", [None]),
    ("PipeCreate", "ttl_seconds", "60"),
    ("PipeSet", "max_bytes", 2**63),
    ("Diag", "since_unix", -(2**63) - 1),
]


@pytest.mark.parametrize(("method", "field", "value"), WRONG_TYPES,
                         ids=[f"{m}-{f}-{v!r}" for m, f, v in WRONG_TYPES])
def test_a_field_of_the_wrong_type_is_a_protocol_error(method: str, field: str, value: object) -> None:
    handler, stream = Handler(), Stream()
    code, message = error_of(call(method, {field: value}, {method: handler}, {"Read": stream}))
    assert code == errors.E_PROTOCOL
    assert repr(field) in message
    assert handler.calls == [] and stream.calls == []


def test_an_unknown_method_is_named() -> None:
    assert error_of(call("Frobnicate", {}, {"Who": Handler()})) == (errors.E_PROTOCOL,
                                                                      "unknown method Frobnicate")


def test_a_missing_method_is_an_unknown_method() -> None:
    code, message = error_of(json.loads(serve(b'{"params":{}}\n', {"Who": Handler()})))
    assert code == errors.E_PROTOCOL
    assert message.startswith("unknown method")


@pytest.mark.parametrize("verb", sorted(RESERVED))
def test_reserved_verbs_are_not_implemented(verb: str) -> None:
    assert sorted(RESERVED) == sorted(["SubsList", "SubsAdd", "SubsRemove", "SubsWait", "ScheduleCreate",
                                       "ScheduleList", "ScheduleRemove", "ACL", "Subscribe"])
    handler = Handler()
    assert error_of(call(verb, {}, {verb: handler})) == (errors.E_NOT_IMPLEMENTED, f"{verb} not implemented")
    assert handler.calls == []


# --- sessions (ipc.md §6) ----------------------------------------------------------------------------

BAD_SESSIONS = ["../x", ".", "..", "a/b", "/", "a\x00b"]


@pytest.mark.parametrize("session", BAD_SESSIONS, ids=repr)
@pytest.mark.parametrize("method", ["Status", "Send", "Disconnect", "PipeDestroy"])
def test_an_unusable_session_is_refused_before_the_handler(method: str, session: str) -> None:
    handler = Handler()
    reply = call(method, {"session": session}, {method: handler})
    assert error_of(reply) == (errors.E_PROTOCOL, f"invalid session '{session}'")
    assert handler.calls == []


def test_an_unusable_session_is_refused_before_a_stream_starts() -> None:
    stream = Stream((b'{"msg":{}}\n',))
    reply = call("Read", {"session": "..", "follow": True}, {}, {"Read": stream})
    assert error_of(reply) == (errors.E_PROTOCOL, "invalid session '..'")
    assert stream.calls == []


@pytest.mark.parametrize("method", ["Who", "Logout", "Diag", "Complete", "Login"])
def test_verbs_without_a_session_ignore_one_sent_anyway(method: str) -> None:
    handler = Handler({"ok": 1})
    assert call(method, {"session": "../../etc"}, {method: handler}) == {"result": {"ok": 1}}
    assert len(handler.calls) == 1 and "session" not in handler.calls[0]


@pytest.mark.parametrize("session", ["", "default", "sid-48213", "a.b", "...", "agent 7"])
def test_usable_sessions_reach_the_handler_verbatim(session: str) -> None:
    status = Handler()
    call("Status", {"session": session}, {"Status": status})
    assert status.calls == [{"session": session}]


# --- handler failures (ipc.md §2) --------------------------------------------------------------------


def test_a_handler_that_raises_answers_internal_error_and_logs_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="ppz.actors.ipc")
    assert serve(b'{"method":"Who"}\n', {"Who": Handler(raises=RuntimeError("kaboom"))}) == INTERNAL
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1
    assert "kaboom" in caplog.text


def test_a_handler_error_with_a_code_is_answered_verbatim() -> None:
    switch = Handler(raises=errors.source_not_found("bob"))
    assert error_of(call("Switch", {"handle": "bob"}, {"Switch": switch})) == (
        errors.E_SOURCE_NOT_FOUND, "source 'bob' not found")


def test_a_client_that_leaves_before_the_reply_does_not_break_the_server() -> None:
    client, server = socket.socketpair()
    gone = threading.Event()

    def slow(params: dict[str, Any]) -> dict[str, Any]:
        assert gone.wait(5)
        return {"late": True}

    thread = threading.Thread(target=serve_connection, args=(server, {"Who": slow}, {}), daemon=True)
    thread.start()
    client.sendall(b'{"method":"Who"}\n')
    client.close()
    gone.set()
    thread.join(5)
    assert not thread.is_alive()


# --- streams (ipc.md §3) -----------------------------------------------------------------------------


def test_a_stream_handler_writes_its_own_lines_without_a_result_wrapper() -> None:
    lines = (b'{"meta":{"cols":80,"rows":24}}\n', b'{"msg":{"id":"1","payload":"hi"}}\n')
    stream = Stream(lines)
    reply = serve(b'{"method":"Read","params":{"handle":"bob","follow":false,"extra":1}}\n', {},
                  {"Read": stream})
    assert reply == b"".join(lines)
    assert stream.calls[0]["handle"] == "bob"
    assert stream.calls[0]["follow"] is False
    assert "extra" not in stream.calls[0]


@pytest.mark.parametrize(
    ("raises", "expected"),
    [(RuntimeError("boom"), INTERNAL),
     (errors.PpzError(errors.E_NOT_LOGGED_IN), errors.PpzError(errors.E_NOT_LOGGED_IN))],
    ids=["untyped", "typed"],
)
def test_a_failing_stream_ends_with_exactly_one_error_line(raises: BaseException, expected: Any) -> None:
    reply = serve(b'{"method":"Read"}\n', {}, {"Read": Stream(raises=raises)})
    if isinstance(expected, bytes):
        assert reply == expected
    else:
        assert reply == ipc.encode_error(expected)


# --- the acceptor actor --------------------------------------------------------------------------------


@pytest.fixture
def socket_path() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ppz-ipc-"))  # short: Unix socket paths are limited
    yield root / "d.sock"
    shutil.rmtree(root, ignore_errors=True)


def connect_and_send(path: Path, data: bytes, *, eof: bool = False) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def start_acceptor(path: Path, handlers: dict[str, Any]) -> Any:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    return IpcAcceptorActor.start(listener=listener, handlers=handlers, stream_handlers={})


def test_after_bad_connections_the_next_one_is_served_normally(socket_path: Path) -> None:
    status = Handler({"logged_in": False})
    start_acceptor(socket_path, {"Status": status, "Who": Handler(raises=RuntimeError("boom"))})
    assert connect_and_send(socket_path, b"x" * MAX) == TOO_LARGE
    assert connect_and_send(socket_path, b'{"method":"Status"', eof=True) == b""
    assert connect_and_send(socket_path, b'{"method":"Who"}\n') == INTERNAL
    assert error_of(json.loads(connect_and_send(socket_path, b"{{{\n")))[0] == errors.E_PROTOCOL
    assert ipc.call("Status", {"session": "s"}, timeout=5, path=str(socket_path)) == {"logged_in": False}
    assert status.calls == [{"session": "s"}]


def test_every_connection_has_its_own_thread(socket_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocking(params: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        assert release.wait(10)
        return {}

    start_acceptor(socket_path, {"ListWatch": blocking, "Status": Handler({"fast": True})})
    waiting = threading.Thread(target=connect_and_send, args=(socket_path, b'{"method":"ListWatch"}\n'),
                               daemon=True)
    waiting.start()
    try:
        assert entered.wait(5)
        assert ipc.call("Status", timeout=5, path=str(socket_path)) == {"fast": True}
    finally:
        release.set()
        waiting.join(5)


def test_a_stopped_acceptor_accepts_nothing(socket_path: Path) -> None:
    acceptor = start_acceptor(socket_path, {"Status": Handler()})
    acceptor.stop()
    with pytest.raises(errors.PpzError) as caught:
        ipc.call("Status", timeout=2, path=str(socket_path))
    assert caught.value.code == errors.E_DAEMON_NOT_RUNNING


# --- the acceptor on the event loop (the daemon's mode) ------------------------------------------


@pytest.fixture
def loop_acceptor(socket_path: Path) -> Iterator[Any]:
    """``start(handlers, streams, fast)``: an acceptor serving ``socket_path`` on a LoopThread."""
    from ppz.aioloop import LoopThread

    loop_thread = LoopThread("test-loop")
    loop_thread.start()
    started: list[Any] = []

    def start(handlers: dict[str, Any], streams: dict[str, Any] | None = None,
              fast: dict[str, Any] | None = None) -> Any:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(socket_path))
        listener.listen(16)
        ref = IpcAcceptorActor.start(listener=listener, handlers=handlers, stream_handlers=streams or {},
                                     fast_handlers=fast or {}, loop_thread=loop_thread)
        started.append(ref)
        return ref

    start.loop_thread = loop_thread  # type: ignore[attr-defined]
    yield start
    for ref in started:
        ref.stop()
    loop_thread.stop()


@contextlib.contextmanager
def loop_paused(loop_thread: Any) -> Iterator[None]:
    """Hold the event loop (a callback that blocks it) for the duration of the block."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    loop_thread.loop.call_soon_threadsafe(hold)
    assert holding.wait(5)
    try:
        yield
    finally:
        release.set()


class Fast:
    """A fast handler: records the thread it ran on and answers ``result`` (None: not warm)."""

    def __init__(self, result: dict[str, Any] | None, raises: BaseException | None = None) -> None:
        self.result = result
        self.raises = raises
        self.threads: list[str] = []

    async def __call__(self, params: dict[str, Any]) -> dict[str, Any] | None:
        self.threads.append(threading.current_thread().name)
        if self.raises is not None:
            raise self.raises
        return self.result


def test_on_the_loop_a_fast_handler_answers_there_and_others_run_on_threads(loop_acceptor: Any,
                                                                            socket_path: Path) -> None:
    fast = Fast({"id": "x", "text": "é"})
    status = Handler({"logged_in": False})
    loop_acceptor({"Status": status, "Who": Handler({"who": 1})}, fast={"Status": Fast(None), "Who": fast})
    assert ipc.call("Who", timeout=5, path=str(socket_path)) == {"id": "x", "text": "é"}
    assert fast.threads == ["test-loop"]
    # Not warm (None): the full handler answers, on a thread.
    assert ipc.call("Status", {"session": "s"}, timeout=5, path=str(socket_path)) == {"logged_in": False}
    assert status.calls == [{"session": "s"}]


def test_on_the_loop_bad_requests_get_their_answers(loop_acceptor: Any, socket_path: Path) -> None:
    loop_acceptor({"Status": Handler()}, fast={"Who": Fast(None, raises=RuntimeError("boom")),
                                                "Diag": Fast(None, raises=errors.PpzError(errors.E_NOT_LOGGED_IN))})
    assert connect_and_send(socket_path, b"x" * MAX) == TOO_LARGE
    assert connect_and_send(socket_path, b'{"method":"Status"', eof=True) == b""
    assert connect_and_send(socket_path, b'{"method":"Who"}\n') == INTERNAL
    assert error_of(json.loads(connect_and_send(socket_path, b'{"method":"Diag"}\n')))[0] == errors.E_NOT_LOGGED_IN
    assert error_of(json.loads(connect_and_send(socket_path, b"{{{\n")))[0] == errors.E_PROTOCOL
    # The standard library's texts, also where orjson would decode differently or not at all.
    for line in (b'{"method":"Status","params":{"session":"\\ud800"}}', b"[1]", b'{"method":1}', b"\xff"):
        try:
            ipc.decode_request(line)
        except errors.PpzError as exc:
            want: bytes = ipc.encode_error(exc)
        else:
            want = b'{"result":{}}\n'
        assert connect_and_send(socket_path, line + b"\n") == want
    assert ipc.call("Status", {"session": "s"}, timeout=5, path=str(socket_path)) == {}


def test_on_the_loop_bytes_after_the_request_line_stay_in_the_socket(loop_acceptor: Any,
                                                                      socket_path: Path) -> None:
    seen: list[bytes] = []

    def read(params: dict[str, Any], conn: socket.socket) -> None:
        seen.append(conn.recv(100))  # a follow's "client gone" read
        conn.sendall(b'{"msg":1}\n')

    loop_acceptor({}, streams={"Read": read})
    assert connect_and_send(socket_path, b'{"method":"Read","params":{}}\nXY') == b'{"msg":1}\n'
    # Again with everything in the socket before the acceptor wakes up (its other path).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        with loop_paused(loop_acceptor.loop_thread):
            sock.connect(str(socket_path))
            sock.sendall(b'{"method":"Read","params":{}}\nZ')
        assert read_to_eof(sock) == b'{"msg":1}\n'
    assert seen == [b"XY", b"Z"]


def test_on_the_loop_a_reply_larger_than_the_socket_buffer_arrives_whole(loop_acceptor: Any,
                                                                          socket_path: Path) -> None:
    big = "y" * (4 * 1024 * 1024)
    loop_acceptor({}, fast={"Who": Fast({"blob": big})})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(b'{"method":"Who"}\n')
        assert json.loads(read_to_eof(sock)) == {"result": {"blob": big}}


def test_on_the_loop_a_blocked_handler_does_not_hold_up_the_next_request(loop_acceptor: Any,
                                                                         socket_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocking(params: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        assert release.wait(10)
        return {"late": True}

    loop_acceptor({"ListWatch": blocking, "Status": Handler({"ok": True})})
    waiting: list[bytes] = []
    thread = threading.Thread(
        target=lambda: waiting.append(connect_and_send(socket_path, b'{"method":"ListWatch"}\n')), daemon=True)
    thread.start()
    try:
        assert entered.wait(5)
        for _ in range(3):
            assert ipc.call("Status", timeout=5, path=str(socket_path)) == {"ok": True}
    finally:
        release.set()
        thread.join(5)
    assert waiting == [b'{"result":{"late":true}}\n']


# --- ConnThreads: the reused threads of the blocking handlers -------------------------------------


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_conn_threads_reuse_their_threads() -> None:
    pool = ConnThreads(name="test-pool-reuse")
    pool.start()
    ran_on: list[threading.Thread] = []  # the Thread objects themselves: never reused, unlike idents
    for _ in range(20):
        done = threading.Event()
        pool.submit(lambda d=done: (ran_on.append(threading.current_thread()), d.set()))
        assert done.wait(5)
    # One thread takes a job and starts the next spare; from then on the two take turns.
    assert len(set(ran_on)) <= 2
    assert all(t.name == "test-pool-reuse" for t in ran_on)


def test_conn_threads_run_a_job_while_every_other_thread_is_blocked() -> None:
    pool = ConnThreads(name="test-pool-blocked")
    pool.start()
    release = threading.Event()
    started = [threading.Event() for _ in range(4)]
    try:
        for ev in started:
            pool.submit(lambda e=ev: (e.set(), release.wait(10)))
        for ev in started:
            assert ev.wait(5)
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(5)
    finally:
        release.set()


def test_conn_threads_idle_threads_exit_but_one_spare_stays() -> None:
    from serverfixture import wait_until

    pool = ConnThreads(name="test-pool-idle", idle_seconds=0.05)
    pool.start()
    release = threading.Event()
    started = [threading.Event() for _ in range(3)]
    for ev in started:
        pool.submit(lambda e=ev: (e.set(), release.wait(10)))
    for ev in started:
        assert ev.wait(5)
    assert len(pool_threads("test-pool-idle")) >= 4  # three busy, one spare
    release.set()
    wait_until(lambda: len(pool_threads("test-pool-idle")) == 1, 10, message="idle threads to exit")
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(5)


def test_conn_threads_survive_a_failing_job(caplog: pytest.LogCaptureFixture) -> None:
    pool = ConnThreads(name="test-pool-fail")
    pool.start()

    def boom() -> None:
        raise RuntimeError("boom")

    from serverfixture import wait_until

    with caplog.at_level(logging.ERROR, logger="ppz.actors.ipc"):
        pool.submit(boom)
        # Logged by the pool thread, which then carries on (an uncaught error would end it).
        wait_until(lambda: any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records), 5,
                   message="the failure to be logged")
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(5)


def test_conn_threads_submit_starts_a_thread_when_no_spare_is_left() -> None:
    """No idle thread (none started yet, or every spare retiring at once): ``submit`` starts one."""
    pool = ConnThreads(name="test-pool-nospare")  # not started: no spare at all
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(5)


def test_conn_threads_an_idle_thread_retires_only_when_it_is_not_the_last_spare_and_no_job_waits() -> None:
    pool = ConnThreads(name="test-pool-retire")  # its bookkeeping, driven by hand (no thread)
    pool._spares.put(None)
    assert not pool._retire()  # the last spare stays
    pool._spares.put(None)
    pool._jobs.put((lambda: None, ()))
    assert not pool._retire()  # a job came meanwhile: stay and take it
    assert pool._spares.qsize() == 2  # and keep its token
    pool._jobs.get_nowait()
    assert pool._retire()
    assert pool._spares.qsize() == 1


def test_conn_threads_lose_no_job_while_idle_threads_retire() -> None:
    """Threads retire every millisecond while jobs arrive in bursts from two submitters: every
    job still runs."""
    pool = ConnThreads(name="test-pool-churn", idle_seconds=0.001)
    pool.start()
    done = threading.Semaphore(0)

    def submitter(bursts: int) -> None:
        for i in range(bursts):
            for _ in range(1 + i % 3):
                pool.submit(done.release)
            time.sleep(0.0005 * (i % 4))

    workers = [threading.Thread(target=submitter, args=(400,)) for _ in range(2)]
    total = 2 * sum(1 + i % 3 for i in range(400))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for n in range(total):
        assert done.acquire(timeout=5), f"job {n} of {total} never ran"
