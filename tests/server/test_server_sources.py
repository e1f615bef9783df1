"""Source routes (spec/server-api.md §4.1) and the collision rules (§4.3)."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from server_testkit import ApiClient, assert_error, connect_exchanged, stream_config, stream_names
from serverfixture import ServerProcess

PTY_STREAMS = ["heartbeat", "inbox", "stdctrl", "stdin", "stdout", "system"]
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def short(acct: str) -> str:
    return acct.replace("-", "")[:8]


def test_create_message_source_at_root(shared_server: ServerProcess, api: ApiClient) -> None:
    resp = api.post("/api/v1/sources", json={"handle": "alice"})
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"id", "handle", "kind", "subject", "created_at"}
    assert body["handle"] == "alice"
    assert body["kind"] == "message"
    assert body["subject"] == f"{api.account_id}.alice.inbox"
    assert RFC3339_Z.match(body["created_at"])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", body["id"])
    assert stream_names(shared_server, api) == [f"pipe_{short(api.account_id)}_alice_inbox"]
    config = stream_config(shared_server, api, f"pipe_{short(api.account_id)}_alice_inbox")
    assert config is not None
    assert config["subjects"] == [f"{api.account_id}.alice.inbox"]
    assert config["retention"] == "limits"
    assert config["storage"] == "file"
    assert config["discard"] == "old"
    assert config["num_replicas"] == 1
    assert config["max_age"] == 24 * 3600 * 10**9
    assert config["max_msgs"] == 5000
    assert config["max_bytes"] == 16 * 1024 * 1024


def test_create_pty_source_in_manifold(shared_server: ServerProcess, api: ApiClient) -> None:
    resp = api.post("/api/v1/sources", json={"handle": "bob", "kind": "pty", "manifold": "team-a.ops"})
    assert resp.status_code == 201
    body = resp.json()
    assert body["manifold"] == "team-a.ops"
    assert body["kind"] == "pty"
    assert body["subject"] == f"{api.account_id}.team-a.ops.bob.inbox"
    s = short(api.account_id)
    expected = [f"pipe_{s}_team-a_ops_bob_{p}" for p in PTY_STREAMS if p != "heartbeat"]
    expected.append(f"presence_{s}_team-a_ops_bob")
    assert stream_names(shared_server, api) == sorted(expected)
    presence = stream_config(shared_server, api, f"presence_{s}_team-a_ops_bob")
    assert presence is not None
    assert presence["subjects"] == [f"{api.account_id}._presence.team-a.ops.bob"]


def test_explicit_null_fields_mean_defaults(api: ApiClient) -> None:
    resp = api.post("/api/v1/sources", json={"handle": "nully", "kind": None, "manifold": None})
    assert resp.status_code == 201
    assert resp.json()["kind"] == "message"
    assert "manifold" not in resp.json()


@pytest.mark.parametrize(
    "handle", ["", "Alice", "-a", "a-", "a.b", "a_b", "x" * 33, "inbox", "broadcast", "db"]
)
def test_invalid_handle(api: ApiClient, handle: str) -> None:
    resp = api.post("/api/v1/sources", json={"handle": handle})
    assert_error(
        resp,
        400,
        "E_INVALID_HANDLE",
        f"invalid handle '{handle}': must match [a-z0-9-] (max 32, no leading/trailing -, not reserved)",
    )


def test_missing_handle(api: ApiClient) -> None:
    assert_error(api.post("/api/v1/sources", json={}), 400, "E_INVALID_HANDLE")


@pytest.mark.parametrize(
    "manifold,segment",
    [("Team", "Team"), ("team.inbox", "inbox"), ("a..b", ""), ("ok.x_y", "x_y"), (".", "")],
)
def test_invalid_manifold(api: ApiClient, manifold: str, segment: str) -> None:
    resp = api.post("/api/v1/sources", json={"handle": "alice", "manifold": manifold})
    assert_error(resp, 400, "E_INVALID_MANIFOLD", f"manifold segment invalid: {segment}")


def test_invalid_kind(api: ApiClient) -> None:
    resp = api.post("/api/v1/sources", json={"handle": "alice", "kind": "robot"})
    assert_error(resp, 400, "E_INVALID_KIND", "invalid kind 'robot': must be message or pty")


def test_check_order_handle_then_manifold_then_kind(api: ApiClient) -> None:
    bad_all = {"handle": "BAD", "manifold": "BAD", "kind": "robot"}
    assert_error(api.post("/api/v1/sources", json=bad_all), 400, "E_INVALID_HANDLE")
    bad_all["handle"] = "good"
    assert_error(api.post("/api/v1/sources", json=bad_all), 400, "E_INVALID_MANIFOLD")
    bad_all["manifold"] = "fine"
    assert_error(api.post("/api/v1/sources", json=bad_all), 400, "E_INVALID_KIND")


def test_duplicate_handle_is_taken_in_any_manifold(api: ApiClient) -> None:
    assert api.post("/api/v1/sources", json={"handle": "alice"}).status_code == 201
    assert_error(
        api.post("/api/v1/sources", json={"handle": "alice"}),
        409,
        "E_SOURCE_TAKEN",
        "source 'alice' already exists in this account",
    )
    assert_error(
        api.post("/api/v1/sources", json={"handle": "alice", "manifold": "elsewhere"}), 409, "E_SOURCE_TAKEN"
    )


def test_same_handle_in_two_accounts(shared_server: ServerProcess, api: ApiClient) -> None:
    from server_testkit import new_account

    key, account = new_account(shared_server)
    other = ApiClient(shared_server.url, key, account)
    assert api.post("/api/v1/sources", json={"handle": "twin"}).status_code == 201
    assert other.post("/api/v1/sources", json={"handle": "twin"}).status_code == 201


def test_concurrent_creation_of_one_handle_gives_exactly_one_201(api: ApiClient) -> None:
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def create() -> None:
        client = ApiClient(api.url, api.key)
        barrier.wait()
        status = client.post("/api/v1/sources", json={"handle": "racer"}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=create) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [201] + [409] * 11
    assert [s["handle"] for s in api.get("/api/v1/sources").json()["sources"]] == ["racer"]


def test_list_sources_ordered_and_shaped(api: ApiClient) -> None:
    assert api.get("/api/v1/sources").json() == {"sources": []}
    for body in (
        {"handle": "zed"},
        {"handle": "amy", "manifold": "team-b"},
        {"handle": "bob", "manifold": "team-a", "kind": "pty"},
        {"handle": "abe"},
        {"handle": "cat", "manifold": "team-a"},
    ):
        assert api.post("/api/v1/sources", json=body).status_code == 201
    assert api.post("/api/v1/sources/bob/pipes", json={"name": "zeta"}).status_code == 201
    assert api.post("/api/v1/sources/bob/pipes", json={"name": "alpha"}).status_code == 201
    assert api.patch("/api/v1/sources/bob/pipes/inbox", json={"max_msgs": 10}).status_code == 200
    sources = api.get("/api/v1/sources").json()["sources"]
    assert [(s.get("manifold", ""), s["handle"]) for s in sources] == [
        ("", "abe"),
        ("", "zed"),
        ("team-a", "bob"),
        ("team-a", "cat"),
        ("team-b", "amy"),
    ]
    assert sources[0] == {"handle": "abe", "kind": "message", "created_by": "admin"}
    assert sources[2] == {
        "handle": "bob",
        "manifold": "team-a",
        "kind": "pty",
        "created_by": "admin",
        "pipes": ["alpha", "inbox", "zeta"],
        "pipe_infos": [
            {"pipe": "alpha", "created_by": "admin"},
            {"pipe": "inbox", "created_by": "admin"},
            {"pipe": "zeta", "created_by": "admin"},
        ],
    }


def test_created_by_is_the_keys_principal(shared_server: ServerProcess) -> None:
    from server_testkit import new_account

    key, account = new_account(shared_server, user="carol")
    client = ApiClient(shared_server.url, key, account)
    assert client.post("/api/v1/sources", json={"handle": "s"}).status_code == 201
    assert client.get("/api/v1/sources/s").json()["created_by"] == "carol"


def test_get_source(api: ApiClient) -> None:
    api.post("/api/v1/sources", json={"handle": "alice", "manifold": "m"})
    assert api.get("/api/v1/sources/alice").json() == {
        "handle": "alice",
        "manifold": "m",
        "kind": "message",
        "created_by": "admin",
    }
    assert_error(api.get("/api/v1/sources/bob"), 404, "E_SOURCE_NOT_FOUND", "source 'bob' not found")
    assert_error(
        api.get("/api/v1/sources/NOT%20VALID"), 404, "E_SOURCE_NOT_FOUND", "source 'NOT VALID' not found"
    )


def test_delete_source_removes_rows_and_streams(shared_server: ServerProcess, api: ApiClient) -> None:
    api.post("/api/v1/sources", json={"handle": "bob", "kind": "pty", "manifold": "m"})
    api.post("/api/v1/sources", json={"handle": "keep"})
    api.post("/api/v1/sources/bob/pipes", json={"name": "notes"})
    api.patch("/api/v1/sources/bob/pipes/stdout", json={"ttl_seconds": 5})
    assert len(stream_names(shared_server, api)) == 8
    resp = api.delete("/api/v1/sources/bob")
    assert resp.status_code == 204
    assert resp.content == b""
    assert stream_names(shared_server, api) == [f"pipe_{short(api.account_id)}_keep_inbox"]
    assert_error(api.get("/api/v1/sources/bob"), 404, "E_SOURCE_NOT_FOUND")
    # The handle is free again, and the old pipe rows are gone with the source.
    assert api.post("/api/v1/sources", json={"handle": "bob"}).status_code == 201
    assert "pipes" not in api.get("/api/v1/sources/bob").json()


def test_delete_source_errors(api: ApiClient) -> None:
    assert_error(api.delete("/api/v1/sources/ghost"), 404, "E_SOURCE_NOT_FOUND", "source 'ghost' not found")
    assert_error(api.delete("/api/v1/sources/Bad_Handle"), 400, "E_INVALID_HANDLE")


def test_ensure_pty(shared_server: ServerProcess, api: ApiClient) -> None:
    created = api.post("/api/v1/sources", json={"handle": "term", "manifold": "ops"}).json()
    api.patch("/api/v1/sources/term/pipes/inbox", json={"max_msgs": 42})
    resp = api.post("/api/v1/sources/term/ensure-pty", json={})
    assert resp.status_code == 200
    body = resp.json()
    assert body == {**created, "kind": "pty"}
    s = short(api.account_id)
    names = stream_names(shared_server, api)
    assert f"presence_{s}_ops_term" in names
    assert len(names) == 6
    inbox = stream_config(shared_server, api, f"pipe_{s}_ops_term_inbox")
    assert inbox is not None and inbox["max_msgs"] == 42
    assert api.get("/api/v1/sources/term").json()["kind"] == "pty"
    # Idempotent, and the body is ignored.
    again = api.post("/api/v1/sources/term/ensure-pty", data=b"whatever")
    assert again.status_code == 200
    assert again.json() == body


def test_ensure_pty_unknown_source(api: ApiClient) -> None:
    assert_error(api.post("/api/v1/sources/ghost/ensure-pty", json={}), 404, "E_SOURCE_NOT_FOUND")


def test_stream_failure_rolls_the_source_back(shared_server: ServerProcess, api: ApiClient) -> None:
    """A stream that already captures the inbox subject makes provisioning fail → 500, no source."""
    reply = api.exchange().json()

    async def squat() -> None:
        nc = await connect_exchanged(shared_server, reply)
        js = nc.jetstream()
        await js.add_stream(name="squatter", subjects=[f"{api.account_id}.victim.inbox"])
        await nc.close()

    asyncio.run(squat())
    resp = api.post("/api/v1/sources", json={"handle": "victim"})
    assert_error(resp, 500, "E_INTERNAL")
    assert_error(api.get("/api/v1/sources/victim"), 404, "E_SOURCE_NOT_FOUND")
    assert stream_names(shared_server, api) == ["squatter"]


# --- collision rules (§4.3) -------------------------------------------------------------------


ROOM = {"name": "room"}

COLLISIONS = [
    # (created first, then attempted, the 409 message)
    (
        [("pipes", ROOM)],
        ("sources", {"handle": "room"}),
        "name 'room' is already taken by uncollared pipe at root",
    ),
    (
        [("pipes", {"name": "hall", "manifold": "team-a"})],
        ("sources", {"handle": "hall", "manifold": "team-a"}),
        "name 'hall' is already taken by uncollared pipe at manifold 'team-a'",
    ),
    (
        [("pipes", {"name": "room", "manifold": "alice"})],
        ("sources", {"handle": "alice"}),
        "manifold path 'alice' is already used by uncollared pipes",
    ),
    (
        [("pipes", {"name": "room", "manifold": "t.bob.deep"})],
        ("sources", {"handle": "bob", "manifold": "t"}),
        "manifold path 't.bob' is already used by uncollared pipes",
    ),
    (
        [("sources", {"handle": "bob"})],
        ("pipes", {"name": "bob"}),
        "name 'bob' is already taken by source at root",
    ),
    (
        [("sources", {"handle": "eve", "manifold": "team-a"})],
        ("pipes", {"name": "eve", "manifold": "team-a"}),
        "name 'eve' is already taken by source at manifold 'team-a'",
    ),
    (
        [("sources", {"handle": "alice"})],
        ("pipes", {"name": "room", "manifold": "alice.x"}),
        "manifold path 'alice' is reserved by source 'alice' at root",
    ),
    (
        [("sources", {"handle": "alice"})],
        ("pipes", {"name": "room", "manifold": "alice"}),
        "manifold path 'alice' is reserved by source 'alice' at root",
    ),
    (
        [("sources", {"handle": "bob", "manifold": "team-a"})],
        ("pipes", {"name": "room", "manifold": "team-a.bob.x"}),
        "manifold path 'team-a.bob' is reserved by source 'bob' at manifold 'team-a'",
    ),
]

NO_COLLISIONS = [
    ([("pipes", ROOM)], ("sources", {"handle": "room", "manifold": "team-a"})),
    ([("pipes", {"name": "room", "manifold": "alice"})], ("sources", {"handle": "ali"})),
    ([("pipes", {"name": "room", "manifold": "t.bob.deep"})], ("sources", {"handle": "bo", "manifold": "t"})),
    ([("sources", {"handle": "bob"})], ("pipes", {"name": "bob", "manifold": "team-a"})),
    (
        [("sources", {"handle": "bob", "manifold": "team-a"})],
        ("pipes", {"name": "room", "manifold": "team-a.x.bob"}),
    ),
    ([("sources", {"handle": "alice"})], ("pipes", {"name": "room", "manifold": "x.alice"})),
]


def _create_all(api: ApiClient, steps: list[tuple[str, dict[str, str]]]) -> None:
    for route, body in steps:
        assert api.post(f"/api/v1/{route}", json=body).status_code == 201


@pytest.mark.parametrize("first,then,message", COLLISIONS)
def test_collision_rules(
    api: ApiClient, first: list[tuple[str, dict[str, str]]], then: tuple[str, dict[str, str]], message: str
) -> None:
    _create_all(api, first)
    assert_error(api.post(f"/api/v1/{then[0]}", json=then[1]), 409, "E_NAME_TAKEN", message)


@pytest.mark.parametrize("first,then", NO_COLLISIONS)
def test_no_collision(
    api: ApiClient, first: list[tuple[str, dict[str, str]]], then: tuple[str, dict[str, str]]
) -> None:
    _create_all(api, first + [then])
