"""The Fire glue (``ppz.commands.fireglue``): flag normalisation, the direct binder agreeing with
Fire's binding, what is left to Fire, and Fire loaded without asyncio."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import Any

import pytest

from commands.fakedaemon import (
    LIST_REPLY,
    PIPE_REPLY,
    SEND_REPLY,
    FakeDaemon,
    Stream,
    msg,
    ppz,
)
from ppz import cli
from ppz.commands import fireglue


def test_deferred_asyncio_still_imports_for_real() -> None:
    code = ("import sys\nfrom ppz.commands import fireglue\nfireglue.import_fire()\n"
            "assert 'asyncio' not in sys.modules\n"
            "import asyncio\nprint(asyncio.get_event_loop_policy().__class__.__name__)\n"
            "import fire.inspectutils\nprint(fire.inspectutils.asyncio.iscoroutinefunction(print))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == "False"


@pytest.mark.parametrize(("argv", "want"), [
    (["read", "--tail", "bob.x"], ["read", "--tail=True", "bob.x"]),
    (["read", "bob.x", "-l", "5"], ["read", "bob.x", "--limit=5"]),
    (["ls", "-l", "x"], ["ls", "--long=True", "x"]),
    (["send", "b", "p", "--subject", "--json"], ["send", "b", "p", "--subject=--json"]),
    (["pipe", "create", "x", "--max-msgs", "-1"], ["pipe", "create", "x", "--max_msgs=-1"]),
    (["read", "x", "--notail"], ["read", "x", "--tail=False"]),
    (["send", "b", "--payload=-x"], ["send", "b", "--payload=-x"]),
    (["send", "b", "-5"], ["send", "b", "-5"]),
    (["nosuch", "--x"], ["nosuch", "--x"]),
    (["send", "--help"], ["send", "--help"]),
    (["read", "x", "--wait"], ["read", "x", "--wait="]),
    (["read", "--wait", "x"], ["read", "--wait=", "x"]),  # an optional value never takes the next word
    (["read", "x", "--wait=5m"], ["read", "x", "--wait=5m"]),
    (["read", "x", "--from", "a,b", "--from=c", "-f", "d"], ["read", "x", "--from_=a,b,c,d"]),
    (["reread", "x", "--no-acks", "--subject", "-x"], ["reread", "x", "--no_acks=True", "--subject=-x"]),
])
def test_normalise_flags(argv: list[str], want: list[str]) -> None:
    assert fireglue.normalise_flags(cli.Ppz(), argv) == want


@pytest.fixture
def no_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of Fire fails the test (``fire`` may be in ``sys.modules`` from other tests)."""
    def refuse() -> None:
        raise AssertionError("Fire was imported for a complete command")

    monkeypatch.setattr(fireglue, "import_fire", refuse)


