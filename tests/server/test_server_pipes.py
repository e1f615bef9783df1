"""Pipe routes (spec/server-api.md §4.2): collared and uncollared, retention rules."""

from __future__ import annotations

import uuid

import pytest
from server_testkit import ApiClient, assert_error, new_account, stream_config, stream_names
from serverfixture import ServerProcess

DAY_NS = 24 * 3600 * 10**9
PIPE_SET_EMPTY = "pipe set: name at least one of --ttl, --max-msgs, --max-bytes"


def short(acct: str) -> str:
    return acct.replace("-", "")[:8]


@pytest.fixture
def alice(api: ApiClient) -> ApiClient:
    assert api.post("/api/v1/sources", json={"handle": "alice", "manifold": "team-a"}).status_code == 201
    return api


# --- collared create --------------------------------------------------------------------------


def test_create_collared_pipe_with_defaults(shared_server: ServerProcess, alice: ApiClient) -> None:
    resp = alice.post("/api/v1/sources/alice/pipes", json={"name": "notes"})
    assert resp.status_code == 201
    stream = f"pipe_{short(alice.account_id)}_team-a_alice_notes"
    assert resp.json() == {
        "handle": "alice",
        "manifold": "team-a",
        "name": "notes",
        "stream_name": stream,
        "ttl_seconds": 86400,
        "max_msgs": 5000,
        "max_bytes": 16777216,
    }
    config = stream_config(shared_server, alice, stream)
    assert config is not None
    assert config["subjects"] == [f"{alice.account_id}.team-a.alice.notes"]
    assert config["max_age"] == DAY_NS
    source = alice.get("/api/v1/sources/alice").json()
    assert source["pipes"] == ["notes"]
    assert source["pipe_infos"] == [{"pipe": "notes", "created_by": "admin"}]


def test_create_collared_pipe_with_retention(shared_server: ServerProcess, alice: ApiClient) -> None:
    body = {"name": "log", "ttl_seconds": 0, "max_msgs": -1, "max_bytes": 1048576}
    resp = alice.post("/api/v1/sources/alice/pipes", json=body)
    assert resp.status_code == 201
    assert resp.json()["ttl_seconds"] == 0
    assert resp.json()["max_msgs"] == -1
    assert resp.json()["max_bytes"] == 1048576
    config = stream_config(shared_server, alice, resp.json()["stream_name"])
    assert config is not None
    assert (config["max_age"], config["max_msgs"], config["max_bytes"]) == (0, -1, 1048576)


def test_short_ttl_keeps_the_duplicate_window_within_max_age(
    shared_server: ServerProcess, alice: ApiClient
) -> None:
    resp = alice.post("/api/v1/sources/alice/pipes", json={"name": "brief", "ttl_seconds": 1})
    assert resp.status_code == 201
    config = stream_config(shared_server, alice, resp.json()["stream_name"])
    assert config is not None
    assert config["max_age"] == 10**9
    assert config["duplicate_window"] <= config["max_age"]


def test_path_handle_wins_and_manifold_is_inherited(alice: ApiClient) -> None:
    alice.post("/api/v1/sources", json={"handle": "bob"})
    body = {"name": "notes", "handle": "bob", "source_handle": "bob", "manifold": "elsewhere"}
    resp = alice.post("/api/v1/sources/alice/pipes", json=body)
    assert resp.status_code == 201
    assert resp.json()["handle"] == "alice"
    assert resp.json()["manifold"] == "team-a"
    assert "pipes" not in alice.get("/api/v1/sources/bob").json()


@pytest.mark.parametrize("name", ["system", "db", "inbox", "heartbeat"])
def test_reserved_pipe_names(alice: ApiClient, name: str) -> None:
    resp = alice.post("/api/v1/sources/alice/pipes", json={"name": name})
    assert_error(resp, 400, "E_INVALID_PIPE", f"pipe name '{name}' is reserved")


