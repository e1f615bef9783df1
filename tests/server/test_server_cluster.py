"""ppz-server with an external NATS JetStream cluster (``PPZ_NATS_EXTERNAL=1``,
``PPZ_STREAM_REPLICAS``; docs/operations.md): settings, ``ppz-server nats-config``, and a real
3-node cluster on loopback ports."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_testkit import ApiClient, assert_error, nats_connect, new_account, wait_for
from serverfixture import NatsCluster, ServerProcess, cluster_with_server, nats_server_pids

from ppz.server import cli, natsconf, natsjwt, trust
from ppz.server.natsctl import jetstream_state
from ppz.server.settings import Settings, SettingsError

URLS = "nats://127.0.0.1:4001,nats://127.0.0.1:4002,nats://127.0.0.1:4003"

# --- settings ---------------------------------------------------------------------------------


def test_external_settings() -> None:
    s = Settings.from_env({"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": URLS, "PPZ_STREAM_REPLICAS": "3"})
    assert s.nats_external and s.stream_replicas == 3
    assert s.nats_urls == tuple(URLS.split(","))
    assert s.nats_dial_urls == URLS.split(",")
    assert s.advertised_nats_url == URLS  # no PPZ_NATS_PUBLIC_URL: clients get the same URLs
    assert s.deployment_error() == ""
    s = Settings.from_env({"PPZ_NATS_EXTERNAL": "true", "PPZ_NATS_URLS": URLS, "PPZ_NATS_PUBLIC_URL": "nats://pub:1"})
    assert s.advertised_nats_url == "nats://pub:1"
    # Normalised: default scheme and port, IPv6 brackets, duplicates dropped.
    s = Settings.from_env({"PPZ_NATS_EXTERNAL": "yes", "PPZ_NATS_URLS": " h1:5000 , tls://h2 ,[::1]:7,h1:5000"})
    assert s.nats_urls == ("nats://h1:5000", "tls://h2:4222", "nats://[::1]:7")


def test_external_urls_default_to_the_public_url_then_the_nats_addr() -> None:
    s = Settings.from_env({"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_PUBLIC_URL": URLS})
    assert s.nats_urls == tuple(URLS.split(","))
    s = Settings.from_env({"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_ADDR": "0.0.0.0:5222"})
    assert s.nats_urls == ("nats://127.0.0.1:5222",)
    assert s.advertised_nats_url == "nats://127.0.0.1:5222"


def test_child_mode_is_unchanged() -> None:
    s = Settings.from_env({"PPZ_NATS_PUBLIC_URL": URLS})
    assert not s.nats_external and s.nats_urls == ()
    assert s.nats_dial_urls == ["nats://127.0.0.1:4222"]
    assert s.advertised_nats_url == URLS
    assert Settings.from_env({"PPZ_NATS_EXTERNAL": "0"}).advertised_nats_url == ""


@pytest.mark.parametrize(
    "env",
    [
        {"PPZ_NATS_EXTERNAL": "maybe"},
        {"PPZ_NATS_URLS": URLS},  # only with PPZ_NATS_EXTERNAL=1
        {"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": "http://h:1"},
        {"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": "nats://user:pw@h:1"},
        {"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": "nats://h:0"},
        {"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": "nats://h:port"},
        {"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": "nats://:4222"},
        {"PPZ_NATS_EXTERNAL": "1", "PPZ_NATS_URLS": " , "},
    ],
)
def test_bad_external_settings(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_replicas_need_a_cluster(tmp_path: Path) -> None:
    s = Settings.from_env({"PPZ_STREAM_REPLICAS": "3"})
    assert "PPZ_NATS_EXTERNAL=1" in s.deployment_error()
    server = ServerProcess(tmp_path / "data", env={"PPZ_STREAM_REPLICAS": "3"})
    assert server.spawn().wait(20) == 2
    assert "needs a JetStream cluster" in server.log_text()
    assert nats_server_pids(server.data_dir) == []


# --- node configuration -------------------------------------------------------------------------


def test_route_urls() -> None:
    assert natsconf.route_url("h:7000") == "nats-route://h:7000"
    assert natsconf.route_url("nats://h") == "nats-route://h:6222"
    assert natsconf.route_url("nats-route://[::1]:1") == "nats-route://[::1]:1"
    for bad in ("tls://h:1", "h:0", "u:p@h:1"):
        with pytest.raises(SettingsError):
            natsconf.route_url(bad)


def node(tmp_path: Path, **changes: Any) -> natsconf.ClusterNode:
    fields: dict[str, Any] = {
        "name": "n1",
        "listen": ("0.0.0.0", 4222),
        "cluster_listen": ("10.0.0.1", 6222),
        "routes": ("nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222"),
        "store_dir": tmp_path / "n1",
    }
    return natsconf.ClusterNode(**(fields | changes))


def test_node_config_rendering(tmp_path: Path) -> None:
    t = trust.mint_trust(1)
    text = natsconf.render_node_config(node(tmp_path, monitor=("127.0.0.1", 8222)), t)
    lines = [line.strip() for line in text.splitlines()]
    for expected in [
        'server_name: "n1"',
        'listen: "0.0.0.0:4222"',
        "max_control_line: 32768",
        'http: "127.0.0.1:8222"',
        f'jetstream {{ store_dir: "{tmp_path / "n1"}" }}',
        'name: "ppz"',
        'listen: "10.0.0.1:6222"',
        '"nats-route://10.0.0.1:6222"',
        '"nats-route://10.0.0.2:6222"',
        f'operator: "{t.operator_jwt}"',
        f'system_account: "{t.system_account_key}"',
        "type: full",
        f'dir: "{tmp_path / "n1" / "resolver"}"',
        "allow_delete: false",
        f'"{t.system_account_key}": "{t.system_account_jwt}"',
    ]:
        assert expected in lines, expected
    assert t.operator_seed not in text and t.system_account_seed not in text and t.system_user_seed not in text
    assert "http:" not in natsconf.render_node_config(node(tmp_path), t)


@pytest.mark.parametrize(
    "changes",
    [{"name": "has space"}, {"name": ""}, {"cluster_name": "a/b"}, {"routes": ()}, {"store_dir": Path("rel")}],
)
def test_node_config_refuses(tmp_path: Path, changes: dict[str, Any]) -> None:
    with pytest.raises(SettingsError):
        natsconf.render_node_config(node(tmp_path, **changes), trust.mint_trust(1))


def nats_config(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ppz.server.cli", "nats-config", *args],
        env={"PPZ_SERVER_DATA": str(data), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nats_config_command_uses_the_server_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "server"
    out = nats_config(data, "--name=n2", "--routes=a:6222,b:6222", "--routes=c", f"--store-dir={tmp_path}/n2")
    assert out.returncode == 0, out.stderr
    minted = json.loads((data / "trust.json").read_text())  # minted on first use, mode 0600
    assert (data / "trust.json").stat().st_mode & 0o777 == 0o600
    assert f'operator: "{minted["operator_jwt"]}"' in out.stdout
    for route in ("a:6222", "b:6222", "c:6222"):
        assert f'"nats-route://{route}"' in out.stdout
    # In process, with --output: the same trust is reused.
    monkeypatch.setenv("PPZ_SERVER_DATA", str(data))
    target = tmp_path / "n3.conf"
    argv = ["nats-config", "--name=n3", "--routes=a", "--store-dir=/srv/n3", "--listen=:4333", f"-o={target}"]
    assert cli.main(argv) == 0
    text = target.read_text()
    assert f'operator: "{minted["operator_jwt"]}"' in text and 'listen: "0.0.0.0:4333"' in text
    assert json.loads((data / "trust.json").read_text()) == minted
    for bad in (["--name=n 1", "--routes=a"], ["--name=n1", "--routes=a:0"], ["--name=n1", "--routes=a", "--listen=x"]):
        assert cli.main(["nats-config", *bad, "--store-dir=/srv/x"]) == 2
    assert "ppz-server:" in capsys.readouterr().err


def test_jetstream_state() -> None:
    server = {"name": "n1", "jetstream": True}
    config = {"store_dir": "/x"}
    assert jetstream_state({"server": server, "data": {"config": config}}) == (True, "", 1)
    meta = {"name": "ppz", "leader": "n2", "cluster_size": 3}
    assert jetstream_state({"server": server, "data": {"config": config, "meta_cluster": meta}}) == (True, "", 3)
    ready, why, size = jetstream_state(
        {"server": server, "data": {"config": config, "meta_cluster": {**meta, "leader": ""}}}
    )
    assert (ready, size) == (False, 3) and "no meta leader" in why
    assert not jetstream_state({"server": {"name": "n1", "jetstream": False}, "data": {}})[0]
    assert not jetstream_state({"server": server, "data": {"disabled": True}})[0]


# --- a real cluster -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsCluster, ServerProcess]]:
    """A 3-node cluster and a ppz-server with R3 streams using it (no child)."""
    with cluster_with_server(tmp_path_factory.mktemp("cluster")) as world:
        yield world


def client_of(server: ServerProcess) -> ApiClient:
    key, account_id = new_account(server)
    return ApiClient(server.url, key, account_id)


async def _stream_info(url: str, reply: dict[str, Any], stream: str) -> dict[str, Any]:
    nc = await nats_connect(url, reply["nats_user_jwt"], reply["nats_user_seed"])
    try:
        msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
        return dict(json.loads(msg.data))
    finally:
        await nc.close()


def stream_info(url: str, reply: dict[str, Any], stream: str) -> dict[str, Any]:
    """STREAM.INFO through one node, with a fresh credential of the account."""
    return asyncio.run(_stream_info(url, reply, stream))


def try_create_source(client: ApiClient, handle: str) -> str | None:
    """Create a source (or find it created by an earlier attempt); None on a 500 to retry."""
    resp = client.post("/api/v1/sources", json={"handle": handle})
    if resp.status_code == 500 or (resp.status_code == 409 and "E_SOURCE_TAKEN" not in resp.text):
        return None
    assert resp.status_code in (201, 409), resp.text
    return f"pipe_{client.account_id.replace('-', '')[:8]}_{handle}_inbox"


def create_source(client: ApiClient, handle: str) -> str:
    """Create a source; its inbox stream's name."""
    resp = client.post("/api/v1/sources", json={"handle": handle})
    assert resp.status_code == 201, resp.text
    return f"pipe_{client.account_id.replace('-', '')[:8]}_{handle}_inbox"


