"""This session's current handle and namespace (spec/cli.md §2.12): ``ppz set|get|unset handle``,
``ppz set|unset namespace``."""

from __future__ import annotations

from ppz.commands.client import call, daemon_handle, env_handle, session_id, warn


def warn_env_override(other: str) -> None:
    env = env_handle()
    if env and other and env != other:
        warn(f"warning: PPZ_CURRENT_HANDLE={env} overrides the current source in this shell")


def set_handle(handle: str) -> None:
    reply = call("Switch", {"handle": str(handle), "session": session_id()})
    new = str(reply.get("handle") or handle)
    print(f"handle={new}")
    warn_env_override(new)


def get_handle() -> None:
    """``PPZ_CURRENT_HANDLE`` first, else the daemon's; none → no output, exit 1. It asks the
    daemon even when the variable is set: with no daemon it fails like every command that does
    not start one (exit 11, cli.md §1.2), and a different daemon value earns the warning."""
    daemon = daemon_handle()
    handle = env_handle() or daemon
    if not handle:
        raise SystemExit(1)
    print(handle)
    warn_env_override(daemon)


def unset_handle() -> None:
    call("Disconnect", {"session": session_id()})
    print("unset")


def set_namespace(path: str) -> None:
    reply = call("SetNamespace", {"namespace": str(path), "session": session_id()})
    print(f"namespace={reply.get('namespace', path)}")


def unset_namespace() -> None:
    call("UnsetNamespace", {"session": session_id()})
    print("unset")
