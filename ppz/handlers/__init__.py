"""IPC verb handlers (spec/ipc.md §7), one module per verb family, and the dispatch tables.

Each handler takes the :class:`System` and the typed params and returns the ``result`` object,
or raises ``PpzError``. Stream handlers (``Read``, ``ListWatch``) also get the connection and
write their own events; they run on the connection's thread. Fast handlers run on the event
loop and answer when their warm path applies (else ``None``, and the request goes to a thread).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

from ppz.handlers import diag, listing, read, send, session, sources
from ppz.system import System

Handler = Callable[[System, dict[str, Any]], dict[str, Any]]
StreamHandler = Callable[[System, dict[str, Any], socket.socket], None]
FastHandler = Callable[[System, dict[str, Any]], Awaitable[dict[str, Any] | None]]

HANDLERS: dict[str, Handler] = {
    "Status": session.status,
    "Login": session.login,
    "Logout": session.logout,
    "Diag": diag.diag,
    "Who": diag.who,
    **sources.HANDLERS,
    "Send": send.send,
    "SendBatch": send.send_batch,
    "List": listing.list_,
}

STREAM_HANDLERS: dict[str, StreamHandler] = {
    "Read": read.read,
    "ListWatch": listing.list_watch,
}

FAST_HANDLERS: dict[str, FastHandler] = {
    "Send": send.send_warm,
    "SendBatch": send.send_batch_warm,
}
