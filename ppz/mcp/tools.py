"""The seven tools of ``ppz mcp`` (spec/agents.md §3.2): their arguments, what each sends to the
daemon, and what each returns.

Every tool is one (or two) IPC calls in the server's session, shaped like the CLI command it
mirrors: targets as ``ppz send``/``ppz read`` read them (``ppz.commands``), ``who`` as
``ppz who --json``. A failure is raised as ``PpzError``; :mod:`ppz.mcp.server` turns it into
an MCP tool error. The signatures are the tools' JSON schemas (argument names are the contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from ppz import errors
from ppz.commands.client import parse_target
from ppz.commands.send import PRIORITIES, send_fields
from ppz.durations import parse_duration
from ppz.mcp.daemonclient import DaemonClient
from ppz.mcp.identity import Identity
from ppz.render import list_rows, pipe_path, qualified, who_entries

DEFAULT_LIMIT = 10


class WhoAmI(TypedDict):
    handle: str
    namespace: str
    session: str
    account_name: str
    logged_in: bool
    nats_state: str


class Sent(TypedDict):
    id: str
    to: str
    bytes: int


class ReadMessage(TypedDict):
    id: str
    sender: str
    subject: str
    payload: str
    created_at: str
    in_reply_to: str
    ack_requested: bool
    priority: int
    schedule_id: NotRequired[str]


class ReadResult(TypedDict):
    messages: list[ReadMessage]
    more_unread: int
    timed_out: bool


class RereadResult(TypedDict):
    messages: list[ReadMessage]


class PipeRow(TypedDict):
    pipe: str
    unread: int
    total: int
    last_at: NotRequired[str]
    preview: NotRequired[str]


class ListResult(TypedDict):
    pipes: list[PipeRow]


class WhoEntry(TypedDict):
    handle: str
    status: str
    owner: str
    arrived_at: str
    heartbeat: dict[str, Any] | None


class CreatedPipe(TypedDict):
    pipe: str


# (name, description) in the order tools/list shows them; the descriptions are what an agent reads.
DESCRIPTIONS = {
    "whoami": "Who this server speaks as: current handle, namespace, session, account and connection state.",
    "send": "Send a message to a handle's inbox (HANDLE), a pipe (HANDLE.PIPE) or an uncollared pipe; "
            "returns once the message is stored.",
    "read": "Read (and consume) unread messages of your inbox or another pipe; wait_seconds > 0 waits for "
            "the next message when none is unread.",
    "reread": "Show retained messages of a pipe again, without consuming anything.",
    "list": "List pipes with unread and total counts and a preview of the last message; patterns are globs "
            "such as 'alice.*'.",
    "who": "Show presence: which handles publish heartbeats, and whether they are online, stale or offline.",
    "create_pipe": "Create an uncollared pipe ([namespace.]name) that several agents can send to and read.",
}

Target = Annotated[str, Field(description="HANDLE (its inbox), HANDLE.PIPE, or an uncollared pipe name")]
Pipe = Annotated[str, Field(description="'inbox' (your inbox), HANDLE.PIPE, or an uncollared pipe name")]
Limit = Annotated[int, Field(ge=0, description="at most this many messages (0 = all)")]


def read_fields(pipe: str) -> dict[str, str]:
    """The target fields of ``Read``: ``inbox`` → the session's current handle's inbox (the
    daemon resolves an empty handle); dotless → the uncollared pipe; ``H.P`` → collared."""
    handle, name = parse_target(pipe)
    if not handle and name == "inbox":
        return {"handle": "", "channel": "inbox"}
    if not handle:
        return {"bare_target": name}
    return {"handle": handle, "channel": name}


def pipe_rows(reply: dict[str, Any]) -> list[PipeRow]:
    """A List reply as ``list`` rows, in ``ppz ls`` order; ``pipe`` as ``ls`` names it."""
    rows: list[PipeRow] = []
    for manifold, name, info in list_rows(reply):
        row: PipeRow = {
            "pipe": name if "." in name else qualified(manifold, name),
            "unread": int(info.get("unread") or 0),
            "total": int(info.get("total") or 0),
        }
        if info.get("last_at"):
            row["last_at"] = str(info["last_at"])
        if info.get("preview"):
            row["preview"] = str(info["preview"])
        rows.append(row)
    return rows


def messages_of(events: list[dict[str, Any]]) -> list[ReadMessage]:
    return [event["msg"] for event in events if isinstance(event.get("msg"), dict)]


class Tools:
    """The tools, bound to one daemon client (and so one session) and the ``--as`` identity.
    ``on_consumed`` is called after a ``read`` that may have moved a cursor (the watch uses it
    to notice that announced mail was read)."""

    def __init__(self, daemon: DaemonClient, identity: Identity,
                 on_consumed: Callable[[], None] = lambda: None) -> None:
        self.daemon = daemon
        self.identity = identity
        self.on_consumed = on_consumed

    async def _call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.identity.ensure()
        return await self.daemon.call(method, {**(params or {}), "session": self.daemon.session})

    async def _read(self, params: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        await self.identity.ensure()
        return await self.daemon.events("Read", {**params, "session": self.daemon.session}, timeout=timeout)

    async def whoami(self) -> WhoAmI:
        status = await self._call("Status")
        return {
            "handle": str(status.get("current") or ""),
            "namespace": str(status.get("current_namespace") or ""),
            "session": self.daemon.session,
            "account_name": str(status.get("account_name") or ""),
            "logged_in": bool(status.get("logged_in")),
            "nats_state": str(status.get("nats_state") or ""),
        }

    async def send(
        self,
        to: Target,
        message: Annotated[str, Field(description="the message text")],
        subject: Annotated[str | None, Field(description="a short subject line (not starting with 'ack:')")] = None,
        in_reply_to: Annotated[str | None, Field(description="the id of the message this one answers")] = None,
        priority: Annotated[Literal["high", "medium", "low"] | None, Field(description="message priority")] = None,
        request_ack: Annotated[bool, Field(description="ask for a read receipt in your inbox")] = False,
    ) -> Sent:
        level = 0 if priority is None else PRIORITIES.get(str(priority).lower())
        if level is None:
            raise errors.PpzError(errors.E_INVALID_PRIORITY)
        params = {
            **send_fields(*parse_target(to)),
            "payload": message,
            "msg_subject": subject or "",
            "in_reply_to": in_reply_to or "",
            "ack_requested": request_ack,
            "priority": level,
        }
        if request_ack and not (await self._call("Status")).get("current"):
            raise errors.PpzError(errors.E_NO_CURRENT_SOURCE)  # the receipt needs an inbox to go to
        reply = await self._call("Send", params)
        return {"id": str(reply.get("id", "")), "to": str(reply.get("subject", "")).partition(".")[2],
                "bytes": int(reply.get("bytes") or 0)}

    async def read(
        self,
        pipe: Pipe = "inbox",
        limit: Limit = DEFAULT_LIMIT,
        wait_seconds: Annotated[float, Field(ge=0, description="when nothing is unread, wait up to this "
                                                               "many seconds for a message (0 = no wait)")] = 0,
        from_: Annotated[list[str] | None, Field(alias="from", description="only messages from these handles "
                                                                          "(then nothing is consumed)")] = None,
        subject: Annotated[str | None, Field(description="only messages whose subject matches this glob "
                                                         "(then nothing is consumed)")] = None,
        include_acks: Annotated[bool, Field(description="also return read receipts (ack:… messages)")] = False,
    ) -> ReadResult:
        params: dict[str, Any] = {**read_fields(pipe), "head_limit": limit, "no_acks": not include_acks}
        if wait_seconds > 0:
            params["wait_ms"] = max(1, round(wait_seconds * 1000))
        if from_:
            params["from"] = from_
        if subject:
            params["subject"] = subject
        try:
            events = await self._read(params, timeout=wait_seconds + self.daemon.timeout)
        finally:
            self.on_consumed()
        more = next((e["more_unread"] for e in events if isinstance(e.get("more_unread"), int)), 0)
        return {"messages": messages_of(events), "more_unread": more,
                "timed_out": any(e.get("timeout") is True for e in events)}

    async def reread(
        self,
        pipe: Pipe,
        limit: Annotated[int, Field(ge=0, description="the last this many retained messages (0 = all)")]
        = DEFAULT_LIMIT,
        skip: Annotated[int, Field(ge=0, description="leave out the first this many of them")] = 0,
        since: Annotated[str | None, Field(description="only messages created within this long, e.g. 10m")] = None,
    ) -> RereadResult:
        since_ms = 0
        if since:
            try:
                since_ms = round(parse_duration(since) * 1000)
            except ValueError:
                raise errors.PpzError(errors.E_PROTOCOL,
                                      f"invalid since '{since}': use a duration such as 90s, 5m or 1h") from None
        params = {**read_fields(pipe), "all": True, "limit": limit, "skip": skip, "since_ms": since_ms}
        return {"messages": messages_of(await self._read(params, timeout=self.daemon.timeout))}

    async def list_pipes(
        self,
        patterns: Annotated[list[str] | None, Field(description="names or globs of HANDLE.PIPE or uncollared "
                                                                "pipes (* ? [..]); none = every pipe")] = None,
    ) -> ListResult:
        return {"pipes": pipe_rows(await self._call("List", {"patterns": patterns or []}))}

    async def who(self) -> list[WhoEntry]:
        await self.identity.ensure()
        return who_entries(await self.daemon.call("Who", {}))  # type: ignore[return-value]

    async def create_pipe(
        self,
        name: Annotated[str, Field(description="[namespace.]name of the new uncollared pipe")],
    ) -> CreatedPipe:
        manifold, _, pipe = name.rpartition(".")
        params: dict[str, Any] = {"name": pipe}
        if manifold:
            params["manifold"] = manifold
        return {"pipe": pipe_path(await self._call("PipeCreate", params))}

    def by_name(self) -> dict[str, Callable[..., Any]]:
        """The tool functions by tool name, in ``tools/list`` order."""
        return {"whoami": self.whoami, "send": self.send, "read": self.read, "reread": self.reread,
                "list": self.list_pipes, "who": self.who, "create_pipe": self.create_pipe}