@pytest.mark.usefixtures("no_fire")
def test_send_values_as_typed_through_the_direct_path(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Send", SEND_REPLY)
    r = ppz(capsys, "send", "bob", "007")
    assert (r.code, r.out, r.err) == (0, "", "sent id=a6b7c8d9 to=bob.inbox bytes=3\n")
    assert fake.params("Send")[0]["payload"] == "007"
    assert ppz(capsys, "send", "--priority", "1", "bob.notes", "[1, 2]", "--in-reply-to", "0x1F").code == 0
    sent = fake.params("Send")[1]
    assert (sent["handle"], sent["channel"], sent["payload"], sent["priority"], sent["in_reply_to"]) == (
        "bob", "notes", "[1, 2]", 1, "0x1F")
    assert ppz(capsys, "send", "--payload=-1e3", "--target=bob").code == 0  # positionals by name
    assert (fake.params("Send")[2]["handle"], fake.params("Send")[2]["payload"]) == ("bob", "-1e3")


@pytest.mark.usefixtures("no_fire")
def test_other_commands_through_the_direct_path(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("List", LIST_REPLY)
    fake.on("Read", Stream({"msg": msg("1.0")}))
    fake.on("PipeCreate", PIPE_REPLY)
    assert ppz(capsys, "ls", "007", "a*", "-l").code == 0
    assert ppz(capsys, "read", "bob.notes", "--raw", "--limit", "05").out == "1.0"
    assert ppz(capsys, "pipe", "create", "bob.notes", "--max-msgs=010").code == 0
    assert fake.requests == [
        ("List", {"session": "s1", "patterns": ["007", "a*"], "long": True}),
        ("Read", {"handle": "bob", "channel": "notes", "follow": False, "head_limit": 5, "sender": "",
                  "session": "s1"}),
        ("PipeCreate", {"handle": "bob", "name": "notes", "max_msgs": 10, "session": "s1"})]


def fire_action(argv: list[str]) -> Any:
    """What the Fire path makes of a normalised argv (an Action, or None)."""
    fire = fireglue.import_fire()
    fireglue.adapt_fire(False)
    try:
        return fire.Fire(cli.Ppz(), command=[*argv, "--", "--separator=\x00"], name="ppz")
    except fire.core.FireExit:
        return None


@pytest.mark.parametrize("argv", [
    ["send", "bob", "007"], ["send", "--request-ack", "bob.notes", "[1, 2]", "--subject", "-x", "--priority", "1"],
    ["send", "--payload=p", "b"], ["send", "--target=t", "--payload=p"], ["send", "b", "p", "--subject=a",
                                                                          "--subject=b"],
    ["send", "b", "-5"], ["send", "b", "-"], ["send", "b", ""], ["login", "http://x", "KEY"], ["login", "u"],
    ["ls"], ["ls", "a", "b", "--json", "-l"], ["read", "inbox", "--notail", "-l", "0"],
    ["reread", "x", "--since", "1m", "--skip=2"], ["who", "--online", "--owner", "True"],
    ["diagnostics", "--bundle=false"], ["heartbeat", "x", "--once", "--state", "idle", "--interval=1s"],
    ["daemon", "start", "--foreground=false"], ["daemon", "stop"], ["source", "destroy", "x*"],
    ["set", "namespace", "a.b"], ["unset", "handle"], ["get", "handle"], ["pipe", "create", "x", "--ttl", "1h",
                                                                       "--max-bytes", "-1"],
    ["pipe", "destroy", "x", "--recursive"], ["completion", "zsh"],
    ["read", "inbox", "--wait"], ["read", "--wait=5m", "inbox", "--from", "a", "--from=b,c", "--no-acks"],
    ["reread", "x", "--subject", "deploy*", "-f", "bob"],
])
def test_direct_binding_is_fires_binding(argv: list[str]) -> None:
    argv = fireglue.normalise_flags(cli.Ppz(), argv)
    direct = fireglue.bind_command(cli.Ppz(), argv)
    assert isinstance(direct, fireglue.Action)
    fired = fire_action(argv)
    assert isinstance(fired, fireglue.Action)
    assert (direct.command, direct.args) == (fired.command, fired.args)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["send", "--help"], ["send", "b", "p", "-h"], ["send"], ["send", "b"], ["send", "b", "p", "x"],
    ["send", "b", "--payload", "p"], ["send", "b", "-payload=p"], ["daemon"], ["pipe"], ["nosuch"],
    ["status", "x"], ["send", "--payload=p", "b", "x"],
])
def test_what_does_not_bind_is_left_to_fire(argv: list[str]) -> None:
    assert fireglue.bind_command(cli.Ppz(), fireglue.normalise_flags(cli.Ppz(), argv)) is None


def command_methods() -> list[Any]:
    ppz = cli.Ppz()
    methods = []
    for group in (ppz, ppz.daemon, ppz.source, ppz.set, ppz.unset, ppz.get, ppz.pipe):
        methods += [getattr(group, name) for name in dir(group)
                    if not name.startswith("_") and isinstance(getattr(group, name), types.MethodType)]
    return methods


def test_params_agree_with_inspect_signature() -> None:
    import inspect

    methods = command_methods()
    assert len(methods) >= 25
    for fn in methods:
        params = fireglue.Params(fn)
        sig = inspect.signature(fn).parameters.values()
        assert params.positional == tuple(p.name for p in sig if p.kind is p.POSITIONAL_OR_KEYWORD), fn
        assert params.names == tuple(p.name for p in sig if p.kind is not p.VAR_POSITIONAL), fn
        assert params.defaults == {p.name: p.default for p in sig if p.default is not p.empty}, fn
        assert params.varargs == any(p.kind is p.VAR_POSITIONAL for p in sig), fn


def test_the_fire_internals_the_glue_relies_on_are_there() -> None:
    """What ``adapt_fire`` replaces or wraps, as Fire itself has it (a fresh interpreter: the
    glue's wrappers are not Fire's). A Fire upgrade that renames or reshapes one fails here."""
    code = ("import importlib, inspect, json\n"
            "from ppz.commands import fireglue\n"
            "fireglue.import_fire()\n"
            "found = {f'{m}.{n}': callable(getattr(importlib.import_module(m), n, None))\n"
            "         for m, n in fireglue.FIRE_INTERNALS}\n"
            "import fire.helptext\n"
            "sig = {n: list(inspect.signature(getattr(fire.helptext, n)).parameters)\n"
            "       for n in ('_GetArgType', '_GetArgDefault', '_CreateFlagItem')}\n"
            "print(json.dumps([found, sig]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    found, sig = json.loads(out.stdout)
    assert found == {f"{m}.{n}": True for m, n in fireglue.FIRE_INTERNALS}
    assert sig == {"_GetArgType": ["arg", "spec"], "_GetArgDefault": ["flag", "spec"],
                   "_CreateFlagItem": ["flag", "docstring_info", "spec", "required", "flag_string", "short_arg"]}


def test_adapting_fire_twice_does_not_stack_wrappers() -> None:
    fire = fireglue.import_fire()
    fireglue.adapt_fire(True)
    once = fire.helptext._CreateFlagItem
    fireglue.adapt_fire(True)
    assert fire.helptext._CreateFlagItem.__wrapped__ is once.__wrapped__
    assert not hasattr(once.__wrapped__, "__wrapped__")
