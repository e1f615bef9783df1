"""IPC framing and the client side of the Unix-socket protocol (spec/ipc.md §1–4).

One request per connection: the client writes one JSON object + ``\\n`` and then only reads.
A non-streaming reply is one ``{"result": …}`` or ``{"error": …}`` line; a stream (``Read``)
is a sequence of one-key event lines ended by the daemon closing the socket.

The CLI imports this module on every command, so it uses the standard library only (no
orjson, pykka, nats or requests); ``tests/test_ipc.py`` checks that.

Client errors (ipc.md §4):

* cannot connect → ``PpzError(E_DAEMON_NOT_RUNNING)`` (exit 11);
* deadline expired during connect, write or reading the reply → ``PpzError(E_DAEMON_TIMEOUT)``
  (exit 26);
* connection closed without a reply, or an undecodable reply → :class:`IpcDecodeError`, a
  ``PpzError`` whose code is ``""`` (uncoded: the CLI prints ``error: ipc decode: <detail>``
  and exits 1), so one ``except PpzError`` handles every failure.
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import socket
import time
from collections.abc import Generator, Mapping
from typing import Any, BinaryIO

from ppz.durations import parse_duration
from ppz.errors import E_DAEMON_NOT_RUNNING, E_DAEMON_TIMEOUT, E_PROTOCOL, PpzError

MAX_REQUEST_BYTES = 1048576
DEFAULT_TIMEOUT = 30.0
SOCKET_NAME = "daemon.sock"
HOME_SUBDIR = ".ppz"

# Bytes asked of one recv (and one peek of the daemon's request reader). Python allocates the
# whole buffer on every call: 256 KiB cost ~15 µs per recv of a small reply, 64 KiB ~2 µs
# (docs/performance.md); large replies such as List just take a few more recvs.
_RECV_CHUNK = 64 * 1024
# A full listen backlog makes a Unix-socket connect fail with EAGAIN: retry until the deadline.
_CONNECT_RETRY_SECONDS = 0.01
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class IpcDecodeError(PpzError):
    """No usable reply: the connection closed first, or the reply did not decode.

    Uncoded (``code == ""``, exit 1); the message reads ``ipc decode: <detail>``.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("", f"ipc decode: {detail}")


class RequestTooLarge(PpzError):
    """Server side: 1 MiB arrived without a newline. Reply with it (``encode_error``) and close."""

    def __init__(self) -> None:
        super().__init__(E_PROTOCOL, "request too large")


class RequestIncomplete(EOFError):
    """Server side: EOF before the request's newline. Close without replying."""


# ---------------------------------------------------------------------------------------------
# Environment


def user_home(environ: Mapping[str, str] | None = None) -> str | None:
    """The user's home directory: ``$HOME``, or the password database's entry when ``HOME`` is
    unset (as ``os.path.expanduser`` does); None when there is none (``HOME`` set but empty, or
    unset with no entry)."""
    env = os.environ if environ is None else environ
    if "HOME" in env:
        return env["HOME"] or None
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir or None
    except (ImportError, KeyError):
        return None


def home_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$PPZ_HOME`` (when non-empty), else ``~/.ppz``, else ``.ppz`` relative to the working
    directory when there is no home (:func:`user_home`). The one resolution of the home: the
    CLI, the daemon (``ppz.home``) and the diagnostics bundle all use it."""
    env = os.environ if environ is None else environ
    return env.get("PPZ_HOME", "") or os.path.join(user_home(env) or "", HOME_SUBDIR)


def socket_path(environ: Mapping[str, str] | None = None, home: str | None = None) -> str:
    """``$PPZ_IPC_SOCKET`` (when non-empty), else ``<home>/daemon.sock`` with ``home`` defaulting
    to :func:`home_dir`."""
    env = os.environ if environ is None else environ
    return env.get("PPZ_IPC_SOCKET", "") or os.path.join(home_dir(env) if home is None else home, SOCKET_NAME)


def ipc_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Deadline of one non-streaming call in seconds: ``$PPZ_IPC_TIMEOUT`` when it parses as a
    duration and is > 0, else 30 s."""
    env = os.environ if environ is None else environ
    text = env.get("PPZ_IPC_TIMEOUT", "")
    if not text:
        return DEFAULT_TIMEOUT  # the usual case, without parse_duration's ValueError
    try:
        value = parse_duration(text)
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


