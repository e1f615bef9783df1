"""A TCP forwarder between a daemon and its ``nats-server``, for end-to-end tests.

    fwd = TcpForwarder(0, ("127.0.0.1", nats_port))  # fwd.port: bound now, refusing dials
    fwd.start()                         # listens on 127.0.0.1:<fwd.port> from now on
    fwd.cut()                           # drop every live connection (the client may redial)
    fwd.wedge()                         # live connections stay open but carry nothing more
    fwd.tell(b"-ERR 'x'\\r\\n")         # write to every client as if the server had (nats-py closes)
    fwd.to_server()                     # what clients sent, every connection, oldest first
    fwd.stop()

It sees the NATS protocol in clear: tests read the ``SUB``/``UNSUB`` lines a daemon sends and the
``MSG``/``HMSG`` lines it receives.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class _Pair:
    """One forwarded connection: both sockets and the bytes seen each way."""

    client: socket.socket
    upstream: socket.socket
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    wedged: bool = False

    def close(self) -> None:
        self.closed = True
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TcpForwarder:
    """Forwards every connection to ``target`` once started. Its loopback port (``port``, or one
    the kernel picks for 0) is bound from construction on, so no other test takes it, but not
    listening before :meth:`start`: a dial until then is refused."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._serving = False
        forwarder = self

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                pair = _Pair(client=self.request, upstream=socket.create_connection(forwarder.target))
                with forwarder._lock:
                    forwarder.pairs.append(pair)
                t = threading.Thread(target=forwarder._pump, args=(pair, True), daemon=True)
                t.start()
                forwarder._pump(pair, False)
                t.join(5)
                pair.upstream.close()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", port), Pipe, bind_and_activate=False)
        try:
            self.server.server_bind()
        except OSError:
            self.server.server_close()
            raise
        self.port = int(self.server.server_address[1])

    def start(self) -> None:
        self.server.server_activate()
        self._serving = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _pump(self, pair: _Pair, to_client: bool) -> None:
        src, dst = (pair.upstream, pair.client) if to_client else (pair.client, pair.upstream)
        seen = pair.to_client if to_client else pair.to_server
        try:
            while data := src.recv(65536):
                if pair.wedged:
                    continue  # read and dropped: the peer's socket stays open and quiet
                seen.extend(data)
                if to_client:
                    with pair.client_lock:
                        dst.sendall(data)
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            pair.close()

    def live(self) -> list[_Pair]:
        with self._lock:
            return [p for p in self.pairs if not p.closed]

    def cut(self) -> int:
        """Drop every live connection; returns how many were cut. The listener stays up, so a
        client may connect again."""
        pairs = self.live()
        for pair in pairs:
            pair.close()
        return len(pairs)

    def wedge(self) -> int:
        """Stop forwarding on every live connection, leaving it open: the client sees a connected
        server that answers nothing (a stalled server or route). Later connections are forwarded
        as usual, so a client that closes and redials gets a working one. Returns how many."""
        pairs = self.live()
        for pair in pairs:
            pair.wedged = True
        return len(pairs)

    def tell(self, data: bytes) -> int:
        """Write ``data`` to every live client as if the server had sent it; returns how many.
        (Between two server messages on an idle connection: a chunk in flight is not split.)"""
        pairs = self.live()
        for pair in pairs:
            with pair.client_lock:
                try:
                    pair.client.sendall(data)
                except OSError:
                    pass
        return len(pairs)

    def connections(self) -> int:
        """How many connections are live (neither end closed)."""
        return len(self.live())

    def to_server(self) -> bytes:
        """Everything clients sent, every connection, oldest first."""
        with self._lock:
            return b"".join(bytes(p.to_server) for p in self.pairs)

    def to_client(self) -> bytes:
        """Everything clients received, every connection, oldest first."""
        with self._lock:
            return b"".join(bytes(p.to_client) for p in self.pairs)

    def stop(self) -> None:
        if self._serving:
            self.server.shutdown()
        self.server.server_close()
        self.cut()


def subscriptions(sent: bytes, subject: str) -> list[str]:
    """The sids of every ``SUB <subject> [queue] <sid>`` line in ``sent`` (nats-py writes an empty
    queue as a second space)."""
    pattern = re.compile(rb"^SUB " + re.escape(subject.encode()) + rb" (?:\S* )?(\S+)\r$", re.M)
    return [m.group(1).decode() for m in pattern.finditer(sent)]


def unsubscribed(sent: bytes, sid: str) -> bool:
    """True when ``sent`` holds ``UNSUB <sid> [max]`` (nats-py leaves a space for an absent max)."""
    return re.search(rb"^UNSUB " + re.escape(sid.encode()) + rb" ?\d*\r$", sent, re.M) is not None


def delivered(received: bytes, subject: str, sid: str) -> bool:
    """True when ``received`` holds a ``MSG``/``HMSG`` of ``subject`` for subscription ``sid``."""
    pattern = rb"^H?MSG " + re.escape(subject.encode()) + rb" " + re.escape(sid.encode()) + rb" "
    return re.search(pattern, received, re.M) is not None
