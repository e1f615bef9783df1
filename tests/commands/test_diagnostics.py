"""``ppz diagnostics`` and its ``--bundle`` (spec/cli.md §2.5) against a fake daemon."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    ppz,
    read_bundle,
)

DIAG = {"summary": {}, "patterns": [], "nats_drops_last_hour": 0, "nats_events": [], "on_disk_count": 0}


def test_diagnostics(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Diag", DIAG)
    r = ppz(capsys, "diagnostics")
    assert r.code == 0 and r.out.startswith("nats: unknown  (—)  drops_last_hour=0\n")
    assert fake.params("Diag") == [{}]
    before = int(time.time())
    r = ppz(capsys, "diagnostics", "--json", "--since", "1h")
    assert r.out == json.dumps(DIAG, indent=2) + "\n"
    since = fake.params("Diag")[1]["since_unix"]
    assert before - 3600 - 1 <= since <= int(time.time()) - 3600
    assert ppz(capsys, "diagnostics", "--since=1h").out.count("scope=") == 0  # no events: "(none)"
    assert ppz(capsys, "diagnostics", "--since=later").code == 2


def test_diagnostics_without_daemon_is_11(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.stop()
    r = ppz(capsys, "diagnostics")
    assert (r.code, r.out) == (11, "")


def test_diagnostics_bundle(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    home = os.environ["PPZ_HOME"]
    os.makedirs(home)
    for name, data in (("nats-events.jsonl", "{}\n"), ("nats-events.jsonl.1", "{}\n"), ("daemon.pid", "42\n"),
                       ("credentials", "SECRET"), ("current.json", "{}")):
        with open(os.path.join(home, name), "w") as f:
            f.write(data)
    fake.on("Diag", DIAG)
    fake.on("Status", {"daemon_pid": 42, "daemon_version": "0.3.0", "logged_in": False})
    r = ppz(capsys, "diagnostics", "--bundle", "--since", "10m")
    assert r.code == 0 and r.err == ""
    path = r.out.strip()
    assert os.path.isabs(path) and os.path.dirname(path) == os.environ["HOME"]
    assert os.path.basename(path).startswith("ppz-diag-") and path.endswith(".tgz")
    files = read_bundle(path)
    assert set(files) == {"nats-events.jsonl", "nats-events.jsonl.1", "daemon.pid", "diagnostics.json",
                          "version.txt", "uname.txt", "platform.txt", "MANIFEST"}
    assert json.loads(files["diagnostics.json"]) == DIAG
    assert "since_unix" in fake.params("Diag")[0]
    assert files["version.txt"] == b"cli: 0.3.0\ndaemon: 0.3.0\n"
    manifest = files["MANIFEST"].decode().splitlines()
    assert "+ nats-events.jsonl" in manifest and "- nats-events.jsonl.2 (not found)" in manifest
    assert "- diagnostics-lifecycle.jsonl (not found)" in manifest and "+ diagnostics.json" in manifest
    assert not any("credentials" in line or "current" in line for line in manifest)


def test_diagnostics_bundle_without_daemon(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    fake.stop()
    monkeypatch.setenv("HOME", "")
    monkeypatch.chdir(tmp_path)
    r = ppz(capsys, "diagnostics", "--bundle")
    assert r.code == 0
    assert os.path.dirname(r.out.strip()) == str(tmp_path)
    files = read_bundle(r.out.strip())
    assert "diagnostics.json" not in files
    assert "- diagnostics.json (daemon not running)" in files["MANIFEST"].decode().splitlines()


def test_diagnostics_bundle_write_failure(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    fake.on("Diag", DIAG)
    fake.on("Status", {"daemon_pid": 1, "logged_in": False})
    monkeypatch.setenv("HOME", str(tmp_path / "missing"))
    r = ppz(capsys, "diagnostics", "--bundle")
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("error: diagnostics bundle: cannot write ")