# ---------------------------------------------------------------------------------------------
# Framing

# One encoder and decoder for the process: ``json.dumps`` with arguments builds a new encoder
# on every call, and ``json.loads`` of bytes first guesses their encoding (together ~10 µs of a
# call's ~60 µs client time on a loaded 2-core machine, docs/performance.md).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()


def _json_line(obj: object) -> bytes:
    """Compact JSON + ``\\n``, non-ASCII as UTF-8.

    Text that UTF-8 cannot carry (lone surrogates, e.g. from undecodable argv bytes) falls
    back to ``\\u`` escapes, which every JSON reader accepts.
    """
    text = _ENCODER.encode(obj)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"


def _loads(line: bytes) -> Any:
    """``json.loads(line)``, with the same results and errors. A line that starts ``{"`` is
    UTF-8 by ``json.loads``'s own detection (no BOM, no NUL byte), so it skips the detection."""
    if line[:2] == b'{"':
        return _DECODER.decode(line.decode("utf-8", "surrogatepass"))
    return json.loads(line)


def encode_request(method: str, params: Mapping[str, Any] | None = None) -> bytes:
    """The request line ``{"method": …, "params": {…}}\\n``."""
    return _json_line({"method": method, "params": dict(params or {})})


def encode_result(result: Mapping[str, Any] | None = None) -> bytes:
    """A success reply line ``{"result": {…}}\\n`` (``{"result":{}}`` when there are no fields)."""
    return _json_line({"result": dict(result or {})})


def encode_error(err: PpzError) -> bytes:
    """An error reply or stream event line ``{"error": {"code", "message"}}\\n``."""
    return _json_line(err.to_json())


def encode_event(kind: str, value: object) -> bytes:
    """One stream event line with exactly one key, e.g. ``encode_event("more_unread", 17)``."""
    return _json_line({kind: value})


def _read_line_socket(sock: socket.socket) -> bytes:
    # Peek, then consume only up to the newline: bytes after it stay in the socket, so a
    # follow's "client gone" 1-byte read still sees them.
    buf = bytearray()
    while True:
        chunk = sock.recv(min(_RECV_CHUNK, MAX_REQUEST_BYTES - len(buf)), socket.MSG_PEEK)
        if not chunk:
            raise RequestIncomplete(f"EOF after {len(buf)} bytes without a newline")
        end = chunk.find(b"\n")
        want = len(chunk) if end < 0 else end + 1
        while want:
            got = sock.recv(want)
            if not got:
                raise RequestIncomplete(f"EOF after {len(buf)} bytes without a newline")
            buf += got
            want -= len(got)
        if end >= 0:
            return bytes(buf[:-1])
        if len(buf) >= MAX_REQUEST_BYTES:
            raise RequestTooLarge()


def read_request_line(conn: socket.socket | BinaryIO) -> bytes:
    """Server side: read the request line (without its ``\\n``) from a socket or binary file.

    Raises :class:`RequestTooLarge` when 1 MiB (1 048 576 bytes) arrives without a newline —
    the line plus its newline must fit in 1 MiB — and :class:`RequestIncomplete` on EOF before
    the newline. Never reads past the newline of a socket.
    """
    if isinstance(conn, socket.socket):
        return _read_line_socket(conn)
    line = conn.readline(MAX_REQUEST_BYTES)
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) >= MAX_REQUEST_BYTES:
        raise RequestTooLarge()
    raise RequestIncomplete(f"EOF after {len(line)} bytes without a newline")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def decode_request(line: bytes | str) -> tuple[str, dict[str, Any]]:
    """Decode a request line into ``(method, params)``.

    ``params`` absent or ``null`` → ``{}``; a missing or ``null`` method → ``""`` (the
    dispatcher answers ``unknown method``). Invalid JSON, a non-object request, non-object
    ``params`` or a non-string ``method`` → ``PpzError(E_PROTOCOL, <decoder text>)``.
    """
    try:
        obj = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise PpzError(E_PROTOCOL, f"invalid request: {exc}") from None
    return request_fields(obj)