@pytest.mark.timeout(120)
def test_external_cluster_serves_with_r3_streams(cluster_world: tuple[NatsCluster, ServerProcess]) -> None:
    cluster, server = cluster_world
    assert not (server.data_dir / "nats-server.conf").exists()
    assert not server.nats_pid_path.exists()
    assert "external at " + cluster.url in server.log_text()
    assert "JetStream ready (3 server(s)" in server.log_text()
    client = client_of(server)
    reply = client.exchange().json()
    assert reply["nats_url"] == cluster.url
    stream = create_source(client, "bob")
    # The account JWT reached every node (full resolver), and the stream has 3 replicas.
    for url in cluster.urls:
        info = wait_for(lambda u=url: stream_info(u, client.exchange().json(), stream).get("config"))
        assert info["num_replicas"] == 3
    info = stream_info(cluster.urls[0], reply, stream)
    assert len(info["cluster"]["replicas"]) == 2
    assert {info["cluster"]["leader"], *(r["name"] for r in info["cluster"]["replicas"])} == {"n1", "n2", "n3"}


@pytest.mark.timeout(180)
def test_server_survives_the_loss_of_its_node(cluster_world: tuple[NatsCluster, ServerProcess]) -> None:
    """Kill the node of the server's system connection (made the meta leader first, the worst
    case): once the survivors elected a new meta leader, a new account is provisioned (its JWT
    pushed to a surviving node) and gets R3 streams; the restarted node learns it."""
    cluster, server = cluster_world
    victim = wait_for(lambda: cluster.node_of("ppz-server-system"))
    cluster.make_meta_leader(victim)
    cluster.kill(victim)
    try:
        wait_for(lambda: cluster.node_of("ppz-server-system") not in ("", victim), timeout=15)
        assert cluster.wait_meta_leader() != victim
        client = client_of(server)
        # A busy cluster may still be settling after the election: the server answers 500 and
        # the client retries, as docs/operations.md tells users to.
        stream = wait_for(lambda: try_create_source(client, "carol"), timeout=45)
        survivor = next(n.url for n in cluster.live())
        assert stream_info(survivor, client.exchange().json(), stream)["config"]["num_replicas"] == 3
    finally:
        cluster.restart(victim)  # the module's cluster must stay whole for the next tests
    url = cluster.node(victim).url
    # The restarted node resolves the account pushed while it was down, and catches up.
    info = wait_for(lambda: stream_info(url, client.exchange().json(), stream).get("config"), timeout=30)
    assert info["num_replicas"] == 3
    cluster.wait_meta_leader()


