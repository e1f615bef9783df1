"""ServerClient against a scripted HTTP peer (ipc.md §6–7, daemon.md §3–4, server-api.md).

The real ppz-server never answers 429/503, an undecodable body or a bare 404 page, so most tests
talk to a small stdlib HTTP server that records every request and answers from a script.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from serverfixture import ServerProcess

from ppz.errors import (
    E_HTTP,
    E_INVALID_API_KEY,
    E_PROTOCOL,
    E_SERVER_UNREACHABLE,
    E_SOURCE_TAKEN,
    PpzError,
)
from ppz.serverclient import (
    LOGIN_INVALID,
    LOGIN_OK,
    ExchangeError,
    ExchangeReply,
    LoginCheck,
    PipeCreator,
    PipeSpec,
    ServerClient,
    SourceInfo,
    UncollaredPipe,
)

KEY = "ppz_0123456789abcdef0123456789"
ACCT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
EXCHANGE_REPLY = {
    "jwt": "stub-jwt-not-yet-issued",
    "nats_url": "nats://127.0.0.1:4222",
    "account_id": ACCT,
    "account_name": "alpha",
    "expires_at": "2026-05-01T12:05:00Z",
    "nats_user_jwt": "eyJ0eXAi.claims.sig",
    "nats_user_seed": "SUAEXAMPLE",
}
EXPIRES_AT = 1777637100.0  # 2026-05-01T12:05:00Z


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"{}"
    reason: str | None = None


@dataclass
class ScriptedServer:
    """Answers queued replies in order (then ``{}`` with 200) and records every request."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: deque[Answer] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int = 200, body: object = None, reason: str | None = None) -> None:
        raw = body if isinstance(body, bytes) else orjson.dumps({} if body is None else body)
        self.script.append(Answer(status, raw, reason))

    def take(self, request: Recorded) -> Answer:
        with self.lock:
            self.requests.append(request)
            return self.script.popleft() if self.script else Answer()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def _handler(scripted: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = scripted.take(Recorded(self.command, parts.path, parts.query, headers, body))
            self.send_response(answer.status, answer.reason)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(scripted))
    httpd.daemon_threads = True
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield scripted
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def checks() -> list[LoginCheck]:
    return []


@pytest.fixture
def client(checks: list[LoginCheck]) -> Iterator[ServerClient]:
    c = ServerClient(timeout=2.0, on_login_check=checks.append)
    yield c
    c.close()


@dataclass(frozen=True)
class Creds:
    url: str
    api_key: str
    account_id: str


@pytest.fixture
def creds(server: ScriptedServer) -> Creds:
    return Creds(url=server.url, api_key=KEY, account_id=ACCT)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _raises(fn: Callable[[], object]) -> PpzError:
    with pytest.raises(PpzError) as info:
        fn()
    return info.value


def _exchange_error(client: ServerClient, url: str) -> ExchangeError:
    with pytest.raises(ExchangeError) as info:
        client.exchange(url, KEY, ACCT)
    return info.value


# -- exchange ----------------------------------------------------------------------------------


def test_exchange_without_account_sends_only_the_key_and_no_bearer_or_org(
    client: ServerClient, server: ScriptedServer, checks: list[LoginCheck]
) -> None:
    server.answer(200, EXCHANGE_REPLY)
    before = time.time()
    reply = client.exchange(server.url + "/", KEY)
    after = time.time()

    request = server.last
    assert (request.method, request.path, request.query) == ("POST", "/api/v1/auth/exchange", "")
    assert request.json() == {"api_key": KEY}
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert reply.nats_user_jwt == "eyJ0eXAi.claims.sig"
    assert reply.nats_user_seed == "SUAEXAMPLE"
    assert reply.expires_at == EXPIRES_AT
    assert before <= reply.received_at <= after
    assert (reply.nats_url, reply.account_id, reply.account_name) == (
        "nats://127.0.0.1:4222",
        ACCT,
        "alpha",
    )
    assert checks == []  # Login sets the check itself; the exchange reports nothing


def test_exchange_with_account_sends_it_in_the_body(client: ServerClient, server: ScriptedServer) -> None:
    server.answer(200, EXCHANGE_REPLY)
    client.exchange(server.url, KEY, ACCT)
    assert server.last.json() == {"api_key": KEY, "account_id": ACCT}
    assert server.last.query == ""
    assert "authorization" not in server.last.headers