@pytest.mark.parametrize("name", ["", "Notes", "a.b", "-x", "x" * 33, "a_b"])
def test_invalid_pipe_names(alice: ApiClient, name: str) -> None:
    resp = alice.post("/api/v1/sources/alice/pipes", json={"name": name})
    assert_error(
        resp,
        400,
        "E_INVALID_PIPE",
        f"pipe name '{name}' is invalid: must match [a-z0-9-] (max 32, no leading/trailing -)",
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("ttl_seconds", -1),
        ("max_msgs", 0),
        ("max_msgs", -2),
        ("max_bytes", 0),
        ("max_bytes", -5),
        ("ttl_seconds", True),
        ("max_msgs", 1.5),
        ("max_bytes", "100"),
        ("ttl_seconds", 10**12),
        ("max_msgs", [1]),
    ],
)
def test_invalid_retention(alice: ApiClient, field: str, value: object) -> None:
    resp = alice.post("/api/v1/sources/alice/pipes", json={"name": "notes", field: value})
    assert_error(resp, 400, "E_INVALID_PIPE", f"invalid retention: {field}")
    resp = alice.patch("/api/v1/sources/alice/pipes/inbox", json={field: value})
    assert_error(resp, 400, "E_INVALID_PIPE", f"invalid retention: {field}")
    resp = alice.post("/api/v1/pipes", json={"name": "room", field: value})
    assert_error(resp, 400, "E_INVALID_PIPE", f"invalid retention: {field}")


def test_null_retention_means_not_set(alice: ApiClient) -> None:
    body = {"name": "notes", "ttl_seconds": None, "max_msgs": None, "max_bytes": None}
    resp = alice.post("/api/v1/sources/alice/pipes", json=body)
    assert resp.status_code == 201
    assert resp.json()["max_msgs"] == 5000


def test_collared_create_check_order(api: ApiClient) -> None:
    # Name and retention are checked before the source is looked up.
    assert_error(api.post("/api/v1/sources/ghost/pipes", json={"name": "inbox"}), 400, "E_INVALID_PIPE")
    assert_error(
        api.post("/api/v1/sources/ghost/pipes", json={"name": "ok", "max_msgs": 0}),
        400,
        "E_INVALID_PIPE",
        "invalid retention: max_msgs",
    )
    assert_error(
        api.post("/api/v1/sources/ghost/pipes", json={"name": "ok"}),
        404,
        "E_SOURCE_NOT_FOUND",
        "source 'ghost' not found",
    )


def test_pipe_named_like_an_auto_pipe_is_taken(api: ApiClient) -> None:
    api.post("/api/v1/sources", json={"handle": "term", "kind": "pty"})
    for name in ("stdout", "stdin", "stdctrl"):
        assert_error(
            api.post("/api/v1/sources/term/pipes", json={"name": name}),
            409,
            "E_PIPE_TAKEN",
            f"pipe '{name}' already exists on source 'term'",
        )
    # A message source has no stdout auto-pipe, so it may create one.
    api.post("/api/v1/sources", json={"handle": "plain"})
    assert api.post("/api/v1/sources/plain/pipes", json={"name": "stdout"}).status_code == 201


def test_duplicate_collared_pipe(alice: ApiClient) -> None:
    assert alice.post("/api/v1/sources/alice/pipes", json={"name": "notes"}).status_code == 201
    assert_error(
        alice.post("/api/v1/sources/alice/pipes", json={"name": "notes"}),
        409,
        "E_PIPE_TAKEN",
        "pipe 'notes' already exists on source 'alice'",
    )


# --- collared set -----------------------------------------------------------------------------


def test_set_needs_a_retention_field(alice: ApiClient) -> None:
    assert_error(
        alice.patch("/api/v1/sources/alice/pipes/inbox", json={}), 400, "E_INVALID_PIPE", PIPE_SET_EMPTY
    )
    assert_error(
        alice.patch("/api/v1/sources/alice/pipes/inbox", json={"name": "inbox", "ttl_seconds": None}),
        400,
        "E_INVALID_PIPE",
        PIPE_SET_EMPTY,
    )


