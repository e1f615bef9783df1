"""``ppz read`` and ``ppz reread`` (spec/cli.md §2.8, §2.9; agents.md §2): one ``Read`` stream
rendered as it arrives; ``read --tail`` and ``read --wait`` redial a stream the daemon ended and
wait out a daemon restart (a wait with the time it has left)."""

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

# read --tail (cli.md §2.8) and --wait (agents.md §2): redial 200 ms after a stream ends without
# an error; when the daemon cannot be reached, retry every second for up to 30 s.
REDIAL_DELAY = 0.2
RECONNECT_EVERY = 1.0
RECONNECT_FOR = 30.0
TIMEOUT_EXIT = 124  # a wait expired with nothing delivered, as timeout(1) exits


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

    def show(self, events: Iterable[dict[str, Any]]) -> tuple[int, bool]:
        """Render every event; an ``error`` event is raised by ``ipc.stream`` as PpzError.
        Returns how many messages were shown and whether a ``timeout`` event ended the stream."""
        from ppz.render import more_unread_line, render_message

        shown, timed_out = 0, False
        for event in events:
            msg = event.get("msg")
            if isinstance(msg, dict):
                emit(render_message(msg, self.mode, self.tabular, self.colour))
                shown += 1
                if self.flush:
                    sys.stdout.flush()
            elif "more_unread" in event and self.trailer:
                emit(more_unread_line(event["more_unread"]) + "\n")
            elif event.get("timeout") is True:
                timed_out = True
        return shown, timed_out


def read_stream(params: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    return ipc.stream("Read", params)


def drain(params: Mapping[str, Any], view: ReadView) -> None:
    try:
        view.show(read_stream(params))
    except errors.PpzError as err:
        sys.stdout.flush()
        fail(err)


def keep_reading(params: Mapping[str, Any], view: ReadView, wait_ms: int = 0) -> None:
    """``read --tail`` (``wait_ms`` 0: until interrupted) and ``read --wait`` (until a stream
    delivers a message, or the wait expires: exit 124). A stream that ends without an ``error``
    event (connection swap, daemon restart) is redialled after 200 ms with the same request
    (a wait with the time it has left) — a follow's cursor advanced with every message, so
    nothing repeats. A daemon that cannot be reached is retried every second for up to 30 s
    (only once a stream was open: a first dial that fails is ``E_DAEMON_NOT_RUNNING`` at once,
    like every other command)."""
    deadline = time.monotonic() + wait_ms / 1000.0 if wait_ms > 0 else None
    opened = False
    give_up_at: float | None = None
    while True:
        request = dict(params)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(TIMEOUT_EXIT)
            request["wait_ms"] = max(1, round(left * 1000))
        try:
            shown, timed_out = view.show(read_stream(request))
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
        if wait_ms and shown:
            return
        if timed_out:
            sys.stdout.flush()
            raise SystemExit(TIMEOUT_EXIT)
        time.sleep(REDIAL_DELAY)


def wait_flag(wait: Any) -> int:
    """``--wait`` alone → -1 (no deadline); ``--wait=DUR`` → DUR in ms, which must be > 0."""
    if wait is None:
        return 0
    if str(wait) == "":
        return -1
    seconds = duration_flag("wait", wait)
    if seconds <= 0:
        raise UsageError(f"ppz read: --wait needs a duration above 0 (got {wait!r})")
    return max(1, round(seconds * 1000))


def filter_params(senders: Any, subject: Any, no_acks: Any) -> dict[str, Any]:
    """``--from``, ``--subject``, ``--no-acks`` as the ``Read`` fields of agents.md §1 (absent
    when not given)."""
    params: dict[str, Any] = {}
    if senders is not None:
        handles = [h.strip() for h in str(senders).split(",") if h.strip()]
        if not handles:
            raise UsageError("ppz: --from needs a handle")
        params["from"] = handles
    if subject is not None:
        if not str(subject):
            raise UsageError("ppz: --subject needs a glob")
        params["subject"] = str(subject)
    if flag_on("no_acks", no_acks):
        params["no_acks"] = True
    return params


def read(target: str, tail: Any, limit: Any, wait: Any, senders: Any, subject: Any, no_acks: Any,
         as_json: Any, raw: Any, bare: Any) -> None:
    mode = output_mode(as_json, raw, bare)
    following = flag_on("tail", tail)
    if following and limit is not None:
        raise UsageError("ppz read: --limit cannot be combined with --tail")
    wait_ms = wait_flag(wait)
    if following and wait_ms:
        raise UsageError("ppz read: --wait cannot be combined with --tail")
    head_limit = 0 if following else (10 if limit is None else int_flag("limit", limit))
    params: dict[str, Any] = {
        **read_target(str(target)),
        "follow": following,
        "head_limit": head_limit,
        **filter_params(senders, subject, no_acks),
        "sender": env_handle(),
        "session": session_id(),
    }
    if wait_ms:
        params["wait_ms"] = wait_ms
    view = ReadView(params, mode, trailer=True, flush=following or bool(wait_ms))
    if not following and not wait_ms:
        drain(params, view)
        return
    if wait_ms:
        keep_reading(params, view, wait_ms)  # Ctrl-C ends a wait as any command: exit 130
        return
    try:
        keep_reading(params, view)
    except KeyboardInterrupt:
        raise SystemExit(0) from None


def reread(target: str, limit: Any, skip: Any, since: Any, senders: Any, subject: Any, no_acks: Any,
           as_json: Any, raw: Any, bare: Any) -> None:
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
        **filter_params(senders, subject, no_acks),
        "sender": env_handle(),
        "session": session_id(),
    }
    drain(params, ReadView(params, mode, trailer=False, flush=False))
