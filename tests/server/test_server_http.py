"""HTTP conventions of ppz-server (spec/server-api.md §1): envelope, 404/405, auth, strict
decoding, body cap, ``?org=``, ``/healthz``."""

from __future__ import annotations

import socket

import pytest
import requests
from server_testkit import ApiClient, assert_error, new_account
from serverfixture import ServerProcess

MiB = 1 << 20


def test_healthz(shared_server: ServerProcess) -> None:
    resp = requests.get(shared_server.url + "/healthz", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v1/sources/alice/extra"),
        ("POST", "/api/v1/schedules"),
        ("GET", "/api/v1/sources/"),
        ("GET", "/api/v1/sources/a/pipes/b/c"),
    ],
)
def test_unknown_route_is_404(api: ApiClient, method: str, path: str) -> None:
    assert_error(api.request(method, path), 404, "E_NOT_FOUND", "not found")


@pytest.mark.parametrize(
    "method,path",
    [
        ("PUT", "/api/v1/sources"),
        ("DELETE", "/api/v1/sources"),
        ("POST", "/api/v1/sources/alice"),
        ("GET", "/api/v1/sources/alice/ensure-pty"),
        ("GET", "/api/v1/sources/alice/pipes"),
        ("DELETE", "/api/v1/sources/alice/pipes"),
        ("GET", "/api/v1/sources/alice/pipes/notes"),
        ("PUT", "/api/v1/pipes"),
        ("GET", "/api/v1/auth/exchange"),
        ("POST", "/healthz"),
        ("FROB", "/api/v1/sources"),
    ],
)
def test_wrong_method_is_405(api: ApiClient, method: str, path: str) -> None:
    resp = api.request(method, path)
    assert_error(resp, 405, "E_METHOD_NOT_ALLOWED")
    assert resp.headers["Allow"]


def test_405_comes_before_auth(shared_server: ServerProcess) -> None:
    resp = requests.put(shared_server.url + "/api/v1/sources", timeout=5)
    assert_error(resp, 405, "E_METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-ppz-key"},
        {"Authorization": "Basic ppz_0123456789abcdef0123456789"},
        {"Authorization": "Bearer ppz_0123456789abcdef0123456789"},
        {"Authorization": "Bearer ppz_short"},
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/sources", "/api/v1/pipes", "/api/v1/sources/alice"])
def test_missing_or_bad_bearer_is_401(
    shared_server: ServerProcess, headers: dict[str, str], path: str
) -> None:
    resp = requests.get(shared_server.url + path, headers=headers, timeout=5)
    assert_error(resp, 401, "E_INVALID_API_KEY", "invalid api key")


def test_auth_before_validation(shared_server: ServerProcess) -> None:
    resp = requests.post(shared_server.url + "/api/v1/sources", json={"handle": "BAD!"}, timeout=5)
    assert_error(resp, 401, "E_INVALID_API_KEY")


def test_bearer_scheme_is_case_insensitive(api: ApiClient) -> None:
    resp = api.get("/api/v1/sources", headers={"Authorization": f"bearer {api.key}"})
    assert resp.status_code == 200


def test_org_query_is_accepted_and_ignored(shared_server: ServerProcess, api: ApiClient) -> None:
    other_key, other_account = new_account(shared_server)
    other = ApiClient(shared_server.url, other_key, other_account)
    assert other.post("/api/v1/sources", json={"handle": "theirs"}).status_code == 201

    resp = api.post(f"/api/v1/sources?org={other_account}", json={"handle": "mine"})
    assert resp.status_code == 201
    assert resp.json()["subject"].startswith(api.account_id + ".")
    listed = api.get(f"/api/v1/sources?org={other_account}").json()["sources"]
    assert [s["handle"] for s in listed] == ["mine"]
    assert api.get("/api/v1/sources?org=not-a-uuid").status_code == 200
    assert [s["handle"] for s in other.get("/api/v1/sources").json()["sources"]] == ["theirs"]


