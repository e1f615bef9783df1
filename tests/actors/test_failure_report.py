"""The failure report's probe and outcome (spec/daemon.md §6; ipc.md §7.13 step 5).

The probe is a core round trip, so a JetStream that does not answer (a cluster electing its
meta leader) keeps a healthy connection; the report's outcome is done only once a failed
probe's connection is closed, so a Read retrying after it never gets the stalled connection.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.js.client import JetStreamContext

from .natsserver import (  # noqa: F401 - nats_servers_fixture is a fixture
    Harness,
    NatsServer,
    NatsServers,
    credential,
    nats_servers_fixture,
    start_nats_actor,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server(nats_servers: NatsServers) -> NatsServer:
    return nats_servers()


@pytest.fixture
def connected(tmp_path: Path, server: NatsServer) -> Harness:
    harness = start_nats_actor(tmp_path, server.url, credential(1))
    harness.proxy.rebuild("ensureNATS").get()
    return harness


def test_a_jetstream_that_does_not_answer_keeps_a_healthy_connection(
    connected: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_answer(self: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)  # the meta leader is being elected: no JetStream API reply
        raise nats.errors.TimeoutError

    for name in ("account_info", "stream_info", "find_stream_name_by_subject"):
        monkeypatch.setattr(JetStreamContext, name, no_answer)
    view = connected.view()
    connected.proxy.report_failure("stream lookup: nats: timeout").get().result(10)
    assert [(e.type, e.reason) for e in connected.events()[2:]] == [
        ("warn", "kept connection: probe passed after stream lookup: nats: timeout"),
    ]
    assert connected.view().nc is view.nc and connected.view().state() == "connected"
    connected.kick_connect.assert_not_called()


def test_the_outcome_of_a_failed_probe_comes_after_the_connection_is_closed(
    connected: Harness, server: NatsServer
) -> None:
    view = connected.view()
    server.pause()
    try:
        first = connected.proxy.report_failure("stream lookup: nats: timeout").get()
        second = connected.proxy.report_failure("stream lookup: nats: timeout").get()
        assert second is first  # one report in flight: the second caller waits for the same one
        first.result(15)
        # Nothing to wait for: a caller retrying now never gets the stalled connection.
        assert view.client.is_closed and connected.view().state() == "disconnected"
        connected.kick_connect.assert_called()
    finally:
        server.resume()
    assert [e.type for e in connected.events()].count("force_close") == 1
    assert connected.events("force_close")[0].nc_id == f"nc-{os.getpid()}-1"


def test_a_report_on_a_reconnecting_connection_does_not_probe(connected: Harness, server: NatsServer) -> None:
    server.kill()  # the client reconnects by itself (every 2 s, up to 60 times)
    connected.wait_for("disconnect")
    assert connected.view().state() == "connecting"
    connected.proxy.report_failure("stream lookup: nats: timeout").get().result(1)
    connected.proxy.view().get()
    assert [e.type for e in connected.events()] == ["swap", "connect", "disconnect"]