def test_set_auto_pipe_creates_a_row_and_updates_the_stream(shared_server: ServerProcess) -> None:
    account = "tune-" + uuid.uuid4().hex[:8]
    owner_key, account_id = new_account(shared_server, name=account, user="owner")
    tuner_key, same_account = new_account(shared_server, name=account, user="tuner")
    assert same_account == account_id
    owner = ApiClient(shared_server.url, owner_key, account_id)
    tuner = ApiClient(shared_server.url, tuner_key, account_id)
    owner.post("/api/v1/sources", json={"handle": "alice"})
    resp = tuner.patch("/api/v1/sources/alice/pipes/inbox", json={"ttl_seconds": 3600})
    assert resp.status_code == 200
    assert resp.json() == {
        "handle": "alice",
        "name": "inbox",
        "stream_name": f"pipe_{short(account_id)}_alice_inbox",
        "ttl_seconds": 3600,
        "max_msgs": 5000,
        "max_bytes": 16777216,
    }
    config = stream_config(shared_server, owner, resp.json()["stream_name"])
    assert config is not None and config["max_age"] == 3600 * 10**9
    # An auto-pipe's row is created with the source's creator, not the caller.
    assert owner.get("/api/v1/sources/alice").json()["pipe_infos"] == [
        {"pipe": "inbox", "created_by": "owner"}
    ]
    # Absent fields keep their stored values.
    resp = tuner.patch("/api/v1/sources/alice/pipes/inbox", json={"max_msgs": 7})
    assert (resp.json()["ttl_seconds"], resp.json()["max_msgs"]) == (3600, 7)
    config = stream_config(shared_server, owner, resp.json()["stream_name"])
    assert config is not None and (config["max_age"], config["max_msgs"]) == (3600 * 10**9, 7)
    # A custom pipe's creator is the principal that created it.
    assert tuner.post("/api/v1/sources/alice/pipes", json={"name": "notes"}).status_code == 201
    infos = owner.get("/api/v1/sources/alice").json()["pipe_infos"]
    assert infos == [{"pipe": "inbox", "created_by": "owner"}, {"pipe": "notes", "created_by": "tuner"}]


def test_set_custom_pipe(alice: ApiClient) -> None:
    alice.post("/api/v1/sources/alice/pipes", json={"name": "notes", "max_msgs": 10})
    resp = alice.patch("/api/v1/sources/alice/pipes/notes", json={"max_bytes": -1})
    assert resp.status_code == 200
    assert (resp.json()["max_msgs"], resp.json()["max_bytes"], resp.json()["ttl_seconds"]) == (10, -1, 86400)


def test_set_unknown_pipe_is_404_and_creates_nothing(shared_server: ServerProcess, alice: ApiClient) -> None:
    assert_error(
        alice.patch("/api/v1/sources/alice/pipes/stdout", json={"max_msgs": 5}),
        404,
        "E_PIPE_NOT_FOUND",
        "pipe 'stdout' not found on source 'alice'",
    )
    assert_error(
        alice.patch("/api/v1/sources/alice/pipes/nope", json={"max_msgs": 5}), 404, "E_PIPE_NOT_FOUND"
    )
    assert "pipes" not in alice.get("/api/v1/sources/alice").json()
    assert len(stream_names(shared_server, alice)) == 1


def test_set_errors(api: ApiClient) -> None:
    assert_error(
        api.patch("/api/v1/sources/ghost/pipes/inbox", json={"max_msgs": 5}), 404, "E_SOURCE_NOT_FOUND"
    )
    api.post("/api/v1/sources", json={"handle": "alice"})
    assert_error(api.patch("/api/v1/sources/alice/pipes/Bad", json={"max_msgs": 5}), 400, "E_INVALID_PIPE")


# --- collared delete --------------------------------------------------------------------------


