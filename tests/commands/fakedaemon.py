"""A daemon stand-in for the command tests (a Unix-socket server that records the exact requests
and answers scripted replies and Read events), and running the CLI in this process or as a
subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from typing import Any

import pytest
from test_ipc import UnixServer

from ppz import cli, errors, ipc


class Stream:
    """A scripted Read reply: these events, then close (or hold the connection open until the
    client goes away when ``hold``)."""

    def __init__(self, *events: dict[str, Any], hold: bool = False) -> None:
        self.events = events
        self.hold = hold


Reply = Any  # a result dict, a PpzError, a Stream, or a callable(params) returning one of those


class FakeDaemon:
    """A daemon stand-in on a Unix socket (``test_ipc.UnixServer``): records every request and
    answers from a per-verb script (the last reply of a verb is reused). ``stop()`` closes the
    listener (the socket file stays: connecting is refused), ``start()`` listens again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.script: dict[str, list[Reply]] = {}
        self._server: UnixServer | None = None
        self.start()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = UnixServer(self.path, self._handle)

    def stop(self) -> None:
        """Stop listening now; connections being served finish in the background."""
        server, self._server = self._server, None
        if server is not None:
            server.stop.set()
            server._threads[0].join(5)  # the accept loop: nothing is accepted after this
            server._listener.close()

    def on(self, method: str, *replies: Reply) -> FakeDaemon:
        self.script.setdefault(method, []).extend(replies)
        return self

    def methods(self) -> list[str]:
        return [m for m, _ in self.requests]

    def params(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.requests if m == method]

    def _handle(self, server: UnixServer, conn: socket.socket) -> None:
        method, params = ipc.decode_request(server.read_request(conn))
        self.requests.append((method, params))
        queue = self.script.get(method)
        if not queue:
            reply: Reply = errors.PpzError(errors.E_PROTOCOL, f"unknown method {method}")
        else:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(reply):
            reply = reply(params)
        with contextlib.suppress(OSError):  # the client may be gone already
            self._answer(conn, reply)

    @staticmethod
    def _answer(conn: socket.socket, reply: Reply) -> None:
        if isinstance(reply, errors.PpzError):
            conn.sendall(ipc.encode_error(reply))
        elif isinstance(reply, Stream):
            for event in reply.events:
                conn.sendall(json.dumps(event).encode() + b"\n")
            if reply.hold:
                conn.recv(1)
        else:
            conn.sendall(ipc.encode_result(reply))


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def ppz(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run the CLI in this process; returns its exit status and output."""
    capsys.readouterr()
    code = 0
    try:
        cli.main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Result(code, out, err)


SEND_REPLY = {"id": "3f0c1111-2222-4333-8444-a6b7c8d9", "subject": "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d.bob.inbox",
              "bytes": 3}


def msg(payload: str, sender: str = "alice", **over: Any) -> dict[str, Any]:
    m = {"id": f"id-{payload}", "sender": sender, "subject": "", "payload": payload,
         "created_at": "2026-05-01T12:00:00Z", "in_reply_to": "", "ack_requested": False, "priority": 0}
    m.update(over)
    return m


def local(ts: str) -> str:
    from ppz.timestamps import epoch_seconds

    return time.strftime("%H:%M:%S", time.localtime(epoch_seconds(ts)))


LIST_REPLY = {
    "sources": [{"handle": "alice", "manifold": "", "kind": "message", "created_by": "foo",
                 "pipes": ["inbox"], "pipe_infos": [{"pipe": "inbox", "total": 3, "unread": 1}]}],
    "uncollared_pipes": [],
}


PIPE_REPLY = {"handle": "bob", "name": "notes", "stream_name": "x", "ttl_seconds": 86400, "max_msgs": 5000,
              "max_bytes": 16777216}


def read_bundle(path: str) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def cli_process(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ppz.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def who_reply() -> dict[str, Any]:
    from ppz.timestamps import format_rfc3339

    now = time.time()
    beat = {"harness": "claude", "model": "m", "agent_state": "idle", "interval_sec": 60, "os": "linux",
            "arch": "arm64", "hostname": "h"}
    return {"entries": [
        {"handle": "a", "owner": "foo", "payload": json.dumps(beat), "arrived_at": format_rfc3339(now)},
        {"handle": "b", "payload": "x", "arrived_at": format_rfc3339(now - 100)},
    ]}
