"""``ppz diagnostics`` and the NATS event log end to end: real daemons, a real ppz-server and
NATS, the real CLI (spec/daemon.md §8, cli.md §2.5, ipc.md §7.19, behaviours 73–78)."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemonfixture import CLI, DaemonHome, wait_for
from httpproxy import RecordingProxy
from serverfixture import ServerProcess

FOOTER = ["→ Full history:  ppz diagnostics --since=1h",
          "→ Bug report:    ppz diagnostics --bundle  (writes ~/ppz-diag-<ts>.tgz)"]
STORM_DETAIL = ("{n} swaps in {w} — concurrent NATS connection mutation (callers: {callers}); "
                "see docs/diagnostics.md#burst-swap-storm")
BUNDLE_MEMBERS = ["nats-events.jsonl", "nats-events.jsonl.1", "nats-events.jsonl.2", "diagnostics-lifecycle.jsonl",
                  "daemon.pid", "diagnostics.json", "version.txt", "uname.txt", "platform.txt", "MANIFEST"]


def ok(h: DaemonHome, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = h.ppz(*args, **kw)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def diag_json(h: DaemonHome, *args: str) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(ok(h, "diagnostics", "--json", *args).stdout)
    return reply


def epoch(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clock(at: str) -> str:
    """Local ``HH:MM:SS`` of an event time, as the text rendering shows it."""
    return time.strftime("%H:%M:%S", time.localtime(epoch(at)))


def event_line(e: dict[str, Any]) -> str:
    """The rendering of one event (cli.md §2.5)."""
    at = e["at"][:23] + "Z"  # milliseconds, truncated
    caller, nc = e.get("caller") or "?", e.get("nc_id") or "—"
    return f"{e['type']:<12} {at} caller={caller:<28} nc={nc} reason={json.dumps(e.get('reason', ''))}"


def event(type_: str, at: float, reason: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": type_, "at": rfc3339(at), **fields, "reason": reason}


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` as the daemon's poller must see it: old or new content, never empty."""
    tmp = path.with_name(path.name + ".test-tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def login(server: ServerProcess, h: DaemonHome, key: str | None = None, proxy: RecordingProxy | None = None) -> str:
    key = key or server.add_key("acme")
    h.login(proxy.url if proxy else server.url, key)
    h.wait_connected()
    return key


def rewrite_api_key(h: DaemonHome, key: str) -> None:
    """Put another key of the same account into ``credentials`` (an identity change: the daemon
    swaps to nothing, then re-dials) and wait until it is connected with it."""
    creds = json.loads(h.home.credentials.read_text())
    creds["api_key"] = key
    write_atomically(h.home.credentials, json.dumps(creds).encode())
    prefix = key.removeprefix("ppz_")[:8]
    wait_for(lambda: (s := h.status_or_none()) and s.get("key_prefix") == prefix and s.get("nats_state") == "connected",
             what=f"connected with key {prefix}")


def bundle(h: DaemonHome, cwd: Path, env: dict[str, str],
           max_file_size: int | None = None) -> subprocess.CompletedProcess[str]:
    """``ppz diagnostics --bundle`` run in ``cwd`` with ``env`` on top of the home's, and at most
    ``max_file_size`` bytes per written file (RLIMIT_FSIZE)."""
    def limit() -> None:
        if max_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))

    return subprocess.run([*CLI, "diagnostics", "--bundle"], env={**h.env, **env}, cwd=cwd, preexec_fn=limit,
                          capture_output=True, text=True, timeout=60)


def duration_100ms(seconds: float) -> str:
    """A duration rounded to 100 ms, rendered per cli.md §1.6."""
    tenths = int(seconds * 10 + 0.5)
    if tenths == 0:
        return "0s"
    return f"{tenths * 100}ms" if tenths < 10 else f"{tenths / 10:g}s"


# --- patterns -------------------------------------------------------------------------------------


