"""``ppz read`` and ``ppz reread`` (spec/cli.md §2.8, §2.9): one ``Read`` stream rendered as it
arrives; ``read --tail`` redials a stream the daemon ended and waits out a daemon restart."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ppz import errors, ipc
from ppz.commands.client import (
    UsageError,
    colour_enabled,
    current_handle,
    duration_flag,
    emit,
    env_handle,
    fail,
    flag_on,
    int_flag,
    output_mode,
    session_id,
    split_target,
)

# read --tail (cli.md §2.8): redial 200 ms after a stream ends without an error; when the daemon
# cannot be reached, retry every second for up to 30 s.
REDIAL_DELAY = 0.2
RECONNECT_EVERY = 1.0
RECONNECT_FOR = 30.0


def read_target(target: str) -> dict[str, str]:
    """Read/reread: ``inbox`` → ``<current>.inbox``; dotless → uncollared; ``H.P`` collared."""
    handle, pipe = split_target(target)
    if not handle and pipe == "inbox":
        return {"handle": current_handle(), "channel": "inbox"}
    if not handle:
        return {"bare_target": pipe}
    return {"handle": handle, "channel": pipe}


class ReadView:
    """Renders the events of one Read stream as they arrive (cli.md §2.8)."""

    def __init__(self, params: Mapping[str, Any], mode: str, trailer: bool, flush: bool) -> None:
        from ppz.render import is_tabular

        self.mode = mode
        self.tabular = is_tabular(str(params.get("channel", "")), bool(params.get("bare_target")))
        self.trailer = trailer and not mode
        self.flush = flush
        self.colour = colour_enabled(mode == "json")

    def show(self, events: Iterable[dict[str, Any]]) -> None:
        """Render every event; an ``error`` event is raised by ``ipc.stream`` as PpzError."""
        from ppz.render import more_unread_line, render_message

        for event in events:
            msg = event.get("msg")
            if isinstance(msg, dict):
                emit(render_message(msg, self.mode, self.tabular, self.colour))
                if self.flush:
                    sys.stdout.flush()
            elif "more_unread" in event and self.trailer:
                emit(more_unread_line(event["more_unread"]) + "\n")


def read_stream(params: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    return ipc.stream("Read", params)


def drain(params: Mapping[str, Any], view: ReadView) -> None:
    try:
        view.show(read_stream(params))
    except errors.PpzError as err:
        sys.stdout.flush()
        fail(err)


def follow(params: Mapping[str, Any], view: ReadView) -> None:
    """``read --tail``: stream until interrupted. A stream that ends without an ``error`` event
    (connection swap, daemon restart) is redialled after 200 ms with the same request — the
    cursor advanced with every message, so nothing repeats. A daemon that cannot be reached is
    retried every second for up to 30 s (only once a stream was open: a first dial that fails
    is ``E_DAEMON_NOT_RUNNING`` at once, like every other command)."""
    opened = False
    give_up_at: float | None = None
    while True:
        try:
            view.show(read_stream(params))
        except errors.PpzError as err:
            sys.stdout.flush()
            now = time.monotonic()
            if err.code != errors.E_DAEMON_NOT_RUNNING or not opened:
                fail(err)
            if give_up_at is None:
                give_up_at = now + RECONNECT_FOR
            if now >= give_up_at:
                fail(err)
            time.sleep(min(RECONNECT_EVERY, give_up_at - now))
            continue
        opened = True
        give_up_at = None
        time.sleep(REDIAL_DELAY)


def read(target: str, tail: Any, limit: Any, as_json: Any, raw: Any, bare: Any) -> None:
    mode = output_mode(as_json, raw, bare)
    following = flag_on("tail", tail)
    if following and limit is not None:
        raise UsageError("ppz read: --limit cannot be combined with --tail")
    head_limit = 0 if following else (10 if limit is None else int_flag("limit", limit))
    params: dict[str, Any] = {
        **read_target(str(target)),
        "follow": following,
        "head_limit": head_limit,
        "sender": env_handle(),
        "session": session_id(),
    }
    view = ReadView(params, mode, trailer=True, flush=following)
    if not following:
        drain(params, view)
        return
    try:
        follow(params, view)
    except KeyboardInterrupt:
        raise SystemExit(0) from None


def reread(target: str, limit: Any, skip: Any, since: Any, as_json: Any, raw: Any, bare: Any) -> None:
    mode = output_mode(as_json, raw, bare)
    window = {
        "limit": 10 if limit is None else int_flag("limit", limit),
        "skip": 0 if skip is None else int_flag("skip", skip),
        "since_ms": 0 if since is None else round(duration_flag("since", since) * 1000),
    }
    params: dict[str, Any] = {
        **read_target(str(target)),
        "all": True,
        **window,
        "sender": env_handle(),
        "session": session_id(),
    }
    drain(params, ReadView(params, mode, trailer=False, flush=False))