@pytest.mark.parametrize("status", [401, 403])
def test_exchange_refused_key_is_invalid_api_key_and_unauthorized(
    client: ServerClient, server: ScriptedServer, checks: list[LoginCheck], status: int
) -> None:
    server.answer(status, b"")
    err = _exchange_error(client, server.url)
    assert (err.code, err.message) == (E_INVALID_API_KEY, "invalid api key")
    assert err.unauthorized
    assert err.reason == f"auth/exchange: HTTP {status}"
    assert err.for_cold_exchange() is err
    assert checks == []


def test_exchange_refusal_keeps_the_servers_message(client: ServerClient, server: ScriptedServer) -> None:
    server.answer(401, {"error": {"code": E_INVALID_API_KEY, "message": "api key is not for this account"}})
    err = _exchange_error(client, server.url)
    assert (err.code, err.message) == (E_INVALID_API_KEY, "api key is not for this account")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_exchange_busy_or_failing_server_is_unreachable_and_transient(
    client: ServerClient, server: ScriptedServer, status: int
) -> None:
    server.answer(status, {"error": {"code": "E_INTERNAL", "message": "boom"}})
    err = _exchange_error(client, server.url)
    assert err.code == E_SERVER_UNREACHABLE
    assert not err.unauthorized
    assert err.reason == f"auth/exchange: HTTP {status}"
    assert err.status == status
    assert err.for_cold_exchange().code == E_SERVER_UNREACHABLE


def test_exchange_connection_refused_is_unreachable_with_transport_text() -> None:
    port = _closed_port()
    err = _exchange_error(ServerClient(), f"http://127.0.0.1:{port}")
    assert err.code == E_SERVER_UNREACHABLE
    assert not err.unauthorized and err.status is None
    assert err.reason == f"POST http://127.0.0.1:{port}/api/v1/auth/exchange: Connection refused"


def test_exchange_server_that_never_answers_times_out(silent_port: int) -> None:
    started = time.monotonic()
    err = _exchange_error(ServerClient(timeout=0.2), f"http://127.0.0.1:{silent_port}")
    assert time.monotonic() - started < 2
    assert err.code == E_SERVER_UNREACHABLE and not err.unauthorized
    assert err.reason == f"POST http://127.0.0.1:{silent_port}/api/v1/auth/exchange: timeout after 0.2s"


@pytest.mark.parametrize("account_id", ["", None])
def test_exchange_reply_without_account_is_a_protocol_error(
    client: ServerClient, server: ScriptedServer, account_id: str | None
) -> None:
    reply = dict(EXCHANGE_REPLY)
    if account_id is None:
        del reply["account_id"]
    else:
        reply["account_id"] = account_id
    server.answer(200, reply)
    err = _exchange_error(client, server.url)
    assert (err.code, err.message) == (E_PROTOCOL, "auth/exchange reply has no account_id")
    assert not err.unauthorized and err.reason == "auth/exchange reply has no account_id"
    assert err.for_cold_exchange() is err


@pytest.mark.parametrize(
    "body",
    [b"<html>bad gateway</html>", b"", b"[1, 2]", orjson.dumps({**EXCHANGE_REPLY, "expires_at": "soon"})],
)
def test_exchange_undecodable_200_is_a_protocol_error(
    client: ServerClient, server: ScriptedServer, body: bytes
) -> None:
    server.answer(200, body)
    err = _exchange_error(client, server.url)
    assert err.code == E_PROTOCOL
    assert err.message.startswith(("auth/exchange reply: ", "malformed auth/exchange reply: "))
    assert not err.unauthorized


def test_exchange_other_status_passes_the_envelope_through(
    client: ServerClient, server: ScriptedServer
) -> None:
    server.answer(413, {"error": {"code": "E_PAYLOAD_TOO_LARGE", "message": "request body too large"}})
    err = _exchange_error(client, server.url)
    assert (err.code, err.message) == ("E_PAYLOAD_TOO_LARGE", "request body too large")
    assert not err.unauthorized and err.reason == "auth/exchange: HTTP 413"
    assert err.for_cold_exchange().code == E_SERVER_UNREACHABLE