def request_fields(obj: object) -> tuple[str, dict[str, Any]]:
    """``(method, params)`` of a decoded request (the checks of :func:`decode_request` after
    the JSON decoding, for a daemon that decodes with another library)."""
    if not isinstance(obj, dict):
        raise PpzError(E_PROTOCOL, f"invalid request: expected a JSON object, got {_json_type(obj)}")
    method = obj.get("method")
    if method is None:
        method = ""
    if not isinstance(method, str):
        raise PpzError(E_PROTOCOL, f"invalid request: method must be a string, got {_json_type(method)}")
    params = obj.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise PpzError(E_PROTOCOL, f"invalid request: params must be an object, got {_json_type(params)}")
    return method, params


def _wrong_type(name: str, want: str, value: object) -> PpzError:
    return PpzError(E_PROTOCOL, f"invalid params: field {name!r} must be {want}, got {_json_type(value)}")


def param_str(params: Mapping[str, Any], name: str) -> str:
    """A string field of ``params``; absent or ``null`` → ``""``, another type → ``E_PROTOCOL``."""
    value = params.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _wrong_type(name, "a string", value)
    return value


def param_bool(params: Mapping[str, Any], name: str) -> bool:
    """A boolean field of ``params``; absent or ``null`` → ``False``, another type → ``E_PROTOCOL``."""
    value = params.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong_type(name, "a boolean", value)
    return value


def param_int(params: Mapping[str, Any], name: str) -> int:
    """An integer field of ``params`` (64-bit, no fraction); absent or ``null`` → 0, another type
    → ``E_PROTOCOL``."""
    value = params.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
        raise _wrong_type(name, "an integer", value)
    return value


def param_str_list(params: Mapping[str, Any], name: str) -> list[str]:
    """An array-of-strings field; absent or ``null`` → ``[]``, another type → ``E_PROTOCOL``."""
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _wrong_type(name, "an array of strings", value)
    return value


# ---------------------------------------------------------------------------------------------
# Client


def _timed_out() -> PpzError:
    return PpzError(E_DAEMON_TIMEOUT)


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (``None`` = no deadline); raises the timeout error."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out()
    return left


def _wait(sock: socket.socket, events: int, deadline: float | None) -> None:
    """Block until ``sock`` is ready for ``events`` (``select.POLLIN``/``POLLOUT``) or raise the
    timeout error when ``deadline`` passes first."""
    poller = select.poll()
    poller.register(sock, events)
    while True:
        left = _remaining(deadline)
        if poller.poll(None if left is None else math.ceil(left * 1000)):
            return


# The client's socket is non-blocking and every operation is tried first; only an operation that
# would block waits in poll(2), for the time left before the deadline. A socket with a timeout
# (``settimeout``) would poll before every send and recv and switch modes with an ioctl each time:
# five system calls more per call than the connect, send, recv and close a reply needs
# (docs/performance.md).
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)


def _connect(path: str, deadline: float | None) -> socket.socket:
    while True:
        _remaining(deadline)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | _NONBLOCK)
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            err = sock.connect_ex(path)
            if err == errno.EINPROGRESS:
                _wait(sock, select.POLLOUT, deadline)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                # The daemon's listen backlog is full; it is running but busy.
                sock.close()
                time.sleep(_CONNECT_RETRY_SECONDS)
                continue
            if err:
                raise PpzError(E_DAEMON_NOT_RUNNING) from OSError(err, os.strerror(err), path)
            return sock
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError):  # e.g. a path too long for a Unix socket
                raise PpzError(E_DAEMON_NOT_RUNNING) from exc
            raise


def _send_request(sock: socket.socket, request: bytes, deadline: float | None) -> None:
    _remaining(deadline)
    data = memoryview(request)
    while data:
        try:
            data = data[sock.send(data):]
        except BlockingIOError:
            _wait(sock, select.POLLOUT, deadline)
        except OSError as exc:
            # The daemon may have answered and closed before reading everything (for example
            # "request too large"): the reply is still worth reading.
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise IpcDecodeError(str(exc)) from exc
            return


def _decode_line(line: bytes) -> dict[str, Any]:
    try:
        obj = _loads(line)
    except ValueError as exc:
        raise IpcDecodeError(str(exc)) from None
    if not isinstance(obj, dict):
        raise IpcDecodeError(f"reply is not a JSON object (got {_json_type(obj)})")
    return obj


