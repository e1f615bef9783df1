"""The IPC verbs: their parameter types and which of them are reserved (spec/ipc.md §7, §8).

Pure data and pure checks. The dispatcher validates every request against this table before
a handler runs, so a field of the wrong JSON type is ``E_PROTOCOL`` for every verb alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ppz import errors, ipc

STR = "str"
BOOL = "bool"
INT = "int"
STRS = "strs"
OPT_INT = "opt_int"  # an integer that may be absent/null ("not set"), e.g. retention fields

_RETENTION = {"ttl_seconds": OPT_INT, "max_msgs": OPT_INT, "max_bytes": OPT_INT}
_TARGET = {"handle": STR, "channel": STR, "bare_target": STR}
_PIPE = {"handle": STR, "source_handle": STR, "manifold": STR, "name": STR, **_RETENTION}

SCHEMAS: dict[str, dict[str, str]] = {
    "Status": {"session": STR},
    "Login": {"url": STR, "api_key": STR, "account_id": STR},
    "Logout": {},
    "Create": {"handle": STR, "kind": STR, "manifold": STR, "session": STR},
    "EnsurePTY": {"handle": STR, "session": STR},
    "Connect": {"handle": STR, "session": STR},
    "Switch": {"handle": STR, "session": STR},
    "Disconnect": {"session": STR},
    "SetNamespace": {"namespace": STR, "session": STR},
    "UnsetNamespace": {"session": STR},
    "Send": {
        **_TARGET,
        "payload": STR,
        "msg_subject": STR,
        "in_reply_to": STR,
        "ack_requested": BOOL,
        "priority": INT,
        "sender": STR,
        "session": STR,
    },
    "SendBatch": {**_TARGET, "payloads": STRS, "session": STR},
    "Read": {
        **_TARGET,
        "follow": BOOL,
        "head_limit": INT,
        "all": BOOL,
        "no_advance": BOOL,
        "limit": INT,
        "skip": INT,
        "since_ms": INT,
        "seed_latest": BOOL,
        "sender": STR,
        "json": BOOL,
        "session": STR,
        "wait_ms": INT,
        "from": STRS,
        "subject": STR,
        "no_acks": BOOL,
    },
    "List": {"session": STR, "patterns": STRS, "long": BOOL},
    "ListWatch": {"session": STR, "patterns": STRS, "long": BOOL},
    "PipeCreate": {**_PIPE, "session": STR},
    "PipeSet": {**_PIPE, "session": STR},
    "PipeDestroy": {"handle": STR, "name": STR, "bare_target": STR, "manifold": STR, "session": STR},
    "SourceDestroy": {"handle": STR, "session": STR},
    "Diag": {"since_unix": INT},
    "Who": {},
    "Complete": {},
}

RESERVED = frozenset(
    {"SubsList", "SubsAdd", "SubsRemove", "SubsWait", "ScheduleCreate", "ScheduleList",
     "ScheduleRemove", "ACL", "Subscribe"}
)


def check_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``params`` for ``method`` and return them with every known field typed.

    Absent and null fields read as their empty value (``""``, ``False``, ``0``, ``[]``), except
    optional integers, which stay ``None`` ("not set"). Unknown fields are dropped. Raises
    ``E_PROTOCOL`` for an unknown method or a field of the wrong type, ``E_NOT_IMPLEMENTED`` for
    a reserved verb, and ``E_PROTOCOL`` ``invalid session '<s>'`` for an unusable session.
    """
    if method in RESERVED:
        raise errors.not_implemented(method)
    schema = SCHEMAS.get(method)
    if schema is None:
        raise errors.PpzError(errors.E_PROTOCOL, f"unknown method {method}")
    typed: dict[str, Any] = {}
    for name, kind in schema.items():
        if kind == STR:
            typed[name] = ipc.param_str(params, name)
        elif kind == BOOL:
            typed[name] = ipc.param_bool(params, name)
        elif kind == INT:
            typed[name] = ipc.param_int(params, name)
        elif kind == STRS:
            typed[name] = ipc.param_str_list(params, name)
        else:
            typed[name] = ipc.param_int(params, name) if params.get(name) is not None else None
    if "session" in schema:
        check_session(typed["session"])
    if method == "Read" and typed["wait_ms"] < -1:
        raise errors.PpzError(errors.E_PROTOCOL, "invalid wait_ms")  # agents.md §1: -1 = no deadline
    return typed


def check_session(session: str) -> None:
    """A session names files: ``/``, NUL, ``.`` and ``..`` are refused (ipc.md §6)."""
    if "/" in session or "\0" in session or session in (".", ".."):
        raise errors.PpzError(errors.E_PROTOCOL, f"invalid session '{session}'")