def test_delete_custom_pipe(shared_server: ServerProcess, alice: ApiClient) -> None:
    stream = alice.post("/api/v1/sources/alice/pipes", json={"name": "notes"}).json()["stream_name"]
    resp = alice.delete("/api/v1/sources/alice/pipes/notes")
    assert resp.status_code == 204
    assert resp.content == b""
    assert stream_config(shared_server, alice, stream) is None
    assert "pipes" not in alice.get("/api/v1/sources/alice").json()
    assert_error(
        alice.delete("/api/v1/sources/alice/pipes/notes"),
        404,
        "E_PIPE_NOT_FOUND",
        "pipe 'notes' not found on source 'alice'",
    )


def test_delete_auto_pipe_without_row_deletes_its_stream(
    shared_server: ServerProcess, alice: ApiClient
) -> None:
    stream = f"pipe_{short(alice.account_id)}_team-a_alice_inbox"
    assert stream_config(shared_server, alice, stream) is not None
    assert alice.delete("/api/v1/sources/alice/pipes/inbox").status_code == 204
    assert stream_config(shared_server, alice, stream) is None
    # A missing stream is not an error.
    assert alice.delete("/api/v1/sources/alice/pipes/inbox").status_code == 204


def test_delete_tuned_auto_pipe_drops_the_row(alice: ApiClient) -> None:
    alice.patch("/api/v1/sources/alice/pipes/inbox", json={"max_msgs": 3})
    assert alice.delete("/api/v1/sources/alice/pipes/inbox").status_code == 204
    assert "pipes" not in alice.get("/api/v1/sources/alice").json()


def test_delete_collared_errors(api: ApiClient) -> None:
    assert_error(api.delete("/api/v1/sources/ghost/pipes/notes"), 404, "E_SOURCE_NOT_FOUND")


# --- uncollared -------------------------------------------------------------------------------


def test_create_uncollared_pipe(shared_server: ServerProcess, api: ApiClient) -> None:
    resp = api.post("/api/v1/pipes", json={"name": "room", "max_msgs": 100})
    assert resp.status_code == 201
    s = short(api.account_id)
    assert resp.json() == {
        "handle": "",
        "name": "room",
        "stream_name": f"pipe_{s}_room",
        "ttl_seconds": 86400,
        "max_msgs": 100,
        "max_bytes": 16777216,
    }
    resp = api.post("/api/v1/pipes", json={"name": "room", "manifold": "team-a.ops", "handle": ""})
    assert resp.status_code == 201
    assert resp.json()["manifold"] == "team-a.ops"
    assert resp.json()["stream_name"] == f"pipe_{s}_team-a_ops_room"
    config = stream_config(shared_server, api, f"pipe_{s}_team-a_ops_room")
    assert config is not None and config["subjects"] == [f"{api.account_id}.team-a.ops.room"]


@pytest.mark.parametrize("field", ["handle", "source_handle"])
def test_uncollared_with_a_handle_is_400(api: ApiClient, field: str) -> None:
    resp = api.post("/api/v1/pipes", json={"name": "room", field: "alice"})
    assert_error(
        resp,
        400,
        "E_INVALID_PIPE",
        "'room' is the uncollared (sourceless) endpoint; use /api/v1/sources/{handle}/pipes",
    )


def test_uncollared_validation(api: ApiClient) -> None:
    assert_error(
        api.post("/api/v1/pipes", json={"name": "inbox"}),
        400,
        "E_INVALID_PIPE",
        "pipe name 'inbox' is reserved",
    )
    assert_error(api.post("/api/v1/pipes", json={"name": "Room"}), 400, "E_INVALID_PIPE")
    assert_error(api.post("/api/v1/pipes", json={}), 400, "E_INVALID_PIPE")
    assert_error(
        api.post("/api/v1/pipes", json={"name": "room", "manifold": "a.stdout"}),
        400,
        "E_INVALID_MANIFOLD",
        "manifold segment invalid: stdout",
    )