def test_exchange_other_status_without_envelope_is_http_error(
    client: ServerClient, server: ScriptedServer
) -> None:
    server.answer(404, b"not here")
    err = _exchange_error(client, server.url)
    assert (err.code, err.message) == (E_HTTP, "HTTP 404 Not Found")
    assert not err.unauthorized and err.reason == "auth/exchange: HTTP 404"


# -- authenticated calls -----------------------------------------------------------------------


def test_call_sends_bearer_and_org_and_no_content_type_without_body(
    client: ServerClient, server: ScriptedServer
) -> None:
    server.answer(200, {"sources": []})
    assert client.call(server.url, KEY, ACCT, "GET", "/api/v1/sources") == {"sources": []}
    request = server.last
    assert (request.method, request.path, request.query) == ("GET", "/api/v1/sources", f"org={ACCT}")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "content-type" not in request.headers


def test_call_appends_org_with_ampersand_when_the_path_has_a_query(
    client: ServerClient, server: ScriptedServer, creds: Creds
) -> None:
    server.answer(204, b"")
    client.delete_uncollared(creds, "room", "team-a")
    assert server.last.query == f"name=room&manifold=team-a&org={ACCT}"


def test_call_without_account_sends_no_org(client: ServerClient, server: ScriptedServer) -> None:
    client.call(server.url, KEY, "", "GET", "/api/v1/pipes")
    assert server.last.query == ""


def test_call_passes_the_error_envelope_through_verbatim(
    client: ServerClient, server: ScriptedServer
) -> None:
    server.answer(409, {"error": {"code": E_SOURCE_TAKEN, "message": "source 'bob' already exists here"}})
    err = _raises(lambda: client.call(server.url, KEY, ACCT, "POST", "/api/v1/sources", {"handle": "bob"}))
    assert (err.code, err.message) == (E_SOURCE_TAKEN, "source 'bob' already exists here")


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [
        (404, b"404 page not found", None, "HTTP 404 Not Found"),
        (403, b"", None, "HTTP 403 Forbidden"),
        (500, b"<html>oops</html>", None, "HTTP 500 Internal Server Error"),
        (400, orjson.dumps({"error": {"code": "", "message": "x"}}), None, "HTTP 400 Bad Request"),
        (418, b"{}", "Short And Stout", "HTTP 418 Short And Stout"),
        (302, b"", None, "HTTP 302 Found"),
    ],
)
def test_call_non_envelope_error_is_http_error(
    client: ServerClient,
    server: ScriptedServer,
    checks: list[LoginCheck],
    status: int,
    body: bytes,
    reason: str | None,
    message: str,
) -> None:
    server.answer(status, body, reason)
    err = _raises(lambda: client.call(server.url, KEY, ACCT, "GET", "/api/v1/sources"))
    assert (err.code, err.message) == (E_HTTP, message)
    assert checks == []


def test_login_check_ok_on_2xx(
    client: ServerClient, server: ScriptedServer, checks: list[LoginCheck]
) -> None:
    server.answer(201, {"handle": "a"})
    client.call(server.url, KEY, ACCT, "POST", "/api/v1/sources", {"handle": "a"})
    assert checks == [LoginCheck(value="ok", url=server.url, api_key=KEY)]


def test_login_check_invalid_on_invalid_api_key(
    client: ServerClient, server: ScriptedServer, checks: list[LoginCheck]
) -> None:
    server.answer(401, {"error": {"code": E_INVALID_API_KEY, "message": "invalid api key"}})
    err = _raises(lambda: client.call(server.url, KEY, ACCT, "GET", "/api/v1/sources"))
    assert err.code == E_INVALID_API_KEY
    assert checks == [LoginCheck(value="invalid", url=server.url, api_key=KEY)]


def test_login_check_unchanged_on_other_errors(
    client: ServerClient, server: ScriptedServer, checks: list[LoginCheck]
) -> None:
    server.answer(404, {"error": {"code": "E_SOURCE_NOT_FOUND", "message": "source 'x' not found"}})
    _raises(lambda: client.call(server.url, KEY, ACCT, "GET", "/api/v1/sources/x"))
    _raises(lambda: client.call(f"http://127.0.0.1:{_closed_port()}", KEY, ACCT, "GET", "/api/v1/sources"))
    assert checks == []


