"""The diagnostics bundle of ``ppz diagnostics --bundle`` (spec/cli.md §2.5): the event logs, the
indented ``Diag`` reply, versions and platform facts in a gzip tar, with a MANIFEST. Never the
credential, ``current.json`` or cursors; works without a daemon."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from ppz import __version__, errors, ipc
from ppz.commands.client import error_text, fail_plain, session_id

BUNDLE_LOGS = ("nats-events.jsonl", "nats-events.jsonl.1", "nats-events.jsonl.2",
               "diagnostics-lifecycle.jsonl", "daemon.pid")


class Bundle:
    """The members of a diagnostics bundle and its MANIFEST (``+ name`` / ``- name (reason)``)."""

    def __init__(self) -> None:
        self.members: list[tuple[str, bytes]] = []
        self.manifest: list[str] = []

    def add(self, name: str, data: bytes) -> None:
        self.members.append((name, data))
        self.manifest.append(f"+ {name}")

    def missing(self, name: str, reason: str) -> None:
        self.manifest.append(f"- {name} ({reason})")


def _daemon_reply(method: str, params: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A best-effort call: (reply, "") or (None, why it is missing)."""
    try:
        return ipc.call(method, params), ""
    except errors.PpzError as err:
        return None, "daemon not running" if err.code == errors.E_DAEMON_NOT_RUNNING else error_text(err)


def bundle_contents(params: Mapping[str, Any], root: str) -> Bundle:
    """Everything ``diagnostics --bundle`` collects; never credentials, current.json or cursors."""
    import platform
    import subprocess

    from ppz.render import indented_json

    bundle = Bundle()
    for name in BUNDLE_LOGS:
        try:
            with open(os.path.join(root, name), "rb") as f:
                bundle.add(name, f.read())
        except FileNotFoundError:
            bundle.missing(name, "not found")
        except OSError as exc:
            bundle.missing(name, exc.strerror or str(exc))
    reply, why = _daemon_reply("Diag", params)
    if reply is None:
        bundle.missing("diagnostics.json", why)
    else:
        bundle.add("diagnostics.json", (indented_json(reply) + "\n").encode())
    status, why = _daemon_reply("Status", {"session": session_id()})
    daemon_version = (str(status.get("daemon_version") or "unknown")) if status is not None else f"unknown ({why})"
    bundle.add("version.txt", f"cli: {__version__}\ndaemon: {daemon_version}\n".encode())
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, timeout=5, check=True)
        bundle.add("uname.txt", uname.stdout)
    except (OSError, subprocess.SubprocessError) as exc:
        bundle.missing("uname.txt", str(exc))
    bundle.add("platform.txt", (f"python: {platform.python_version()}\nos: {platform.system()}\n"
                                f"arch: {platform.machine()}\nplatform: {platform.platform()}\n").encode())
    return bundle


def write_bundle(params: Mapping[str, Any]) -> None:
    """``diagnostics --bundle``: ``~/ppz-diag-<YYYYmmdd-HHMMSS>.tgz`` (the current directory
    without a home); prints its absolute path. Works without a daemon."""
    import io
    import tarfile

    bundle = bundle_contents(params, ipc.home_dir())
    bundle.add("MANIFEST", ("\n".join([*bundle.manifest, "+ MANIFEST"]) + "\n").encode())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.abspath(os.path.join(ipc.user_home() or os.getcwd(), f"ppz-diag-{stamp}.tgz"))
    now = time.time()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            for name, data in bundle.members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        fail_plain(f"diagnostics bundle: cannot write {path}: {exc.strerror or exc}")
    print(path)