def test_duplicate_uncollared_pipe(api: ApiClient) -> None:
    api.post("/api/v1/pipes", json={"name": "room", "manifold": "team-a"})
    assert_error(
        api.post("/api/v1/pipes", json={"name": "room", "manifold": "team-a"}),
        409,
        "E_PIPE_TAKEN",
        "uncollared pipe 'room' already exists at manifold 'team-a'",
    )
    api.post("/api/v1/pipes", json={"name": "room"})
    assert_error(
        api.post("/api/v1/pipes", json={"name": "room"}),
        409,
        "E_PIPE_TAKEN",
        "uncollared pipe 'room' already exists at root",
    )


def test_list_uncollared(api: ApiClient) -> None:
    assert api.get("/api/v1/pipes").json() == {"pipes": []}
    for body in (
        {"name": "zoo"},
        {"name": "room", "manifold": "b"},
        {"name": "aaa", "manifold": "a"},
        {"name": "abc"},
    ):
        assert api.post("/api/v1/pipes", json=body).status_code == 201
    assert api.get("/api/v1/pipes").json() == {
        "pipes": [
            {"name": "abc", "created_by": "admin"},
            {"name": "zoo", "created_by": "admin"},
            {"manifold": "a", "name": "aaa", "created_by": "admin"},
            {"manifold": "b", "name": "room", "created_by": "admin"},
        ]
    }


def test_set_uncollared(shared_server: ServerProcess, api: ApiClient) -> None:
    api.post("/api/v1/pipes", json={"name": "room", "manifold": "m", "ttl_seconds": 60})
    resp = api.patch("/api/v1/pipes", json={"name": "room", "manifold": "m", "max_bytes": 4096})
    assert resp.status_code == 200
    assert resp.json() == {
        "handle": "",
        "manifold": "m",
        "name": "room",
        "stream_name": f"pipe_{short(api.account_id)}_m_room",
        "ttl_seconds": 60,
        "max_msgs": 5000,
        "max_bytes": 4096,
    }
    config = stream_config(shared_server, api, resp.json()["stream_name"])
    assert config is not None and (config["max_age"], config["max_bytes"]) == (60 * 10**9, 4096)
    assert_error(
        api.patch("/api/v1/pipes", json={"name": "room", "max_bytes": 1}),
        404,
        "E_PIPE_NOT_FOUND",
        "uncollared pipe 'room' not found at root",
    )
    assert_error(
        api.patch("/api/v1/pipes", json={"name": "room", "manifold": "m"}),
        400,
        "E_INVALID_PIPE",
        PIPE_SET_EMPTY,
    )
    assert_error(api.patch("/api/v1/pipes", json={"name": "Bad", "max_msgs": 1}), 400, "E_INVALID_PIPE")
    assert_error(
        api.patch("/api/v1/pipes", json={"name": "room", "manifold": "m..x", "max_msgs": 1}),
        400,
        "E_INVALID_MANIFOLD",
    )


def test_delete_uncollared(shared_server: ServerProcess, api: ApiClient) -> None:
    stream = api.post("/api/v1/pipes", json={"name": "room", "manifold": "team-a"}).json()["stream_name"]
    assert_error(
        api.delete("/api/v1/pipes", params={"name": "room"}),
        404,
        "E_PIPE_NOT_FOUND",
        "uncollared pipe 'room' not found at root",
    )
    resp = api.delete("/api/v1/pipes", params={"name": "room", "manifold": "team-a"})
    assert resp.status_code == 204
    assert resp.content == b""
    assert stream_config(shared_server, api, stream) is None
    assert api.get("/api/v1/pipes").json() == {"pipes": []}
    assert_error(
        api.delete("/api/v1/pipes", params={"name": "room", "manifold": "team-a"}), 404, "E_PIPE_NOT_FOUND"
    )
    assert_error(api.delete("/api/v1/pipes"), 400, "E_INVALID_PIPE")
    assert_error(api.delete("/api/v1/pipes", params={"name": "Bad"}), 400, "E_INVALID_PIPE")
    assert_error(
        api.delete("/api/v1/pipes", params={"name": "ok", "manifold": "x.db"}), 400, "E_INVALID_MANIFOLD"
    )
