"""The thin CLI: imports, URL normalisation, session ids, usage errors (spec/cli.md §1–2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ppz import cli

HEAVY = ("pykka", "nats", "requests", "orjson", "ppz.bootstrap", "ppz.server")


def test_normal_commands_import_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys\n"
        "from ppz import cli\n"
        "for argv in (['status'], ['logout'], ['daemon', 'stop']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import json\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r})))\n"
    )
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("localhost:8080/", "http://localhost:8080"),
        ("myhost:8080", "http://myhost:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("0.0.0.0", "http://0.0.0.0"),
        ("ppz.example.com", "https://ppz.example.com"),
        ("http://ppz.example.com/", "http://ppz.example.com"),
        ("https://127.0.0.1:8080", "https://127.0.0.1:8080"),
    ],
)
def test_normalise_url(given: str, want: str) -> None:
    assert cli.normalise_url(given) == want


def test_session_id_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPZ_SESSION", "agent-7")
    assert cli.session_id() == "agent-7"
    monkeypatch.delenv("PPZ_SESSION")
    assert cli.session_id() == f"sid-{os.getsid(0)}"


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "ppz.cli", *args], env=env, capture_output=True,
                          text=True, timeout=30)


def test_unknown_flag_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["status", "--bogus"], tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""


def test_help_exits_zero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["--help"], tmp_path)
    assert out.returncode == 0
    assert "login" in out.stdout


def test_missing_daemon_is_exit_11_with_no_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["daemon", "stop"], tmp_path)
    assert (out.returncode, out.stdout) == (0, "daemon not running\n")
