"""``ppz source create`` and ``ppz source destroy`` (spec/cli.md §2.11), globs included."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from ppz import errors
from ppz.commands.client import call, fail, session_id


def create(handle: str) -> None:
    reply = call("Create", {"handle": str(handle), "kind": "message", "session": session_id()})
    print(f"created handle={reply.get('handle', handle)} subject={reply.get('subject', '')}")


def destroy_source(handle: str) -> None:
    from ppz.render import qualified

    reply = call("SourceDestroy", {"handle": handle, "session": session_id()})
    print(f"destroyed source={qualified(reply.get('manifold'), reply.get('handle') or handle)}")
    sys.stdout.flush()


def destroy_pipe(handle: str, name: str) -> None:
    from ppz.render import pipe_path

    reply = call("PipeDestroy", {"handle": handle, "name": name, "session": session_id()})
    print(f"destroyed pipe={pipe_path({'handle': handle, 'name': name, **reply})}")
    sys.stdout.flush()


def glob_destroy_matches(pattern: str, reply: Mapping[str, Any]) -> list[str]:
    """What ``source destroy PATTERN`` (a glob) destroys, sorted: source handles for a dotless
    pattern; ``<handle>.<pipe>`` of pipes that are not auto-provisioned for a dotted one."""
    from ppz.globs import glob_match
    from ppz.names import AUTO_PROVISIONED

    names = set()
    for source in reply.get("sources") or ():
        handle = str(source.get("handle", ""))
        if "." not in pattern:
            names.add(handle)
            continue
        pipes = {str(p) for p in source.get("pipes") or ()}
        pipes |= {str(i.get("pipe", "")) for i in source.get("pipe_infos") or ()}
        names |= {f"{handle}.{p}" for p in pipes if p and p not in AUTO_PROVISIONED}
    return sorted(n for n in names if glob_match(pattern, n))


def destroy(pattern: str) -> None:
    from ppz.globs import is_literal

    pattern = str(pattern)
    dotted = "." in pattern
    if is_literal(pattern):
        handle, dot, pipe = pattern.partition(".")
        if not dot:
            destroy_source(handle)
            return
        if not handle or not pipe or "." in pipe:
            fail(errors.PpzError(errors.E_INVALID_PIPE, f"invalid target '{pattern}': use HANDLE or HANDLE.PIPE"))
        destroy_pipe(handle, pipe)
        return
    matches = glob_destroy_matches(pattern, call("List", {}))
    if not matches:
        if dotted:
            fail(errors.PpzError(errors.E_PIPE_NOT_FOUND, f"no pipe matches '{pattern}'"))
        fail(errors.PpzError(errors.E_SOURCE_NOT_FOUND, f"no source matches '{pattern}'"))
    for name in matches:
        if dotted:
            handle, _, pipe = name.partition(".")
            destroy_pipe(handle, pipe)
        else:
            destroy_source(name)
