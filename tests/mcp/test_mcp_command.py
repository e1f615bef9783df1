"""``ppz mcp`` as a command (spec/agents.md §3, §3.4): flags, the session rule, ``ppz mcp install``
and a CLI that does not import the MCP server unless ``ppz mcp`` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemonfixture import DaemonHome
from mcpfixture import RawMcp
from test_cli import modules_after

from ppz.commands.mcp import install_text
from ppz.mcp.identity import session_for

CLI = [sys.executable, "-m", "ppz.cli"]


def ppz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_session_is_flag_then_env_then_handle_then_mcp() -> None:
    assert session_for("s1", "env", "alice") == "s1"
    assert session_for("", "env", "alice") == "env"
    assert session_for("", "", "alice") == "mcp-alice"
    assert session_for("", "", "") == "mcp"


def test_install_prints_the_claude_command_and_the_codex_block(tmp_path: Path) -> None:
    out = ppz("mcp", "install", "--claude", "--as=alice")
    assert out.returncode == 0 and out.stderr == ""
    script = os.path.join(os.path.dirname(sys.executable), "ppz")  # the venv's, as python -m ppz.cli runs
    assert out.stdout == f"claude mcp add --scope user --transport stdio ppz -- {script} mcp --as=alice\n"
    assert install_text("codex", "bob", "/opt/ppz/bin/ppz", {"PPZ_HOME": "/h"}) == (
        '[mcp_servers.ppz]\ncommand = "/opt/ppz/bin/ppz"\nargs = ["mcp", "--as=bob"]\nenv = { PPZ_HOME = "/h" }')
    assert install_text("claude", "", "/p/ppz", {}) == "claude mcp add --scope user --transport stdio ppz -- /p/ppz mcp"
    codex = ppz("mcp", "install", "--codex", env={"PPZ_HOME": str(tmp_path)})
    assert codex.returncode == 0
    assert codex.stdout.splitlines()[0] == "[mcp_servers.ppz]" and f'PPZ_HOME = "{tmp_path}"' in codex.stdout


@pytest.mark.parametrize("args", [["mcp", "install"], ["mcp", "install", "--claude", "--codex"],
                                  ["mcp", "--bogus"], ["mcp", "--as"], ["mcp", "serve"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    out = ppz(*args)
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    assert out.stderr.startswith("ppz mcp")


def test_help_is_a_page_of_the_cli() -> None:
    out = ppz("mcp", "--help")
    assert out.returncode == 0 and out.stdout.startswith("NAME\n    ppz mcp - ")
    for flag in ("--as=HANDLE", "--session", "--watch", "--channel", "install --claude|--codex"):
        assert flag in out.stdout


def test_the_cli_imports_the_mcp_server_only_for_ppz_mcp(tmp_path: Path) -> None:
    got = modules_after([["--help"], ["send", "bob", "hi"], ["mcp", "--help"], ["mcp", "install", "--claude"]],
                        tmp_path)
    assert got["heavy"] == []


def test_without_a_daemon_the_server_starts_and_tools_say_so(tmp_path: Path) -> None:
    """No daemon and no credential: the server still starts and answers, tool calls fail with
    E_DAEMON_NOT_RUNNING (the --as step's error), no daemon is started, stdout is only JSON-RPC."""
    raw = RawMcp(DaemonHome(tmp_path / "home"), "--as=alice")
    try:
        assert "alice" in raw.initialize()["instructions"]
        for _ in range(2):
            result = raw.request("tools/call", {"name": "whoami", "arguments": {}})["result"]
            assert result["isError"] is True
            assert result["structuredContent"]["error"]["code"] == "E_DAEMON_NOT_RUNNING"
        error = raw.request("resources/read", {"uri": "ppz://inbox"})["error"]
        assert "E_DAEMON_NOT_RUNNING" in error["message"]
    finally:
        assert raw.close() == 0
    assert not (tmp_path / "home" / "daemon.pid").exists()


def test_stdin_and_stdout_that_are_files_are_served_too(tmp_path: Path) -> None:
    """Not pipes (a file, as in a test harness): the SDK's own stdio streams serve."""
    requests = tmp_path / "in.jsonl"
    requests.write_text('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
                        '"capabilities":{},"clientInfo":{"name":"t","version":"0"}}}\n')
    with requests.open("rb") as stdin, (tmp_path / "out.jsonl").open("wb") as stdout:
        done = subprocess.run([*CLI, "mcp"], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=60,
                              env={**os.environ, "PPZ_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    [reply] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert reply["id"] == 1 and reply["result"]["serverInfo"]["name"] == "ppz"
