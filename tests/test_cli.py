"""The CLI as a whole (spec/cli.md §1): what a command imports, usage errors and help pages.
Each command group is tested in ``tests/commands/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from typing import Any

import pytest

from ppz import cli

HEAVY = ("pykka", "nats", "requests", "orjson", "ppz.bootstrap", "ppz.server", "ppz.mcp", "mcp", "mcp_types",
         "pydantic", "anyio")

MESSAGING = [["send", "bob", "hi"], ["read", "bob.inbox"], ["reread", "inbox"], ["ls", "--json"], ["who"],
             ["diagnostics"], ["source", "create", "x"], ["source", "destroy", "x*"], ["set", "handle", "x"],
             ["get", "handle"], ["unset", "namespace"], ["pipe", "create", "x.y", "--ttl=1h"],
             ["heartbeat", "x", "--once"], ["completion", "bash"], ["__complete", "x"], ["send", "--help"]]


def modules_after(commands: list[list[str]], tmp_path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Run the commands in one fresh interpreter (no daemon); which modules did they import?"""
    code = (
        "import sys\n"
        "from ppz import cli\n"
        f"for argv in {commands!r}:\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import json\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r})\n"
        "print(json.dumps({'heavy': heavy, 'asyncio': 'asyncio' in sys.modules, 'home': 'ppz.home' in sys.modules,\n"
        "                  'fire': 'fire' in sys.modules, 'inspect': 'inspect' in sys.modules,\n"
        "                  'subprocess': 'subprocess' in sys.modules}))\n"
    )
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home"), "PPZ_SESSION": "s"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


DIRECT = [argv for argv in MESSAGING if "--help" not in argv]


def test_normal_commands_import_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Nor Fire: its import and parser cost ~25 ms per run, and a complete command runs without it.
    got = modules_after([["status"], ["logout"], ["daemon", "stop"], *DIRECT], tmp_path)
    assert (got["heavy"], got["fire"], got["subprocess"]) == ([], False, False)


def test_help_uses_fire_and_imports_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    got = modules_after([["send", "--help"], ["send", "bob"], ["pipe", "--help"]], tmp_path)
    assert (got["heavy"], got["fire"]) == ([], True)


def test_messaging_commands_skip_asyncio_and_the_home_module(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Fire imports asyncio (~50 ms with ssl) for coroutine commands the CLI does not have; ppz.home
    # (~20 ms) is only needed by the commands that manage the daemon.
    got = modules_after(MESSAGING, tmp_path)
    assert {k: got[k] for k in ("heavy", "asyncio", "home")} == {"heavy": [], "asyncio": False, "home": False}
    # Without help, not even Fire or inspect (~4 ms with ast and dis).
    assert modules_after(DIRECT, tmp_path) == {"heavy": [], "asyncio": False, "home": False, "fire": False,
                                               "inspect": False, "subprocess": False}


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


def test_help_of_a_subcommand_goes_to_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["pipe", "create", "--help"], tmp_path)
    assert out.returncode == 0 and "--max_msgs" in out.stdout.replace("-msgs", "_msgs")


@pytest.mark.parametrize("args", [["send", "bob"], ["send"], ["send", "bob", "hi", "extra"],
                                  ["send", "bob", "hi", "--bogus"], ["send", "bob", "hi", "--subject"],
                                  ["status", "extra"], ["daemon"], ["nosuch"], ["pipe", "set"]])
