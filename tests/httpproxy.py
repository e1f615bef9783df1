"""A recording HTTP proxy between a daemon and a real ppz-server, for end-to-end tests.

It records every request (method, path, query, headers, body) and can delay, drop or fail
them, or rewrite a reply: the real server cannot be made to answer 503, and tests need to see
and count what the daemon sends.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

EXCHANGE = "/api/v1/auth/exchange"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any

    @property
    def route(self) -> tuple[str, str]:
        return self.method, self.path


class RecordingProxy:
    """Forwards HTTP to ``target`` and records each request. ``drop`` closes connections without
    a reply (a transport failure for the daemon); ``delay`` holds matching requests a while;
    ``fail`` answers matching requests with the scripted statuses, one per request, before
    forwarding again; ``rewrite`` may change a forwarded reply's JSON body."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target).netloc
        self.records: list[Recorded] = []
        self.drop = False
        self.delay: dict[tuple[str, str], float] = {}
        self.fail: dict[tuple[str, str], list[int]] = {}
        self.rewrite: dict[tuple[str, str], Callable[[Any], Any]] = {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                proxy.handle(self, raw)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, req: http.server.BaseHTTPRequestHandler, raw: bytes) -> None:
        split = urlsplit(req.path)
        body = json.loads(raw) if raw else None
        record = Recorded(req.command, split.path, parse_qsl(split.query), dict(req.headers.items()), body)
        self.records.append(record)
        time.sleep(self.delay.get(record.route, 0.0))
        if self.drop:
            req.close_connection = True
            return
        scripted = self.fail.get(record.route)
        if scripted:
            status = scripted.pop(0)
            data = json.dumps({"error": {"code": "E_INTERNAL", "message": "scripted failure"}}).encode()
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
            return
        conn = http.client.HTTPConnection(self.target, timeout=30)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(req.command, req.path, body=raw or None, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
        change = self.rewrite.get(record.route)
        if change is not None and 200 <= reply.status < 300 and data:
            data = json.dumps(change(json.loads(data))).encode()
        req.send_response(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def start(self) -> RecordingProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def take(self) -> list[Recorded]:
        """The requests recorded since the last ``take`` (the exchange left out)."""
        taken, self.records = self.records, []
        return [r for r in taken if r.path != EXCHANGE]

    def routes(self) -> list[tuple[str, str]]:
        return [r.route for r in self.take()]
