"""``ppz completion`` and ``ppz __complete`` (spec/cli.md §2.14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from commands.fakedaemon import (
    FakeDaemon,
    ppz,
)
from ppz import errors


def test_complete(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Complete", {"sources": [{"handle": "bob", "pipes": ["notes", "inbox"]},
                                     {"handle": "alice", "pipes": ["inbox"]}], "stale": False})
    assert ppz(capsys, "__complete", "b").out == "bob\nbob.inbox\nbob.notes\n"
    assert ppz(capsys, "__complete").out == "alice\nalice.inbox\nbob\nbob.inbox\nbob.notes\n"
    assert fake.requests[0] == ("Complete", {})


def test_complete_failures_print_nothing(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("Complete", errors.PpzError(errors.E_INTERNAL), {"sources": [{"pipes": []}]})
    assert (ppz(capsys, "__complete", "b").__dict__) == {"code": 0, "out": "", "err": ""}
    assert (ppz(capsys, "__complete", "b").__dict__) == {"code": 0, "out": "", "err": ""}
    fake.stop()
    assert (ppz(capsys, "__complete", "b").__dict__) == {"code": 0, "out": "", "err": ""}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(capsys: pytest.CaptureFixture[str], shell: str, tmp_path: Any) -> None:
    r = ppz(capsys, "completion", shell)
    assert r.code == 0 and "ppz __complete" in r.out
    for name in ("send", "reread", "diagnostics", "heartbeat", "who"):
        assert name in r.out
    checker = shutil.which(shell)
    if checker:
        script = tmp_path / f"c.{shell}"
        script.write_text(r.out)
        assert subprocess.run([checker, "-n", str(script)]).returncode == 0


def test_completion_bash_completes_targets(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    script = tmp_path / "c.bash"
    script.write_text(ppz(capsys, "completion", "bash").out)
    shim = tmp_path / "ppz"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m ppz.cli \"$@\"\n")
    shim.chmod(0o755)
    fake.on("Complete", {"sources": [{"handle": "bob", "pipes": ["inbox"]}], "stale": False})
    driver = (f"source {script}\nCOMP_WORDS=(ppz read b); COMP_CWORD=2; _ppz; echo \"${{COMPREPLY[*]}}\"\n"
              "COMP_WORDS=(ppz pip); COMP_CWORD=1; _ppz; echo \"${COMPREPLY[*]}\"\n"
              "COMP_WORDS=(ppz pipe destroy bob.); COMP_CWORD=3; _ppz; echo \"${COMPREPLY[*]}\"\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", driver], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["bob bob.inbox", "pipe", "bob.inbox"], out.stderr


def test_completion_other_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    r = ppz(capsys, "completion", "fish")
    assert (r.code, r.out) == (2, "")
