"""``ppz pipe create|set|destroy`` (spec/cli.md §2.13): ``[HANDLE.]NAME``, no handle = uncollared."""

from __future__ import annotations

from typing import Any

from ppz import errors
from ppz.commands.client import call, duration_flag, fail, flag_on, int_flag, session_id, split_target
from ppz.commands.source import destroy_pipe, destroy_source


def pipe_name(name: str) -> tuple[str, str]:
    """``[H.]NAME`` → (handle or "", name)."""
    return split_target(str(name))


def retention_params(ttl: Any, max_msgs: Any, max_bytes: Any) -> dict[str, int]:
    """Only the retention fields whose flag was given (``--ttl`` in whole seconds; -1 allowed
    for the integers)."""
    params: dict[str, int] = {}
    if ttl is not None:
        params["ttl_seconds"] = int(duration_flag("ttl", ttl))
    if max_msgs is not None:
        params["max_msgs"] = int_flag("max_msgs", max_msgs, minimum=-1)
    if max_bytes is not None:
        params["max_bytes"] = int_flag("max_bytes", max_bytes, minimum=-1)
    return params


def write(verb: str, name: str, ttl: Any, max_msgs: Any, max_bytes: Any) -> None:
    """``pipe create`` (``PipeCreate``) and ``pipe set`` (``PipeSet``)."""
    from ppz.render import pipe_path, retention_text

    retention = retention_params(ttl, max_msgs, max_bytes)
    if verb == "PipeSet" and not retention:
        fail(errors.PpzError(errors.E_INVALID_PIPE, "pipe set: name at least one of --ttl, --max-msgs, --max-bytes"))
    handle, pipe = pipe_name(name)
    reply = call(verb, {"handle": handle, "name": pipe, **retention, "session": session_id()})
    done = "created" if verb == "PipeCreate" else "updated"
    print(f"{done} pipe={pipe_path({'handle': handle, 'name': pipe, **reply})} {retention_text(reply)}")


def destroy(name: str, recursive: Any) -> None:
    handle, pipe = pipe_name(name)
    if flag_on("recursive", recursive) and not handle:
        destroy_source(pipe)
    else:
        destroy_pipe(handle, pipe)
