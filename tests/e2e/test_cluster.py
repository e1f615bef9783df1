"""A real daemon on a 3-node JetStream cluster with R3 streams (ppz-server with
``PPZ_NATS_EXTERNAL=1``; docs/operations.md): the node the daemon is connected to dies while a
sender and a follower run. The daemon fails over on its own, no acknowledged message is lost or
delivered twice, and the follower continues (spec/daemon.md §5.8, nats.md §6–7)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from daemonfixture import DaemonHome, wait_for
from serverfixture import NatsCluster, ServerProcess, cluster_with_server

from e2e.test_messaging import follow_with_redial, send, setup_world
from ppz import errors, names

# Send failures allowed while the cluster elects new leaders (nats.md §6).
FAILOVER_ERRORS = {"E_NATS_UNREACHABLE", "E_DELIVERY_UNCONFIRMED"}
SEND_INTERVAL = 0.05


@pytest.fixture
def cluster_server(tmp_path: Path) -> Iterator[tuple[NatsCluster, ServerProcess]]:
    with cluster_with_server(tmp_path, replicas=3) as world:
        yield world


class Follower:
    """``ppz read --tail`` on bob.inbox in a thread (``follow_with_redial``, session
    ``follower``): what it got, and when its stream ended."""

    def __init__(self, h: DaemonHome) -> None:
        self.got: list[tuple[int, str]] = []
        self.ends: list[float] = []
        self.stop = threading.Event()
        args = (h, "follower", self.got, self.stop, self.ends)
        threading.Thread(target=follow_with_redial, args=args, daemon=True).start()

    def numbers(self) -> list[int]:
        return [n for n, _ in self.got]


def send_numbers(h: DaemonHome, start: int, until: float, acked: list[int], failed: list[str]) -> int:
    """Send "start", "start+1", … to bob.inbox until the monotonic time ``until``; records what
    was acknowledged and the codes of what failed. Returns the next number."""
    n = start
    while time.monotonic() < until:
        try:
            send(h, "bob", str(n))
            acked.append(n)
        except errors.PpzError as exc:
            failed.append(exc.code)
        n += 1
        time.sleep(SEND_INTERVAL)
    return n


@pytest.mark.timeout(240)
def test_daemon_fails_over_when_its_node_dies(
    cluster_server: tuple[NatsCluster, ServerProcess], ppz_home: DaemonHome
) -> None:
    cluster, server = cluster_server
    world = setup_world(server, ppz_home)
    h = ppz_home
    assert daemon_url(h) == cluster.url  # it dials every URL the server advertises
    victim = wait_for(lambda: cluster.node_of("ppz-daemon"), what="the daemon's node")
    # The worst case: the dying node also leads the stream (so it holds the follower's
    # consumer) and the JetStream meta group.
    reply = requests.post(f"{server.url}/api/v1/auth/exchange", json={"api_key": world["key"]}, timeout=10).json()
    stream = names.stream_name(world["acct"], "", "bob", "inbox")
    cluster.make_stream_leader(stream, victim, reply["nats_user_jwt"], reply["nats_user_seed"])
    cluster.make_meta_leader(victim)

    follower = Follower(h)
    time.sleep(0.5)
    acked: list[int] = []
    failed: list[str] = []
    n = send_numbers(h, 0, time.monotonic() + 1.5, acked, failed)
    before = len(acked)
    mark = len(h.events())
    killed_at = time.monotonic()
    cluster.kill(victim)
    # Keep sending through the elections (4–9 s) and a while after.
    n = send_numbers(h, n, killed_at + 15.0, acked, failed)
    wait_for(lambda: cluster.node_of("ppz-daemon") not in ("", victim), timeout=15, what="the daemon on a survivor")
    send_numbers(h, n, time.monotonic() + 1.0, acked, failed)
    after = len(acked) - before
    try:
        wait_for(lambda: set(acked) <= set(follower.numbers()), timeout=30, what="every acknowledged message")
    finally:
        follower.stop.set()
    numbers = follower.numbers()
    print(f"acked {before} before and {after} after the kill; failed {Counter(failed)}; "
          f"{len(numbers)} followed; {len(follower.ends)} follow redial(s)")
    assert len(numbers) == len(set(numbers)), "a message was delivered twice"
    assert numbers == sorted(numbers), "out of order"
    assert set(failed) <= FAILOVER_ERRORS, failed
    assert before >= 5 and after >= 20, (before, after, failed)
    # The daemon reconnected by itself to a surviving node.
    h.wait_connected()
    assert daemon_url(h) == cluster.url
    survivors = {node.url for node in cluster.live()}
    assert cluster.node_of("ppz-daemon") != victim
    # Either the client library reconnected the connection to a survivor, or a Send arriving
    # during that reconnect dialled a new one (ensure-NATS, daemon.md §4); a failure-report
    # rebuild follows only if its probe (a flush, daemon.md §6) fails too.
    after_kill = h.events()[mark:]
    moved = [e for e in after_kill if e.get("type") == "reconnect" and e.get("reason") in survivors]
    rebuilt = [e for e in after_kill if e.get("type") == "swap"]
    assert moved or rebuilt, after_kill


def daemon_url(h: DaemonHome) -> str:
    """The NATS URL the daemon dials (``Diag`` summary)."""
    return str(h.call("Diag", {})["summary"].get("url") or "")
