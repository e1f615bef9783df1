"""IPC framing and the client (spec/ipc.md §1–4), against real socketpairs and Unix sockets."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppz import errors, ipc
from ppz.errors import PpzError
from ppz.ipc import IpcDecodeError, RequestIncomplete, RequestTooLarge

MAX = ipc.MAX_REQUEST_BYTES

Handler = Callable[["UnixServer", socket.socket], None]


class UnixServer:
    """A listening Unix socket whose accept loop runs ``handler`` for each connection in a thread."""

    def __init__(self, path: str, handler: Handler, *, accept: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._listener.settimeout(0.02)
        self._threads: list[threading.Thread] = []
        if accept:
            self._start(self._accept_loop)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._start(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        with conn:
            try:
                self.handler(self, conn)
            except Exception as exc:  # noqa: BLE001 - surfaced by the fixture
                self.errors.append(exc)

    def read_request(self, conn: socket.socket) -> bytes:
        line = ipc.read_request_line(conn)
        self.requests.append(line)
        return line

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Unix socket paths are limited to ~107 bytes: keep them short, outside pytest's tmp_path.
    path = tempfile.mkdtemp(prefix="ppz-ipc-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve(sock_dir: str) -> Iterator[Callable[..., UnixServer]]:
    servers: list[UnixServer] = []

    def start(handler: Handler, *, accept: bool = True) -> UnixServer:
        server = UnixServer(os.path.join(sock_dir, f"d{len(servers)}.sock"), handler, accept=accept)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    for server in servers:
        assert not server.errors, server.errors


def replying(*lines: bytes) -> Handler:
    """A handler that reads the request, writes ``lines`` and closes."""

    def handler(server: UnixServer, conn: socket.socket) -> None:
        server.read_request(conn)
        for line in lines:
            conn.sendall(line)

    return handler


def start_replying(serve: Callable[..., UnixServer], *lines: bytes) -> UnixServer:
    return serve(replying(*lines))


def silent(server: UnixServer, conn: socket.socket) -> None:
    """A handler that reads the request and never answers."""
    server.read_request(conn)
    server.stop.wait()


# --- environment ---------------------------------------------------------------------------


def test_home_dir_resolution() -> None:
    assert ipc.home_dir({"PPZ_HOME": "/srv/ppz", "HOME": "/home/a"}) == "/srv/ppz"
    assert ipc.home_dir({"PPZ_HOME": "", "HOME": "/home/a"}) == "/home/a/.ppz"
    assert ipc.home_dir({"HOME": "/home/a"}) == "/home/a/.ppz"
    # HOME unset: the password database's home, as os.path.expanduser sees it.
    assert ipc.home_dir({}) == os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ppz")
    assert ipc.home_dir({"HOME": ""}) == ".ppz"


def test_home_dir_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_HOME", "/x/home")
    assert ipc.home_dir() == "/x/home"
    assert ipc.socket_path() == "/x/home/daemon.sock"


def test_socket_path_resolution() -> None:
    assert ipc.socket_path({"PPZ_IPC_SOCKET": "/run/p.sock", "PPZ_HOME": "/srv/ppz"}) == "/run/p.sock"
    assert ipc.socket_path({"PPZ_IPC_SOCKET": "", "PPZ_HOME": "/srv/ppz"}) == "/srv/ppz/daemon.sock"
    assert ipc.socket_path({"HOME": "/home/a"}) == "/home/a/.ppz/daemon.sock"
    assert ipc.socket_path({"HOME": ""}) == ".ppz/daemon.sock"
    assert ipc.socket_path({"PPZ_IPC_SOCKET": ""}, home="/h") == "/h/daemon.sock"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 30.0),
        ("", 30.0),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("0", 30.0),
        ("0s", 30.0),
        ("-1s", 30.0),
        ("10", 30.0),
        ("soon", 30.0),
        ("9999999999h", 30.0),
    ],
)
def test_ipc_timeout(monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float) -> None:
    if value is None:
        monkeypatch.delenv("PPZ_IPC_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("PPZ_IPC_TIMEOUT", value)
    assert ipc.ipc_timeout() == pytest.approx(seconds)
    assert ipc.ipc_timeout({} if value is None else {"PPZ_IPC_TIMEOUT": value}) == pytest.approx(seconds)


# --- framing ---------------------------------------------------------------------------------


def test_encode_request_is_one_compact_utf8_line() -> None:
    assert ipc.encode_request("Send", {"handle": "bob", "payload": "é"}) == (
        '{"method":"Send","params":{"handle":"bob","payload":"é"}}\n'.encode()
    )
    assert ipc.encode_request("Status") == b'{"method":"Status","params":{}}\n'


def test_encode_request_escapes_text_utf8_cannot_carry() -> None:
    line = ipc.encode_request("Send", {"payload": "a\udcffb"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert ipc.decode_request(line) == ("Send", {"payload": "a\udcffb"})


def test_reply_and_event_lines() -> None:
    assert ipc.encode_result({}) == b'{"result":{}}\n'
    assert ipc.encode_result() == b'{"result":{}}\n'
    assert ipc.encode_result({"id": "x", "bytes": 2}) == b'{"result":{"id":"x","bytes":2}}\n'
    assert ipc.encode_error(errors.source_not_found("bob")) == (
        b'{"error":{"code":"E_SOURCE_NOT_FOUND","message":"source \'bob\' not found"}}\n'
    )
    assert ipc.encode_error(RequestTooLarge()) == (
        b'{"error":{"code":"E_PROTOCOL","message":"request too large"}}\n'
    )
    assert ipc.encode_event("more_unread", 17) == b'{"more_unread":17}\n'
    assert ipc.encode_event("meta", {"cols": 120, "rows": 40}) == b'{"meta":{"cols":120,"rows":40}}\n'
    assert ipc.encode_event("msg", {"payload": "é"}) == '{"msg":{"payload":"é"}}\n'.encode()


@pytest.mark.parametrize(
    ("line", "method", "params"),
    [
        (b'{"method":"Status","params":{"session":"s"}}', "Status", {"session": "s"}),
        (b'{"method":"Status"}', "Status", {}),
        (b'{"method":"Status","params":null}', "Status", {}),
        (b'{"method":"Send","params":{"x":1},"jsonrpc":"2.0","id":3}', "Send", {"x": 1}),
        (b'{"params":{}}', "", {}),
        (b'{"method":null}', "", {}),
        (b'  {"method":"Who"}  \r', "Who", {}),
        ('{"method":"Send","params":{"payload":"é"}}'.encode(), "Send", {"payload": "é"}),
    ],
)
def test_decode_request(line: bytes, method: str, params: dict[str, object]) -> None:
    assert ipc.decode_request(line) == (method, params)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b'{"method":"Status"',
        b"[]",
        b'"Status"',
        b"null",
        b"42",
        b'{"method":"Status","params":[]}',
        b'{"method":"Status","params":"x"}',
        b'{"method":"Status","params":1}',
        b'{"method":"Status","params":true}',
        b'{"method":7}',
        b'{"method":["Status"]}',
        b'{"method":"Send","params":{"payload":"\xff"}}',
    ],
)
def test_decode_request_rejects(line: bytes) -> None:
    with pytest.raises(PpzError) as info:
        ipc.decode_request(line)
    assert info.value.code == errors.E_PROTOCOL
    assert info.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.text(), st.dictionaries(st.text(), json_values, max_size=5))
def test_request_round_trip(method: str, params: dict[str, object]) -> None:
    line = ipc.encode_request(method, params)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert ipc.decode_request(line[:-1]) == (method, params)


def test_param_accessors() -> None:
    params = {"s": "x", "b": True, "i": 3, "l": ["a", "b"], "n": None}
    assert (ipc.param_str(params, "s"), ipc.param_str(params, "n"), ipc.param_str(params, "missing")) == (
        "x",
        "",
        "",
    )
    assert (ipc.param_bool(params, "b"), ipc.param_bool(params, "n"), ipc.param_bool(params, "x")) == (
        True,
        False,
        False,
    )
    assert (ipc.param_int(params, "i"), ipc.param_int(params, "n"), ipc.param_int(params, "x")) == (3, 0, 0)
    assert ipc.param_str_list(params, "l") == ["a", "b"]
    assert ipc.param_str_list(params, "n") == []


@pytest.mark.parametrize(
    ("accessor", "value"),
    [
        (ipc.param_str, 1),
        (ipc.param_str, ["x"]),
        (ipc.param_bool, "true"),
        (ipc.param_bool, 1),
        (ipc.param_int, "1"),
        (ipc.param_int, 1.5),
        (ipc.param_int, 1.0),
        (ipc.param_int, True),
        (ipc.param_int, 2**63),
        (ipc.param_str_list, "a"),
        (ipc.param_str_list, ["a", 1]),
        (ipc.param_str_list, {"a": "b"}),
    ],
)
def test_param_accessors_reject_wrong_json_types(accessor: Callable[..., object], value: object) -> None:
    with pytest.raises(PpzError) as info:
        accessor({"field": value}, "field")
    assert info.value.code == errors.E_PROTOCOL
    assert "'field'" in info.value.message


# --- server side: reading the request line ---------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def writer(sock: socket.socket, *pieces: bytes, close: bool = True) -> threading.Thread:
    """Send ``pieces`` from a thread (pausing between them), then optionally shut down writing."""

    def run() -> None:
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.005)
            if close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader closed early: expected for oversized requests

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_read_request_line_single_send(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(b'{"method":"Status"}\n')
    assert ipc.read_request_line(server) == b'{"method":"Status"}'


def test_read_request_line_across_many_sends(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    thread = writer(client, b'{"meth', b'od":"St', b'atus"}', b"\n", close=False)
    assert ipc.read_request_line(server) == b'{"method":"Status"}'
    thread.join()


def test_read_request_line_leaves_later_bytes_in_the_socket(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    client.sendall(b'{"method":"Read"}\nX')
    assert ipc.read_request_line(server) == b'{"method":"Read"}'
    # A follow's "client gone" 1-byte read must still see the byte after the request.
    assert server.recv(1) == b"X"


def test_read_request_line_eof_before_newline(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(b'{"method":"Status"}')
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(RequestIncomplete):
        ipc.read_request_line(server)


def test_read_request_line_immediate_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(RequestIncomplete):
        ipc.read_request_line(server)


def test_read_request_line_accepts_a_line_of_exactly_1_mib(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    body = b"x" * (MAX - 1)
    thread = writer(client, body[: MAX // 2], body[MAX // 2 :] + b"\n", b"trailing")
    assert ipc.read_request_line(server) == body
    thread.join()


def test_read_request_line_refuses_1_mib_without_newline(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    thread = writer(client, b"x" * MAX + b"\n")
    with pytest.raises(RequestTooLarge) as info:
        ipc.read_request_line(server)
    assert (info.value.code, info.value.message) == ("E_PROTOCOL", "request too large")
    server.close()
    thread.join()


def test_read_request_line_from_files() -> None:
    assert ipc.read_request_line(io.BytesIO(b'{"method":"Who"}\nrest')) == b'{"method":"Who"}'
    with pytest.raises(RequestIncomplete):
        ipc.read_request_line(io.BytesIO(b'{"method":"Who"}'))
    with pytest.raises(RequestIncomplete):
        ipc.read_request_line(io.BytesIO(b""))
    assert ipc.read_request_line(io.BytesIO(b"y" * (MAX - 1) + b"\n")) == b"y" * (MAX - 1)
    with pytest.raises(RequestTooLarge):
        ipc.read_request_line(io.BytesIO(b"y" * MAX + b"\n"))


def test_oversized_request_gets_the_error_reply(serve: Callable[..., UnixServer]) -> None:
    def handler(server: UnixServer, conn: socket.socket) -> None:
        try:
            ipc.read_request_line(conn)
        except RequestTooLarge as exc:
            conn.sendall(ipc.encode_error(exc))

    server = serve(handler)
    with pytest.raises(PpzError) as info:
        ipc.call("SendBatch", {"payloads": ["x" * MAX]}, timeout=5, path=server.path)
    assert (info.value.code, info.value.message) == ("E_PROTOCOL", "request too large")
    # The daemon side is unaffected: the next connection is served normally.
    server.handler = replying(ipc.encode_result({"ok": True}))
    assert ipc.call("Status", timeout=5, path=server.path) == {"ok": True}


# --- client: normal calls --------------------------------------------------------------------


def test_call_success(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve, b'{"result":{"id":"abc","bytes":2}}\n')
    result = ipc.call("Send", {"handle": "bob", "payload": "hi"}, timeout=5, path=server.path)
    assert result == {"id": "abc", "bytes": 2}
    assert [json.loads(r) for r in server.requests] == [
        {"method": "Send", "params": {"handle": "bob", "payload": "hi"}}
    ]


def test_call_uses_the_socket_from_the_environment(
    serve: Callable[..., UnixServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_replying(serve, b'{"result":{}}\n')
    monkeypatch.setenv("PPZ_IPC_SOCKET", server.path)
    assert ipc.call("Status") == {}


def test_call_empty_and_null_results(serve: Callable[..., UnixServer]) -> None:
    for reply in (b'{"result":{}}\n', b'{"result":null}\n'):
        server = start_replying(serve, reply)
        assert ipc.call("Logout", timeout=5, path=server.path) == {}


def test_call_reply_without_trailing_newline(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve, b'{"result":{"a":1}}')
    assert ipc.call("Status", timeout=5, path=server.path) == {"a": 1}


def test_call_large_reply(serve: Callable[..., UnixServer]) -> None:
    rows = [{"name": f"src-{i}.inbox", "preview": "p" * 200} for i in range(20000)]
    reply = ipc.encode_result({"sources": rows})
    assert len(reply) > 4 * MAX
    server = start_replying(serve, reply[:1000], reply[1000:])
    assert ipc.call("List", timeout=10, path=server.path) == {"sources": rows}


def test_call_error_reply(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve, ipc.encode_error(errors.source_not_found("bob")))
    with pytest.raises(PpzError) as info:
        ipc.call("Switch", {"handle": "bob"}, timeout=5, path=server.path)
    assert not isinstance(info.value, IpcDecodeError)
    assert (info.value.code, info.value.message, info.value.exit_status) == (
        "E_SOURCE_NOT_FOUND",
        "source 'bob' not found",
        14,
    )


def test_call_error_reply_without_message_uses_the_standard_one(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve, b'{"error":{"code":"E_NOT_LOGGED_IN"}}\n')
    with pytest.raises(PpzError) as info:
        ipc.call("List", timeout=5, path=server.path)
    assert info.value.code == "E_NOT_LOGGED_IN"
    assert info.value.message == errors.standard_message("E_NOT_LOGGED_IN")
    assert info.value.exit_status == 10


def test_call_unknown_error_code_exits_1(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve, b'{"error":{"code":"E_FUTURE","message":"from a newer daemon"}}\n')
    with pytest.raises(PpzError) as info:
        ipc.call("List", timeout=5, path=server.path)
    assert (info.value.code, info.value.message, info.value.exit_status) == (
        "E_FUTURE",
        "from a newer daemon",
        1,
    )


# --- client: failures ------------------------------------------------------------------------


def test_no_socket_is_daemon_not_running(sock_dir: str) -> None:
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=5, path=os.path.join(sock_dir, "missing.sock"))
    assert info.value.code == errors.E_DAEMON_NOT_RUNNING
    assert info.value.exit_status == 11


def test_a_socket_path_too_long_for_unix_sockets_is_daemon_not_running(sock_dir: str) -> None:
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=5, path=os.path.join(sock_dir, "x" * 200 + ".sock"))
    assert info.value.code == errors.E_DAEMON_NOT_RUNNING


def test_refused_socket_is_daemon_not_running(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays; nobody listens: ECONNREFUSED
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=5, path=path)
    assert info.value.code == errors.E_DAEMON_NOT_RUNNING


def test_non_socket_file_is_daemon_not_running(sock_dir: str) -> None:
    path = Path(sock_dir, "plain")
    path.write_text("not a socket")
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=5, path=str(path))
    assert info.value.code == errors.E_DAEMON_NOT_RUNNING


def test_silent_daemon_times_out_at_the_deadline(serve: Callable[..., UnixServer]) -> None:
    server = serve(silent)
    started = time.monotonic()
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=0.2, path=server.path)
    elapsed = time.monotonic() - started
    assert info.value.code == errors.E_DAEMON_TIMEOUT
    assert info.value.exit_status == 26
    assert 0.15 <= elapsed < 2
    assert server.requests == [b'{"method":"Status","params":{}}']


def test_daemon_that_never_accepts_times_out(serve: Callable[..., UnixServer]) -> None:
    server = serve(silent, accept=False)
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=0.2, path=server.path)
    assert info.value.code == errors.E_DAEMON_TIMEOUT


def test_full_listen_backlog_is_a_timeout_not_a_dead_daemon(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued: list[socket.socket] = []
    try:
        while True:  # fill the backlog: a non-blocking connect then fails with EAGAIN
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            queued.append(sock)
            try:
                sock.connect(path)
            except BlockingIOError:
                break
        started = time.monotonic()
        with pytest.raises(PpzError) as info:
            ipc.call("Status", timeout=0.2, path=path)
        assert info.value.code == errors.E_DAEMON_TIMEOUT
        assert time.monotonic() - started < 2
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def test_deadline_covers_a_stuck_write(serve: Callable[..., UnixServer]) -> None:
    server = serve(lambda server, conn: server.stop.wait())
    started = time.monotonic()
    with pytest.raises(PpzError) as info:
        ipc.call("SendBatch", {"payloads": ["x" * (MAX // 2)] * 2}, timeout=0.3, path=server.path)
    assert info.value.code == errors.E_DAEMON_TIMEOUT
    assert time.monotonic() - started < 2


def test_deadline_covers_a_slowly_trickled_reply(serve: Callable[..., UnixServer]) -> None:
    def trickle(server: UnixServer, conn: socket.socket) -> None:
        server.read_request(conn)
        while not server.stop.wait(0.05):
            try:
                conn.sendall(b" ")
            except OSError:
                return

    server = serve(trickle)
    started = time.monotonic()
    with pytest.raises(PpzError) as info:
        ipc.call("Status", timeout=0.3, path=server.path)
    assert info.value.code == errors.E_DAEMON_TIMEOUT
    assert time.monotonic() - started < 2


def test_default_deadline_comes_from_ppz_ipc_timeout(
    serve: Callable[..., UnixServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(silent)
    monkeypatch.setenv("PPZ_IPC_TIMEOUT", "150ms")
    started = time.monotonic()
    with pytest.raises(PpzError) as info:
        ipc.call("Status", path=server.path)
    assert info.value.code == errors.E_DAEMON_TIMEOUT
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"garbage\n",
        b"[1,2]\n",
        b'{"result":[1]}\n',
        b'{"result":{"a":1}',
        b'{"other":{}}\n',
        b'{"error":"E_INTERNAL"}\n',
        b'{"error":{}}\n',
        b"\xff\xfe\n",
    ],
)
def test_missing_or_undecodable_reply_is_an_uncoded_ipc_decode_error(
    serve: Callable[..., UnixServer], reply: bytes
) -> None:
    server = start_replying(serve, reply)
    with pytest.raises(IpcDecodeError) as info:
        ipc.call("Status", timeout=5, path=server.path)
    assert isinstance(info.value, PpzError)
    assert info.value.code == ""
    assert info.value.exit_status == 1
    assert str(info.value).startswith("ipc decode: ")


def test_closed_without_reply_says_so(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve)
    with pytest.raises(IpcDecodeError, match="^ipc decode: connection closed without a reply$"):
        ipc.call("Status", timeout=5, path=server.path)


def test_closed_before_reading_the_request(serve: Callable[..., UnixServer]) -> None:
    server = serve(lambda server, conn: None)
    with pytest.raises(IpcDecodeError):
        ipc.call("Status", timeout=5, path=server.path)


# --- client: wait calls and streams ----------------------------------------------------------


def test_call_wait_has_no_deadline(serve: Callable[..., UnixServer], monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(server: UnixServer, conn: socket.socket) -> None:
        server.read_request(conn)
        time.sleep(0.4)
        conn.sendall(ipc.encode_result({"rows": []}))

    server = serve(slow)
    monkeypatch.setenv("PPZ_IPC_TIMEOUT", "100ms")
    assert ipc.call_wait("ListWatch", {"session": "s"}, path=server.path) == {"rows": []}


def test_call_wait_maps_errors_like_call(serve: Callable[..., UnixServer], sock_dir: str) -> None:
    server = start_replying(serve, ipc.encode_error(PpzError(errors.E_NOT_LOGGED_IN)))
    with pytest.raises(PpzError) as info:
        ipc.call_wait("ListWatch", path=server.path)
    assert info.value.code == errors.E_NOT_LOGGED_IN
    with pytest.raises(PpzError) as info:
        ipc.call_wait("ListWatch", path=os.path.join(sock_dir, "missing.sock"))
    assert info.value.code == errors.E_DAEMON_NOT_RUNNING


def test_stream_yields_events_until_close(serve: Callable[..., UnixServer]) -> None:
    events: list[dict[str, object]] = [
        {"meta": {"cols": 120, "rows": 40}},
        {"msg": {"id": "1", "payload": "one"}},
        {"msg": {"id": "2", "payload": "twö"}},
        {"more_unread": 17},
    ]
    lines = b"".join(ipc.encode_event(*next(iter(e.items()))) for e in events)
    server = start_replying(serve, lines[:7], lines[7:30], lines[30:])
    assert list(ipc.stream("Read", {"channel": "inbox"}, path=server.path)) == events
    assert json.loads(server.requests[0]) == {"method": "Read", "params": {"channel": "inbox"}}


def test_stream_that_ends_without_events(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve)
    assert list(ipc.stream("Read", path=server.path)) == []


def test_stream_error_event_is_raised_after_earlier_events(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(
        serve,
        ipc.encode_event("msg", {"id": "1"}),
        ipc.encode_error(PpzError(errors.E_NATS_UNREACHABLE)),
    )
    seen = []
    with pytest.raises(PpzError) as info:
        for event in ipc.stream("Read", path=server.path):
            seen.append(event)
    assert seen == [{"msg": {"id": "1"}}]
    assert info.value.code == errors.E_NATS_UNREACHABLE
    assert info.value.exit_status == 19


def test_stream_undecodable_line(serve: Callable[..., UnixServer]) -> None:
    server = start_replying(serve, ipc.encode_event("msg", {"id": "1"}), b"oops\n")
    events = ipc.stream("Read", path=server.path)
    assert next(events) == {"msg": {"id": "1"}}
    with pytest.raises(IpcDecodeError):
        next(events)


def test_stream_without_daemon(sock_dir: str) -> None:
    events = ipc.stream("Read", path=os.path.join(sock_dir, "missing.sock"))
    with pytest.raises(PpzError) as info:
        next(events)
    assert info.value.code == errors.E_DAEMON_NOT_RUNNING


def test_closing_a_stream_closes_the_connection(serve: Callable[..., UnixServer]) -> None:
    gone = threading.Event()

    def follow(server: UnixServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(ipc.encode_event("msg", {"id": "1"}))
        # The daemon's "client gone" check: a blocking 1-byte read sees EOF.
        if conn.recv(1) == b"":
            gone.set()

    server = serve(follow)
    events = ipc.stream("Read", {"follow": True}, path=server.path)
    assert next(events) == {"msg": {"id": "1"}}
    events.close()
    assert gone.wait(5)


# --- the CLI stays thin ----------------------------------------------------------------------


def test_importing_ipc_loads_no_heavy_modules() -> None:
    code = (
        "import sys, ppz.ipc\n"
        "heavy = ('orjson', 'pykka', 'nats', 'requests', 'fire', 'asyncio', 'ppz.envelope')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