def _raise_if_error(obj: Mapping[str, Any]) -> None:
    """Raise the reply's error when ``obj`` is ``{"error": {...}}``."""
    if "error" not in obj:
        return
    err = obj["error"]
    if not isinstance(err, dict):
        raise IpcDecodeError(f"error member is not an object (got {_json_type(err)})")
    code = err.get("code")
    code = code if isinstance(code, str) else ""
    message = err.get("message")
    if isinstance(message, str) and message:
        raise PpzError(code, message)
    if code:
        raise PpzError(code)
    raise IpcDecodeError("error reply without a code or message")


class _LineReader:
    """Splits a socket's byte stream into lines, receiving in large chunks."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buf = bytearray()
        self._eof = False

    def readline(self) -> bytes | None:
        """The next line without its ``\\n``; at EOF the unterminated rest, then ``None``."""
        scanned = 0
        while True:
            end = self._buf.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if self._eof:
                if not self._buf:
                    return None
                rest = bytes(self._buf)
                self._buf.clear()
                return rest
            scanned = len(self._buf)
            self._recv()

    def _recv(self) -> None:
        _remaining(self._deadline)
        while True:
            try:
                chunk = self._sock.recv(_RECV_CHUNK)
                break
            except BlockingIOError:
                _wait(self._sock, select.POLLIN, self._deadline)
            except ConnectionResetError:
                chunk = b""
                break
            except OSError as exc:
                raise IpcDecodeError(str(exc)) from exc
        if not chunk:
            self._eof = True
        self._buf += chunk


def decode_event(line: bytes) -> dict[str, Any]:
    """One reply or stream-event line as an object; an ``error`` member is raised as
    ``PpzError``, an undecodable line as :class:`IpcDecodeError`."""
    event = _decode_line(line)
    _raise_if_error(event)
    return event


def reply_result(line: bytes | None) -> dict[str, Any]:
    """The ``result`` object of a non-streaming reply line (``None``: the daemon closed the
    connection without a reply). Raises as :func:`decode_event`."""
    if line is None:
        raise IpcDecodeError("connection closed without a reply")
    reply = decode_event(line)
    if "result" not in reply:
        raise IpcDecodeError("reply has neither result nor error")
    result = reply["result"]
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise IpcDecodeError(f"result is not an object (got {_json_type(result)})")
    return result


def _call(
    method: str, params: Mapping[str, Any] | None, timeout: float | None, path: str | None
) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    request = encode_request(method, params)
    with _connect(path or socket_path(), deadline) as sock:
        _send_request(sock, request, deadline)
        line = _LineReader(sock, deadline).readline()
    return reply_result(line)


def call(
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """One normal call: returns the reply's ``result`` object.

    ``timeout`` (seconds, default :func:`ipc_timeout`) bounds connect, write and reading the
    reply together. ``path`` defaults to :func:`socket_path`. Raises ``PpzError`` with the
    reply's code and message on an error reply, and the client errors of the module docstring.
    """
    return _call(method, params, ipc_timeout() if timeout is None else timeout, path)


def call_wait(
    method: str, params: Mapping[str, Any] | None = None, *, path: str | None = None
) -> dict[str, Any]:
    """A wait call (``ListWatch``): like :func:`call` but without a deadline. The caller cancels
    by interrupting (the socket is closed on the way out)."""
    return _call(method, params, None, path)


def stream(
    method: str, params: Mapping[str, Any] | None = None, *, path: str | None = None
) -> Generator[dict[str, Any], None, None]:
    """A stream call (``Read``): yield each event object until the daemon closes the socket.

    No deadline. An ``error`` event is raised as ``PpzError`` instead of being yielded, so a
    stream that simply ends means the daemon closed it without an error (a follow then
    redials). A reset connection counts as closed. Raises ``E_DAEMON_NOT_RUNNING`` when it cannot
    connect (on the first ``next()``) and :class:`IpcDecodeError` for an undecodable line.
    Closing the generator closes the socket.
    """
    request = encode_request(method, params)
    with _connect(path or socket_path(), None) as sock:
        _send_request(sock, request, None)
        reader = _LineReader(sock, None)
        while (line := reader.readline()) is not None:
            yield decode_event(line)