def another_server(world: tuple[NatsCluster, ServerProcess], data: Path, replicas: int) -> ServerProcess:
    """One more ppz-server on the cluster, with its own store and the operator the cluster trusts."""
    cluster, server = world
    if not data.exists():
        data.mkdir(mode=0o700)
        shutil.copy2(server.data_dir / "trust.json", data / "trust.json")
    return ServerProcess(data, env=cluster.server_env(replicas=replicas))


@pytest.mark.timeout(120)
def test_more_replicas_than_nodes_fails_loudly(
    cluster_world: tuple[NatsCluster, ServerProcess], tmp_path: Path
) -> None:
    r5 = another_server(cluster_world, tmp_path / "r5", replicas=5).start()
    try:
        assert "PPZ_STREAM_REPLICAS=5, but the JetStream cluster has 3 server(s)" in r5.log_text()
        resp = client_of(r5).post("/api/v1/sources", json={"handle": "dave"})
        assert_error(resp, 500, "E_INTERNAL")
    finally:
        r5.close()


@pytest.mark.timeout(180)
def test_changed_replicas_apply_at_first_use_after_a_restart(
    cluster_world: tuple[NatsCluster, ServerProcess], tmp_path: Path
) -> None:
    cluster, server = cluster_world
    # A node restarted by an earlier test may not be a placement peer yet: wait until an R3
    # stream can be placed, or the heal below would find "no suitable peers".
    wait_for(lambda: try_create_source(client_of(server), "probe"), timeout=45)
    r1 = another_server(cluster_world, tmp_path / "data", replicas=1).start()
    try:
        client = client_of(r1)
        stream = create_source(client, "erin")
        assert stream_info(cluster.urls[0], client.exchange().json(), stream)["config"]["num_replicas"] == 1
    finally:
        r1.close()
    r3 = another_server(cluster_world, tmp_path / "data", replicas=3).start()
    try:
        client.url = r3.url
        reply = client.exchange().json()  # first use: heals (create-or-update) every stream
        # The update is applied by the stream's leader; a busy cluster may report it a moment later.
        deadline = time.monotonic() + 20
        while stream_info(cluster.urls[1], reply, stream)["config"]["num_replicas"] != 3:
            assert time.monotonic() < deadline, "the stream was not updated to 3 replicas"
            time.sleep(0.2)
    finally:
        r3.close()


def test_operator_of_nats_config_matches_the_server(cluster_world: tuple[NatsCluster, ServerProcess]) -> None:
    cluster, server = cluster_world
    stored = json.loads((server.data_dir / "trust.json").read_text())
    text = cluster.nodes[0].config_path.read_text()
    assert natsjwt.public_key(stored["operator_seed"]) in text