def test_failing_login_check_listener_does_not_fail_the_call(server: ScriptedServer) -> None:
    def explode(check: LoginCheck) -> None:
        raise RuntimeError("listener bug")

    server.answer(200, {"pipes": []})
    assert ServerClient(on_login_check=explode).call(server.url, KEY, ACCT, "GET", "/api/v1/pipes") == {
        "pipes": []
    }


def test_call_empty_2xx_body_is_none(client: ServerClient, server: ScriptedServer) -> None:
    server.answer(204, b"")
    assert client.call(server.url, KEY, ACCT, "DELETE", "/api/v1/sources/bob") is None


def test_call_undecodable_2xx_is_a_protocol_error_but_the_key_is_ok(
    client: ServerClient, server: ScriptedServer, checks: list[LoginCheck]
) -> None:
    server.answer(200, b"<html>hello</html>")
    err = _raises(lambda: client.call(server.url, KEY, ACCT, "GET", "/api/v1/sources"))
    assert err.code == E_PROTOCOL
    assert err.message.startswith("GET /api/v1/sources: undecodable reply: ")
    assert [c.value for c in checks] == ["ok"]


def test_call_transport_failures_are_server_unreachable(silent_port: int) -> None:
    fast = ServerClient(timeout=0.2)
    refused = _raises(lambda: fast.call(f"http://127.0.0.1:{_closed_port()}", KEY, ACCT, "GET", "/x"))
    silent = _raises(lambda: fast.call(f"http://127.0.0.1:{silent_port}", KEY, ACCT, "GET", "/x"))
    bad_url = _raises(lambda: fast.call("127.0.0.1:8080", KEY, ACCT, "GET", "/x"))
    for err in (refused, silent, bad_url):
        assert (err.code, err.message) == (E_SERVER_UNREACHABLE, "server unreachable")