def test_usage_errors_exit_2_with_nothing_on_stdout(tmp_path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    out = run(args, tmp_path)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr


def test_fire_still_reports_what_does_not_bind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run(["send", "bob"], tmp_path)
    assert out.stderr.startswith("ERROR: The function received no value for the required argument: payload\n"
                                 "Usage: ppz send TARGET PAYLOAD <flags>\n")
    assert run(["send", "bob", "hi", "extra"], tmp_path).stderr.startswith("ERROR: Could not consume arg: extra\n")


def test_help_of_send_goes_to_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for args in (["send", "--help"], ["send", "-h"]):
        out = run(args, tmp_path)
        assert out.returncode == 0, args
        assert "ppz send TARGET PAYLOAD" in out.stdout and "--subject" in out.stdout


@pytest.mark.parametrize("argv", [["send", "bob", "--help"], ["send", "bob", "hi", "-h"],
                                  ["heartbeat", "x", "--once", "--help"]])
def test_help_after_arguments_is_help_on_stdout_exit_0(argv: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PPZ_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "ppz.cli", *argv], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"ppz {argv[0]}" in out.stdout


# --- help pages: a description for every command and flag, types in words, no noise -----------


def command_paths() -> list[list[str]]:
    """Every command and group, as the words that name it."""
    ppz = cli.Ppz()
    paths: list[list[str]] = [[]]
    for name in sorted(n for n in dir(ppz) if not n.startswith("_")):
        attr = getattr(ppz, name)
        paths.append([name])
        if not isinstance(attr, types.MethodType):
            paths += [[name, sub] for sub in sorted(dir(attr)) if not sub.startswith("_")]
    return paths


def help_page(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    out, err = capsys.readouterr()
    assert (exit_.value.code, err) == (0, ""), args
    return out


def help_items(page: str) -> dict[str, list[str]]:
    """The POSITIONAL ARGUMENTS and FLAGS items of a help page: item line → description lines."""
    items: dict[str, list[str]] = {}
    section, item = "", ""
    for line in page.splitlines():
        if line and not line.startswith(" "):
            section = line
        elif section in ("POSITIONAL ARGUMENTS", "FLAGS") and line.startswith("        "):
            items[item].append(line.strip())
        elif section in ("POSITIONAL ARGUMENTS", "FLAGS") and line.strip():
            item = line.strip()
            items[item] = []
    return items


@pytest.mark.parametrize("words", command_paths(), ids=lambda words: " ".join(words) or "ppz")
def test_every_help_page_describes_every_flag_in_words(capsys: pytest.CaptureFixture[str],
                                                       words: list[str]) -> None:
    from ppz.commands.fireglue import HELP_TYPES

    page = help_page(capsys, *words, "--help")
    assert page.startswith(f"NAME\n    {' '.join(['ppz', *words])} - "), page
    name_line = page.splitlines()[1]
    assert len(name_line.split(" - ", 1)[1]) > 10, name_line  # a one-line description
    assert "INFO" not in page and "Optional[" not in page and "Default: None" not in page
    for item, description in help_items(page).items():
        types_ = [line.removeprefix("Type: ") for line in description if line.startswith("Type: ")]
        assert all(t in HELP_TYPES.values() for t in types_), (item, types_)
        assert [line for line in description if not line.startswith("Type: ")], f"{words}: {item} has no description"
    for line in page.splitlines():
        if line.startswith("     ") and not line.startswith("      ") and line.strip():  # a listed command
            sub = line.strip()
            assert help_page(capsys, *words, sub, "--help").startswith(f"NAME\n    {' '.join(['ppz', *words, sub])} - ")


def test_read_help_reads_like_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    items = help_items(help_page(capsys, "read", "--help"))
    assert list(items) == ["TARGET", "--tail", "-l, --limit=LIMIT", "--wait[=WAIT]", "-f, --from=FROM",
                           "-s, --subject=SUBJECT", "-n, --no-acks", "-j, --json", "-r, --raw", "-b, --bare"]
    # agents.md §2: --help documents --wait and the three filters.
    assert items["--wait[=WAIT]"] == [
        "Type: optional duration (e.g. 5m)",
        "If nothing is unread, wait up to this long for a message (alone: no limit); exit 124 if none came."]
    assert items["-f, --from=FROM"][0] == "Type: handles, comma-separated"
    assert "glob" in items["-s, --subject=SUBJECT"][1] and "ack:" in items["-n, --no-acks"][0]
    reread = help_items(help_page(capsys, "reread", "--help"))
    assert {"-f, --from=FROM", "--subject=SUBJECT", "-n, --no-acks"} <= set(reread)
    assert items["-l, --limit=LIMIT"] == ["Type: integer",
                                          "Read at most this many messages (default 10, 0 = all); not with --tail."]
    assert items["--tail"] == ["After the unread messages, keep streaming new ones until Ctrl-C."]
    pipe = help_items(help_page(capsys, "pipe", "create", "--help"))
    assert pipe["--max-msgs=MAX_MSGS"] == ["Type: integer", "Keep at most this many messages (-1 = unlimited)."]
    assert pipe["-t, --ttl=TTL"][0] == "Type: duration (e.g. 90s, 5m, 1h30m)"


@pytest.mark.parametrize("words", [w for w in command_paths() if w], ids=" ".join)
def test_every_short_flag_the_help_offers_works(capsys: pytest.CaptureFixture[str], words: list[str]) -> None:
    from ppz.commands.fireglue import normalise_flags

    for item in help_items(help_page(capsys, *words, "--help")):
        if item.startswith("-") and not item.startswith("--"):
            short, long = item.split(", ")
            name = long.removeprefix("--").split("=")[0].replace("-", "_")
            got = normalise_flags(cli.Ppz(), [*words, short, "v"])[len(words)]
            assert got.split("=")[0].rstrip("_") == f"--{name}", item  # from_ is the flag --from


def test_help_as_a_process_is_on_stdout_with_no_info_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for args in (["--help"], ["read", "-h"], ["daemon", "--help"], ["send", "bob", "--help"]):
        out = run(args, tmp_path)
        assert (out.returncode, out.stderr) == (0, ""), args
        assert out.stdout.startswith("NAME\n"), args
