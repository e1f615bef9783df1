"""``ppz send`` (spec/cli.md §2.7): one ``Send``, confirmed on stderr after the PubAck."""

from __future__ import annotations

import sys
from typing import Any

from ppz import errors
from ppz.commands.client import call, current_handle, env_handle, fail, flag_on, flag_value, session_id, split_target

PRIORITIES = {"1": 1, "high": 1, "2": 2, "medium": 2, "med": 2, "3": 3, "low": 3}


def send_fields(handle: str, pipe: str) -> dict[str, str]:
    """The target fields of ``Send`` for a parsed target: dotless ``T`` (``handle`` empty) → the
    uncollared pipe T if it exists, else ``T.inbox``; ``H.P`` → the collared pipe."""
    if not handle:
        return {"handle": pipe, "channel": "inbox", "bare_target": pipe}
    return {"handle": handle, "channel": pipe}


def send_target(target: str) -> dict[str, str]:
    """Send: dotless ``T`` → the uncollared pipe T if it exists, else ``T.inbox``."""
    return send_fields(*split_target(target))


def parse_priority(value: Any) -> int:
    """``1``/``high``, ``2``/``medium``/``med``, ``3``/``low`` (any case); not given = 0;
    anything else (``0`` included) → E_INVALID_PRIORITY (exit 27)."""
    if value is None:
        return 0
    priority = PRIORITIES.get(str(value).lower())
    if priority is None:
        fail(errors.PpzError(errors.E_INVALID_PRIORITY))
    return priority


def send(target: str, payload: str, subject: Any, in_reply_to: Any, request_ack: Any,
         priority: Any) -> None:
    from ppz.render import sent_line

    subject_text = flag_value(subject)
    ack = flag_on("request-ack", request_ack)
    if subject_text.startswith("ack:"):
        fail(errors.PpzError(errors.E_INVALID_SUBJECT))
    level = parse_priority(priority)
    params: dict[str, Any] = {
        **send_target(str(target)),
        "payload": str(payload),
        "msg_subject": subject_text,
        "in_reply_to": flag_value(in_reply_to),
        "ack_requested": ack,
        "priority": level,
        "sender": env_handle(),
        "session": session_id(),
    }
    if ack:
        current_handle()  # --request-ack needs someone to receive the receipt
    reply = call("Send", params)
    print(sent_line(reply, ack), file=sys.stderr)