def test_netrc_never_replaces_the_bearer_or_authenticates_the_exchange(
    client: ServerClient, server: ScriptedServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    server.answer(200, EXCHANGE_REPLY)
    client.exchange(server.url, KEY)
    assert "authorization" not in server.last.headers
    client.call(server.url, KEY, ACCT, "GET", "/api/v1/pipes")
    assert server.last.headers["authorization"] == f"Bearer {KEY}"


def test_proxy_environment_is_not_used_for_loopback(
    client: ServerClient, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert client.call(server.url, KEY, ACCT, "GET", "/api/v1/pipes") == {}


def test_concurrent_calls_from_many_threads(client: ServerClient, server: ScriptedServer) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                assert client.call(server.url, KEY, ACCT, "GET", "/api/v1/pipes") == {}
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.requests) == 80


# -- typed routes: exact requests --------------------------------------------------------------

ROUTES: list[tuple[str, Callable[[ServerClient, Creds], object], str, str, str, object]] = [
    (
        "create_source",
        lambda c, k: c.create_source(k, "alice", "message", "team-a"),
        "POST",
        "/api/v1/sources",
        "",
        {"handle": "alice", "kind": "message", "manifold": "team-a"},
    ),
    ("ensure_pty", lambda c, k: c.ensure_pty(k, "alice"), "POST", "/api/v1/sources/alice/ensure-pty", "", {}),
    ("get_source", lambda c, k: c.get_source(k, "alice"), "GET", "/api/v1/sources/alice", "", None),
    ("delete_source", lambda c, k: c.delete_source(k, "alice"), "DELETE", "/api/v1/sources/alice", "", None),
    (
        "create_pipe",
        lambda c, k: c.create_pipe(k, "chat", PipeSpec(name="archive", ttl_seconds=0, max_bytes=1024)),
        "POST",
        "/api/v1/sources/chat/pipes",
        "",
        {"handle": "chat", "manifold": "", "name": "archive", "ttl_seconds": 0, "max_bytes": 1024},
    ),
    (
        "set_pipe",
        lambda c, k: c.set_pipe(k, "chat", PipeSpec(name="archive", manifold="team-a", max_msgs=-1)),
        "PATCH",
        "/api/v1/sources/chat/pipes/archive",
        "",
        {"handle": "chat", "manifold": "team-a", "name": "archive", "max_msgs": -1},
    ),
    (
        "delete_pipe",
        lambda c, k: c.delete_pipe(k, "chat", "archive"),
        "DELETE",
        "/api/v1/sources/chat/pipes/archive",
        "",
        None,
    ),
    (
        "create_uncollared",
        lambda c, k: c.create_uncollared(k, PipeSpec(name="room", manifold="team-a", ttl_seconds=3600)),
        "POST",
        "/api/v1/pipes",
        "",
        {"handle": "", "manifold": "team-a", "name": "room", "ttl_seconds": 3600},
    ),
    (
        "set_uncollared",
        lambda c, k: c.set_uncollared(k, PipeSpec(name="room", manifold="team-a")),
        "PATCH",
        "/api/v1/pipes",
        "",
        {"handle": "", "manifold": "team-a", "name": "room"},
    ),
    (
        "delete_uncollared at root",
        lambda c, k: c.delete_uncollared(k, "room"),
        "DELETE",
        "/api/v1/pipes",
        "name=room&",
        None,
    ),
    (
        "percent-encoded segments and query",
        lambda c, k: c.delete_uncollared(k, "a b&c=d", "x/y"),
        "DELETE",
        "/api/v1/pipes",
        "name=a+b%26c%3Dd&manifold=x%2Fy&",
        None,
    ),
    (
        "percent-encoded path",
        lambda c, k: c.delete_pipe(k, "a/b c", "x?y"),
        "DELETE",
        "/api/v1/sources/a%2Fb%20c/pipes/x%3Fy",
        "",
        None,
    ),
    ("list_sources", lambda c, k: c.list_sources(k), "GET", "/api/v1/sources", "", None),
    ("list_pipes", lambda c, k: c.list_pipes(k), "GET", "/api/v1/pipes", "", None),
]


@pytest.mark.parametrize(
    ("invoke", "method", "path", "query", "body"),
    [route[1:] for route in ROUTES],
    ids=[route[0] for route in ROUTES],
)
def test_route_sends_exactly_the_documented_request(
    client: ServerClient,
    server: ScriptedServer,
    creds: Creds,
    invoke: Callable[[ServerClient, Creds], object],
    method: str,
    path: str,
    query: str,
    body: object,
) -> None:
    if method == "GET" and path.startswith("/api/v1/sources/"):
        server.answer(200, {"handle": "alice", "kind": "message"})
    if method == "DELETE":
        server.answer(204, b"")
    invoke(client, creds)
    request = server.last
    assert (request.method, request.path, request.query) == (method, path, f"{query}org={ACCT}")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    if body is None:
        assert request.body == b"" and "content-type" not in request.headers
    else:
        assert request.json() == body
        assert request.headers["content-type"] == "application/json"


def test_create_source_returns_the_server_reply(
    client: ServerClient, server: ScriptedServer, creds: Creds
) -> None:
    reply = {"id": "i", "handle": "alice", "manifold": "team-a", "kind": "message", "subject": "s"}
    server.answer(201, reply)
    assert client.create_source(creds, "alice", "message", "team-a") == reply


def test_list_sources_decodes_sources(client: ServerClient, server: ScriptedServer, creds: Creds) -> None:
    server.answer(
        200,
        {
            "sources": [
                {"handle": "alice", "kind": "message"},
                {
                    "handle": "bob",
                    "manifold": "team-a",
                    "kind": "pty",
                    "created_by": "foo",
                    "pipes": ["notes"],
                    "pipe_infos": [{"pipe": "notes", "created_by": "bar"}],
                    "future_field": 1,
                },
            ]
        },
    )
    alice, bob = client.list_sources(creds)
    assert alice == SourceInfo(handle="alice")
    assert bob == SourceInfo(
        handle="bob",
        manifold="team-a",
        kind="pty",
        created_by="foo",
        pipes=("notes",),
        pipe_infos=(PipeCreator("notes", "bar"),),
    )
    assert bob.pipe_infos[0] == ("notes", "bar")
    assert SourceInfo.from_json(bob.to_json()) == bob
    assert alice.to_json() == {"handle": "alice", "kind": "message"}


@pytest.mark.parametrize(
    "reply",
    [
        {"sources": {"handle": "alice"}},
        {"sources": [{"kind": "pty"}]},
        {"sources": [{"handle": 7}]},
        {"sources": [{"handle": "a", "pipes": [1]}]},
        {"sources": [{"handle": "a", "pipe_infos": ["notes"]}]},
        [],
    ],
)
def test_list_sources_rejects_malformed_replies(
    client: ServerClient, server: ScriptedServer, creds: Creds, reply: object
) -> None:
    server.answer(200, reply)
    err = _raises(lambda: client.list_sources(creds))
    assert err.code == E_PROTOCOL and err.message.startswith("malformed ")


def test_list_pipes_decodes_rows(client: ServerClient, server: ScriptedServer, creds: Creds) -> None:
    server.answer(
        200, {"pipes": [{"name": "lobby"}, {"manifold": "team-a", "name": "room", "created_by": "foo"}]}
    )
    assert client.list_pipes(creds) == [
        UncollaredPipe(name="lobby"),
        UncollaredPipe(name="room", manifold="team-a", created_by="foo"),
    ]
    assert UncollaredPipe(name="lobby").to_json() == {"name": "lobby"}


def test_get_source_not_found_passes_through(
    client: ServerClient, server: ScriptedServer, creds: Creds
) -> None:
    server.answer(404, {"error": {"code": "E_SOURCE_NOT_FOUND", "message": "source 'zed' not found"}})
    err = _raises(lambda: client.get_source(creds, "zed"))
    assert (err.code, err.message) == ("E_SOURCE_NOT_FOUND", "source 'zed' not found")


def test_pipe_reply_must_be_an_object(client: ServerClient, server: ScriptedServer, creds: Creds) -> None:
    server.answer(201, b"[]")
    err = _raises(lambda: client.create_uncollared(creds, PipeSpec(name="room")))
    assert err.code == E_PROTOCOL


# -- against the real ppz-server ---------------------------------------------------------------


def test_end_to_end_against_the_real_server(ppz_server: ServerProcess, checks: list[LoginCheck]) -> None:
    key = ppz_server.add_key("acme", "foo")
    client = ServerClient(on_login_check=checks.append)

    reply = client.exchange(ppz_server.url, key)
    assert (reply.account_name, reply.nats_url) == ("acme", ppz_server.nats_url)
    assert reply.nats_user_jwt and reply.nats_user_seed.startswith("SU")
    assert 0 < reply.expires_at - reply.received_at <= 300
    acct = reply.account_id
    assert client.exchange(ppz_server.url, key, acct).account_id == acct

    creds = Creds(url=ppz_server.url, api_key=key, account_id=acct)
    created = client.create_source(creds, "alice", "pty", "team-a")
    assert (created["handle"], created["manifold"], created["subject"]) == (
        "alice",
        "team-a",
        f"{acct}.team-a.alice.inbox",
    )
    client.create_pipe(creds, "alice", PipeSpec(name="notes", ttl_seconds=60))
    assert client.list_sources(creds) == [
        SourceInfo(
            handle="alice",
            manifold="team-a",
            kind="pty",
            created_by="foo",
            pipes=("notes",),
            pipe_infos=(PipeCreator("notes", "foo"),),
        )
    ]
    taken = _raises(lambda: client.create_source(creds, "alice", "message", ""))
    assert (taken.code, taken.message) == (E_SOURCE_TAKEN, "source 'alice' already exists in this account")
    assert {c.value for c in checks} == {LOGIN_OK}

    wrong = Creds(url=ppz_server.url, api_key="ppz_" + "0" * 26, account_id=acct)
    assert _raises(lambda: client.list_sources(wrong)).code == E_INVALID_API_KEY
    assert checks[-1] == LoginCheck(value=LOGIN_INVALID, url=ppz_server.url, api_key=wrong.api_key)
    with pytest.raises(ExchangeError) as info:
        client.exchange(ppz_server.url, wrong.api_key)
    assert info.value.code == E_INVALID_API_KEY and info.value.unauthorized


def test_exchange_reply_and_credential_snapshot_keep_secrets_out_of_repr() -> None:
    """A logged reply or snapshot must not leak the NATS seed or the user JWT."""
    from ppz.messages import CredentialSnapshot

    reply = ExchangeReply(nats_user_jwt="eyJ-secret-jwt", nats_user_seed="SUAsecretseed", expires_at=1.0,
                          received_at=0.0, nats_url="nats://x", account_id="A", account_name="a")
    snap = CredentialSnapshot(jwt="eyJ-secret-jwt", seed="SUAsecretseed", exp=1, generation=1)
    for text in (repr(reply), repr(snap), str(reply), str(snap)):
        assert "secret" not in text
    assert "account_id='A'" in repr(reply)