def storms(swaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hits daemon.md §8.7 prescribes for these swaps (other event types never break a
    cluster, so the swaps alone decide): from each swap, the swaps within 2 s; three or more are
    one hit, and the walk continues after them."""
    hits: list[dict[str, Any]] = []
    i = 0
    while i < len(swaps):
        start = micros(swaps[i]["at"])
        cluster = [s for s in swaps[i:] if micros(s["at"]) - start <= 2_000_000]
        if len(cluster) < 3:
            i += 1
            continue
        tenths = (micros(cluster[-1]["at"]) - start + 50_000) // 100_000
        callers = ", ".join(dict.fromkeys(s.get("caller") or "?" for s in cluster))
        detail = STORM_DETAIL.format(n=len(cluster), w=duration_100ms(tenths / 10), callers=callers)
        hits.append({"name": "burst-swap-storm", "at": swaps[i]["at"], "detail": detail})
        i += len(cluster)
    return hits


def micros(at: str) -> int:
    return (datetime.fromisoformat(at) - datetime.fromtimestamp(0, UTC)) // timedelta(microseconds=1)


def test_credential_rewrites_show_a_burst_swap_storm(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    h = ppz_home
    k1, k2 = ppz_server.add_key("acme"), ppz_server.add_key("acme")
    login(ppz_server, h, k1)
    # keep the login's swap out of the storm's 2 s window
    login_swap = epoch([e for e in h.events() if e["type"] == "swap"][-1]["at"])
    time.sleep(max(0.0, login_swap + 2.1 - time.time()))

    # Each rewrite swaps to nothing, then the connect loop swaps in the new connection. How many
    # of those swaps fall within 2 s depends on the machine's speed, so the rewrites go on (three
    # at least) until some three do, and the detector must report exactly the rule's hits.
    keys = [k2, k1] * 8
    for n, key in enumerate(keys, start=1):
        rewrite_api_key(h, key)
        reply = diag_json(h)
        swaps = [e for e in reply["nats_events"] if e["type"] == "swap" and epoch(e["at"]) > login_swap + 2]
        if n >= 3 and storms(swaps):
            break
    assert [e["caller"] for e in swaps] == ["watchState-creds-changed", "ensureNATS"] * n
    expected = storms(swaps)
    assert expected, f"no three of the swaps of {n} rewrites within 2 s: {swaps}"
    assert reply["patterns"] == expected

    # every swap closed the connection it replaced: those disconnects are not drops
    disconnects = [e for e in reply["nats_events"] if e["type"] == "disconnect"]
    assert len(disconnects) >= 3 and reply["nats_drops_last_hour"] == 0

    lines = ok(h, "diagnostics").stdout.splitlines()
    first = expected[0]
    at = lines.index(f"⚠ burst-swap-storm  {clock(first['at'])}")
    assert lines[at - 1:at + 3] == ["", f"⚠ burst-swap-storm  {clock(first['at'])}", "    " + first["detail"], ""]
    assert lines[0].endswith("  drops_last_hour=0")
    # --since scans the files, where the same storm is found
    assert diag_json(h, "--since=1h")["patterns"] == reply["patterns"]


# --- the event log on disk --------------------------------------------------------------------------


def test_since_reads_every_rotated_generation_in_file_order(ppz_home: DaemonHome) -> None:
    h = ppz_home
    h.root.mkdir(mode=0o700)
    now = time.time()
    generation2 = [event("warn", now - 300 + i, f"gen2-{i}") for i in range(3)]
    generation1 = [event("warn", now - 600 + i, f"gen1-{i}") for i in range(3)]
    # older than an hour and 11 MB in all: the first append rotates the active file
    big = [event("warn", now - 7200 + i, "x" * 1_000_000) for i in range(11)]
    recent = [event("disconnect", now - 1800 + i / 1000, f"act-{i}", caller="nats-client", nc_id="nc-1-1")
              for i in range(300)]
    junk = [b"not json", json.dumps(event("warn", now - 60, "v2") | {"v": 2}).encode(),
            json.dumps({"v": 1, "at": rfc3339(now - 60)}).encode(),
            json.dumps(event("warn", now - 60, "y" * (1024 * 1024))).encode()]  # over the 1 MiB line cap
    (h.root / "nats-events.jsonl.2").write_bytes(jsonl(generation2))
    (h.root / "nats-events.jsonl.1").write_bytes(jsonl(generation1))
    active = jsonl(big + recent[:150]) + b"\n".join(junk) + b"\n" + jsonl(recent[150:])
    h.home.events.write_bytes(active)

    ok(h, "daemon", "start")  # logged out: no server, no NATS
    assert (h.root / "nats-events.jsonl.2").read_bytes() == jsonl(generation1)
    assert (h.root / "nats-events.jsonl.1").read_bytes() == active
    assert not (h.root / "nats-events.jsonl.3").exists()
    [start] = h.events()
    assert start["type"] == "daemon_start"

    # .2, then .1, then the active file, each in file order (generation 1 is newer than .1's events)
    scanned = diag_json(h, "--since=1h")
    assert scanned["nats_events"] == generation1 + recent + [start]
    assert (scanned["patterns"], scanned["on_disk_count"], scanned["summary"]) == ([], 1, {})
    # --since=1m: only the start itself
    assert diag_json(h, "--since=1m")["nats_events"] == [start]

    # without --since: the ring, reseeded from the old active file before it rotated
    ring = diag_json(h)
    assert ring["nats_events"] == recent[-255:] + [start]
    # drops are counted over the ring: its 255 disconnects are real drops (no swap names their connection)
    assert ring["nats_drops_last_hour"] == 255

    lines = ok(h, "diagnostics").stdout.splitlines()
    assert lines[:5] == ["nats: unknown  (—)  drops_last_hour=255", "refresh: —", "url: —", "",
                         "Recent events (20 shown, scope=ring, 0 older on disk):"]
    assert lines[5:] == [event_line(e) for e in ring["nats_events"][-20:]] + [""] + FOOTER
    lines = ok(h, "diagnostics", "--since=1h").stdout.splitlines()
    assert lines[4] == "Recent events (304 shown, scope=--since=1h, 0 older on disk):"
    assert lines[5:-3] == [event_line(e) for e in scanned["nats_events"]]


def test_diag_logged_out_without_nats(ppz_home: DaemonHome) -> None:
    h = ppz_home
    ok(h, "daemon", "start")
    for params in ({}, {"since_unix": int(time.time()) - 3600}):
        reply = h.call("Diag", params)
        assert reply["patterns"] == [] and reply["summary"] == {} and "nats_state" not in reply
        assert [e["type"] for e in reply["nats_events"]] == ["daemon_start"]
        assert (reply["nats_drops_last_hour"], reply["on_disk_count"]) == (0, 1)
    [start] = h.events()
    assert ok(h, "diagnostics").stdout.splitlines() == [
        "nats: unknown  (—)  drops_last_hour=0", "refresh: —", "url: —", "",
        "Recent events (1 shown, scope=ring, 0 older on disk):", event_line(start), "", *FOOTER]
    # an instant after every event: no events at all
    future = h.call("Diag", {"since_unix": int(time.time()) + 60})
    assert (future["nats_events"], future["patterns"]) == ([], [])


def test_bundle_collects_the_logs_but_no_secrets(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                                 tmp_path: Path) -> None:
    h = ppz_home
    h.root.mkdir(mode=0o700)
    now = time.time()
    older = [event("warn", now - 120, "older")]
    old = [event("warn", now - 60, "old")]
    (h.root / "nats-events.jsonl.2").write_bytes(jsonl(older))
    (h.root / "nats-events.jsonl.1").write_bytes(jsonl(old))
    key = login(ppz_server, h)
    ok(h, "source", "create", "alice")
    ok(h, "send", "alice", "hello")
    ok(h, "read", "inbox")
    creds = h.home.credentials.read_bytes()
    assert h.home.current_json.exists() and any((h.root / "cursors").iterdir())

    user_home = tmp_path / "user"
    user_home.mkdir()
    out = ok(h, "diagnostics", "--bundle", "--since=1h", env={"HOME": str(user_home)})
    [path] = out.stdout.splitlines()
    assert out.stdout == path + "\n" and os.path.isabs(path)
    assert re.fullmatch(re.escape(str(user_home)) + r"/ppz-diag-\d{8}-\d{6}\.tgz", path), path
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        names = tar.getnames()
    assert names == BUNDLE_MEMBERS
    assert members["MANIFEST"].decode().splitlines() == [f"+ {name}" for name in BUNDLE_MEMBERS]
    for name in ("nats-events.jsonl.1", "nats-events.jsonl.2", "diagnostics-lifecycle.jsonl", "daemon.pid"):
        assert members[name] == (h.root / name).read_bytes(), name
    assert members["nats-events.jsonl"] == h.home.events.read_bytes()[:len(members["nats-events.jsonl"])]
    version = h.status()["daemon_version"]
    assert members["version.txt"].decode() == f"cli: {version}\ndaemon: {version}\n"
    assert [line.split(":")[0] for line in members["platform.txt"].decode().splitlines()] == [
        "python", "os", "arch", "platform"]
    assert members["uname.txt"].decode().startswith(os.uname().sysname)
    # diagnostics.json is the Diag reply with --since applied: it reaches back into .2 and .1
    bundled = json.loads(members["diagnostics.json"])
    assert bundled["nats_events"][:2] == older + old
    assert bundled["summary"]["state"] == "connected"
    # no credential in any form
    secrets = [key, json.loads(creds)["nats_user_seed"], json.loads(creds)["nats_user_jwt"]]
    assert not [(name, s[:12]) for name, data in members.items() for s in secrets if s.encode() in data]

    # no home directory: the current directory; no uname: listed as missing
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = bundle(h, cwd, {"HOME": "", "PATH": str(tmp_path / "nowhere")})
    assert out.returncode == 0 and re.fullmatch(re.escape(str(cwd)) + r"/ppz-diag-\S+\.tgz\n", out.stdout)
    with tarfile.open(out.stdout.strip()) as tar:
        assert "uname.txt" not in tar.getnames()
        manifest = tar.extractfile("MANIFEST").read().decode().splitlines()  # type: ignore[union-attr]
    assert [line for line in manifest if "uname" in line][0].startswith("- uname.txt (")

    # a write failure: exit 1 and no archive left behind, also when it fails half-way
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out = h.ppz("diagnostics", "--bundle", env={"HOME": str(not_a_dir)})
    assert (out.returncode, out.stdout) == (1, "")
    assert re.fullmatch(rf"error: diagnostics bundle: cannot write {re.escape(str(not_a_dir))}/ppz-diag-\S+\.tgz: "
                        r"Not a directory\n", out.stderr), out.stderr
    (h.root / "nats-events.jsonl.2").write_bytes(jsonl([event("warn", now, os.urandom(32768).hex())]))
    small = tmp_path / "small"
    small.mkdir()
    out = bundle(h, cwd, {"HOME": str(small)}, max_file_size=16384)
    assert (out.returncode, out.stdout) == (1, ""), out.stderr
    assert re.fullmatch(r"error: diagnostics bundle: cannot write \S+: File too large\n", out.stderr), out.stderr
    assert list(small.iterdir()) == []


# --- drops, state_since, reseed -----------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_nats_restart_is_a_drop_and_restarts_state_since(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    h = ppz_home
    login(ppz_server, h)
    rewrite_api_key(h, ppz_server.add_key("acme"))  # a swap closes the old connection: not a drop
    reply = h.call("Diag", {})
    assert [e["caller"] for e in reply["nats_events"] if e["type"] == "disconnect"] == ["nats-client"]
    assert reply["nats_drops_last_hour"] == 0
    before = len(reply["nats_events"])

    ppz_server.kill_nats()  # the server restarts it; the client reconnects by itself
    samples: list[dict[str, Any]] = []

    def reconnected() -> bool:
        samples.append(h.call("Diag", {}))
        return any(e["type"] == "reconnect" for e in samples[-1]["nats_events"][before:])

    wait_for(reconnected, timeout=20, what="the client to reconnect")
    # while the client reconnects by itself the state has no "since"; disconnected → the disconnect
    assert any(sample.get("nats_state") == "connecting" for sample in samples)
    for sample in samples:
        state, since = sample.get("nats_state"), sample["summary"].get("state_since")
        if state == "connecting":
            assert since is None, sample
        elif state == "disconnected":
            assert since == [e for e in sample["nats_events"] if e["type"] in ("disconnect", "closed")][-1]["at"]
    status = h.wait_connected()
    reply = h.call("Diag", {})
    new = reply["nats_events"][before:]
    drops = [e for e in new if e["type"] == "disconnect"]
    assert drops and all(e["caller"] == "nats-client" for e in drops), new
    assert reply["nats_drops_last_hour"] == len(drops)
    [reconnect] = [e for e in new if e["type"] == "reconnect"]
    assert reconnect["caller"] == "nats-client" and reconnect["reason"] == ppz_server.nats_url
    assert reply["summary"]["state_since"] == status["nats_state_since"] == reconnect["at"]
    assert (reply["nats_state"], status["nats_state_entry"]) == ("connected", "reconnect")
    lines = ok(h, "diagnostics").stdout.splitlines()
    assert re.fullmatch(rf"nats: connected  \(since {clock(reconnect['at'])}, \d+s ago\)  "
                        rf"drops_last_hour={len(drops)}", lines[0]), lines[0]
    # refresh: the last exchange, and the next one due 30 s before the 5-minute credential expires
    summary = reply["summary"]
    assert 265 <= epoch(summary["refresh_next_due_at"]) - epoch(summary["refresh_last_at"]) <= 271, summary
    assert re.fullmatch(rf"refresh: last {clock(summary['refresh_last_at'])} \(\d+s ago\), next due in 4m\d+s",
                        lines[1]), lines[1]
    assert lines[2] == f"url: {ppz_server.nats_url}" == "url: " + summary["url"]


@pytest.mark.timeout(90)
def test_rotations_are_not_drops_and_keep_the_connected_since(server_factory: Any, ppz_home: DaemonHome) -> None:
    server = server_factory(PPZ_NATS_JWT_TTL="6s")  # an in-place rotation about every 3 s
    h = ppz_home
    login(server, h)
    connect = [e for e in h.events() if e["type"] == "connect"][-1]
    wait_for(lambda: [e for e in h.events() if e["type"] == "reconnect" and e.get("caller") == "rotate"],
             timeout=20, what="an in-place rotation")
    reply = h.call("Diag", {})
    kinds = [(e["type"], e.get("caller")) for e in reply["nats_events"]]
    assert ("rotate", "OnRefreshed-callback") in kinds and ("disconnect", "rotate") in kinds, kinds
    assert reply["nats_drops_last_hour"] == 0
    assert reply["summary"]["state_since"] == connect["at"]
    status = h.status()
    assert (status["nats_state_since"], status["nats_state_entry"]) == (connect["at"], "connect")


@pytest.mark.timeout(60)
def test_an_expired_credential_is_reported_as_post_rotation_auth_violation(server_factory: Any,
                                                                           ppz_home: DaemonHome) -> None:
    server = server_factory(PPZ_NATS_JWT_TTL="2s")
    proxy = RecordingProxy(server.url).start()
    try:
        h = ppz_home
        login(server, h, proxy=proxy)
        proxy.drop = True  # the control plane is unreachable: no refresh, the credential expires
        wait_for(lambda: any(e["type"] == "closed" for e in h.events()), what="the server to expire the connection")
    finally:
        proxy.stop()
    reply = h.call("Diag", {})
    [disconnect] = [e for e in reply["nats_events"] if e["type"] == "disconnect"]
    assert abs(epoch(disconnect["at"]) - disconnect["jwt_exp"]) <= 1.5, disconnect  # kicked at expiry
    assert [(p["name"], p["at"]) for p in reply["patterns"]] == [("post-rotation-auth-violation", disconnect["at"])]


def test_restart_reseeds_the_ring_with_earlier_events_once(ppz_server: ServerProcess, ppz_home: DaemonHome) -> None:
    h = ppz_home
    h.root.mkdir(mode=0o700)
    # 40 lifecycle lines of an earlier life: all reseeded, but the log keeps its newest 32
    past = time.time() - 86400
    lifecycle = [event("daemon_start" if i % 2 == 0 else "daemon_stop", past + i, f"old-{i}") for i in range(40)]
    h.home.lifecycle.write_bytes(jsonl(lifecycle))
    login(ppz_server, h)
    first = h.call("Diag", {})["nats_events"]
    assert first[:40] == lifecycle and first[40]["type"] == "daemon_start"
    assert [json.loads(line) for line in h.home.lifecycle.read_text().splitlines()] == lifecycle[-31:] + [first[40]]

    out = ok(h, "daemon", "restart")
    assert re.fullmatch(r"daemon stopped pid=\d+\ndaemon started pid=\d+\n", out.stdout), out.stdout
    h.wait_connected()
    ring = h.call("Diag", {})["nats_events"]
    on_disk = h.events()
    assert [json.loads(line)["v"] for line in h.home.events.read_text().splitlines()] == [1] * len(on_disk)
    # the lifecycle lines still kept, then the whole event file (first life, stop, second life): once each
    assert ring == lifecycle[-30:] + on_disk[:len(ring) - 30]
    assert [e["type"] for e in on_disk].count("daemon_start") == 2
    assert [e["type"] for e in on_disk].count("daemon_stop") == 1
    assert [e["type"] for e in ring[30:]].count("daemon_start") == 2
    lifecycle_now = [json.loads(line) for line in h.home.lifecycle.read_text().splitlines()]
    assert len(lifecycle_now) == 32
    assert lifecycle_now[-3:] == [e for e in on_disk if e["type"] in ("daemon_start", "daemon_stop")]
