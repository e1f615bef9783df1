"""The HTTP transport of the API (spec/server-api.md §1): routing, 404/405, the 1 MiB body cap,
bearer auth, the single error envelope. Route semantics live in :mod:`ppz.server.service`."""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ppz import errors
from ppz.errors import PpzError
from ppz.server import wire
from ppz.server.apikeys import Principal
from ppz.server.service import ControlPlane

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20
REQUEST_TIMEOUT = 10.0
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
PROTOCOL_CODES = {404: errors.E_NOT_FOUND, 405: errors.E_METHOD_NOT_ALLOWED, 413: errors.E_PAYLOAD_TOO_LARGE}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What a route handler gets."""

    principal: Principal | None
    params: Mapping[str, str]
    query: Mapping[str, Sequence[str]]
    body: bytes
    host: str | None

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal


Handler = Callable[[Request], Any]


@dataclass(frozen=True, slots=True)
class Route:
    pattern: re.Pattern[str]
    methods: dict[str, tuple[int, Handler]]
    auth: bool = True


def _route(path: str, methods: dict[str, tuple[int, Handler]], *, auth: bool = True) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(re.compile(f"^{regex}$"), methods, auth)


def routes(plane: ControlPlane, version: str) -> list[Route]:
    """The route table: path, then per method the success status and the handler."""
    return [
        _route("/healthz", {"GET": (200, lambda r: {"status": "ok", "version": version})}, auth=False),
        _route(
            "/api/v1/auth/exchange", {"POST": (200, lambda r: plane.exchange(r.body, r.host))}, auth=False
        ),
        _route(
            "/api/v1/sources",
            {
                "GET": (200, lambda r: plane.list_sources(r.who)),
                "POST": (201, lambda r: plane.create_source(r.who, r.body)),
            },
        ),
        _route(
            "/api/v1/sources/{handle}",
            {
                "GET": (200, lambda r: plane.get_source(r.who, r.params["handle"])),
                "DELETE": (204, lambda r: plane.delete_source(r.who, r.params["handle"])),
            },
        ),
        _route(
            "/api/v1/sources/{handle}/ensure-pty",
            {"POST": (200, lambda r: plane.ensure_pty(r.who, r.params["handle"]))},
        ),
        _route(
            "/api/v1/sources/{handle}/pipes",
            {"POST": (201, lambda r: plane.create_pipe(r.who, r.params["handle"], r.body))},
        ),
        _route(
            "/api/v1/sources/{handle}/pipes/{name}",
            {
                "PATCH": (200, lambda r: plane.set_pipe(r.who, r.params["handle"], r.params["name"], r.body)),
                "DELETE": (204, lambda r: plane.delete_pipe(r.who, r.params["handle"], r.params["name"])),
            },
        ),
        _route(
            "/api/v1/pipes",
            {
                "GET": (200, lambda r: plane.list_uncollared(r.who)),
                "POST": (201, lambda r: plane.create_uncollared(r.who, r.body)),
                "PATCH": (200, lambda r: plane.set_uncollared(r.who, r.body)),
                "DELETE": (204, lambda r: plane.delete_uncollared(r.who, r.query)),
            },
        ),
    ]


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the route table."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, host: str, port: int, plane: ControlPlane, version: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.plane = plane
        self.route_table = routes(plane, version)
        super().__init__((host, port), RequestHandler)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="http", daemon=True)
        thread.start()
        return thread


class BodyTooLarge(PpzError):
    def __init__(self) -> None:
        super().__init__(errors.E_PAYLOAD_TOO_LARGE, f"request body too large; max {MAX_BODY} bytes")


class MethodNotAllowed(PpzError):
    def __init__(self, allow: Sequence[str]) -> None:
        super().__init__(errors.E_METHOD_NOT_ALLOWED, "method not allowed")
        self.allow = ", ".join(allow)


class RequestHandler(BaseHTTPRequestHandler):
    """Answers every request with JSON; every failure is the error envelope."""

    protocol_version = "HTTP/1.1"
    server_version = "ppz-server"
    timeout = REQUEST_TIMEOUT
    server: ApiServer

    def __getattr__(self, name: str) -> Any:
        # Every method, known or not, goes through the router (so an unknown one gets 405).
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level failures of http.server (bad request line, oversized headers)."""
        self.close_connection = True
        err = PROTOCOL_CODES.get(code, errors.E_PROTOCOL)
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "error"
        self._send(code, PpzError(err, message or phrase).to_json())

    def _dispatch(self) -> None:
        allow = ""
        try:
            status, body = self._handle()
        except PpzError as exc:
            status, body = exc.http_status, exc.to_json()
            if isinstance(exc, MethodNotAllowed):
                allow = exc.allow
        except TimeoutError:
            self.close_connection = True
            status, body = 500, PpzError(errors.E_INTERNAL, "request timed out").to_json()
        except Exception:
            logger.exception("unexpected error in %s %s", self.command, self.path)
            self.close_connection = True
            status, body = 500, PpzError(errors.E_INTERNAL, "internal server error").to_json()
        self._send(status, body, allow=allow)

    def _handle(self) -> tuple[int, Any]:
        url = urlsplit(self.path)
        for route in self.server.route_table:
            match = route.pattern.match(url.path)
            if match:
                break
        else:
            self._discard_body()
            raise PpzError(errors.E_NOT_FOUND, "not found")
        method = route.methods.get(self.command)
        if method is None:
            self._discard_body()
            raise MethodNotAllowed(list(route.methods))
        body = self._read_body()
        principal = self.server.plane.authenticate(self.headers.get("Authorization")) if route.auth else None
        request = Request(
            principal=principal,
            params={k: unquote(v) for k, v in match.groupdict().items()},
            query=parse_qs(url.query, keep_blank_values=True),
            body=body,
            host=self.headers.get("Host"),
        )
        status, handler = method
        return status, handler(request)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError(length_text)
        except ValueError:
            self.close_connection = True
            raise PpzError(errors.E_PROTOCOL, "invalid Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise BodyTooLarge()
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise PpzError(errors.E_PROTOCOL, "request body truncated")
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise PpzError(errors.E_PROTOCOL, "invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                self.close_connection = True
                raise BodyTooLarge()
            body += self.rfile.read(size)
            self.rfile.readline(1024)

    def _discard_body(self) -> None:
        """Keep the connection usable when answering without reading the body."""
        try:
            self._read_body()
        except PpzError:
            self.close_connection = True

    def _send(self, status: int, body: Any, *, allow: str = "") -> None:
        data = wire.dumps(body) if body is not None and status != 204 else b""
        try:
            self.send_response(status)
            if allow:
                self.send_header("Allow", allow)
            if status != 204:
                self.send_header("Content-Type", JSON_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if data and self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