@pytest.mark.parametrize(
    "method,path,code",
    [
        ("POST", "/api/v1/sources", "E_INVALID_HANDLE"),
        ("POST", "/api/v1/sources/alice/pipes", "E_INVALID_PIPE"),
        ("PATCH", "/api/v1/sources/alice/pipes/inbox", "E_INVALID_PIPE"),
        ("POST", "/api/v1/pipes", "E_INVALID_PIPE"),
        ("PATCH", "/api/v1/pipes", "E_INVALID_PIPE"),
    ],
)
def test_unknown_json_field_is_400_with_route_code(api: ApiClient, method: str, path: str, code: str) -> None:
    assert api.post("/api/v1/sources", json={"handle": "alice"}).status_code == 201
    valid = {"handle": "bob"} if path == "/api/v1/sources" else {"name": "notes", "ttl_seconds": 60}
    resp = api.request(method, path, json={**valid, "colour": "red"})
    assert_error(resp, 400, code)
    assert "colour" in resp.json()["error"]["message"]
    # Nothing was created or changed.
    assert [s["handle"] for s in api.get("/api/v1/sources").json()["sources"]] == ["alice"]
    assert api.get("/api/v1/pipes").json() == {"pipes": []}


def test_unknown_field_in_exchange_is_401(api: ApiClient) -> None:
    resp = api.exchange(colour="red")
    assert_error(resp, 401, "E_INVALID_API_KEY", "invalid api key")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'"alice"', b"null", b'{"handle": 5}', b'{"handle": "a", "kind": 1}', b"{"],
)
def test_malformed_source_body_is_400(api: ApiClient, body: bytes) -> None:
    resp = api.post("/api/v1/sources", data=body, headers={"Content-Type": "application/json"})
    assert_error(resp, 400, "E_INVALID_HANDLE")


@pytest.mark.parametrize("body", [b"", b"[1]", b'{"name": 7}', b'{"name": "x", "manifold": []}'])
def test_malformed_pipe_body_is_400(api: ApiClient, body: bytes) -> None:
    resp = api.post("/api/v1/pipes", data=body)
    assert_error(resp, 400, "E_INVALID_PIPE")


def test_body_over_1mib_is_413(api: ApiClient) -> None:
    body = b'{"handle": "big"' + b" " * MiB + b"}"
    resp = api.post("/api/v1/sources", data=body)
    assert_error(resp, 413, "E_PAYLOAD_TOO_LARGE")
    assert api.get("/api/v1/sources/big").status_code == 404
    # The server still answers normally afterwards.
    assert api.get("/api/v1/sources").status_code == 200


def test_body_of_exactly_1mib_is_accepted(api: ApiClient) -> None:
    head = b'{"handle": "edge"'
    body = head + b" " * (MiB - len(head) - 1) + b"}"
    assert len(body) == MiB
    resp = api.post("/api/v1/sources", data=body)
    assert resp.status_code == 201, resp.text


def test_chunked_body_over_1mib_is_413(api: ApiClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"handle": "big"'
        for _ in range(17):
            yield b" " * 65536
        yield b"}"

    resp = api.post("/api/v1/sources", data=chunks())
    assert_error(resp, 413, "E_PAYLOAD_TOO_LARGE")


def test_chunked_body_is_decoded(api: ApiClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"handle": '
        yield b'"chunky"}'

    assert api.post("/api/v1/sources", data=chunks()).status_code == 201


def test_exchange_body_over_1mib_is_413(api: ApiClient) -> None:
    resp = api.post("/api/v1/auth/exchange", data=b"x" * (MiB + 1), auth=False)
    assert_error(resp, 413, "E_PAYLOAD_TOO_LARGE")


def _raw_exchange(server: ServerProcess, request: bytes) -> bytes:
    host, port = server.http_addr.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_protocol_errors_get_an_envelope(shared_server: ServerProcess) -> None:
    data = _raw_exchange(shared_server, b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.")
    assert b"application/json" in head
    assert body.startswith(b'{"error":{"code":')
    # An HTTP/0.9-style garbage line gets no status line, but still only the envelope.
    assert _raw_exchange(shared_server, b"NONSENSE\r\n\r\n").startswith(b'{"error":{"code":')


def test_keep_alive_connection_serves_many_requests(api: ApiClient) -> None:
    for i in range(5):
        assert api.post("/api/v1/sources", json={"handle": f"k{i}"}).status_code == 201
        assert_error(api.get(f"/api/v1/sources/missing{i}"), 404, "E_SOURCE_NOT_FOUND")
    assert len(api.get("/api/v1/sources").json()["sources"]) == 5
