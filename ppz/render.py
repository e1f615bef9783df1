"""CLI renderings (spec/cli.md §1.6, §2): pure functions from replies to text.

No I/O and no daemon-side imports: the CLI imports this module on every command.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ppz import presence
from ppz.durations import format_duration, relative_time
from ppz.globs import is_literal
from ppz.timestamps import epoch_seconds, parse_rfc3339

GREEN = "\x1b[32m"
AMBER = "\x1b[33m"
RED = "\x1b[31m"
DIM = "\x1b[2m"
BOLD_CYAN = "\x1b[1;36m"
RESET = "\x1b[0m"

RECONNECT_AMBER_WINDOW = 60.0
STALE_TOKEN_REFRESH = 300.0


def paint(text: str, colour: str, enabled: bool) -> str:
    return f"{colour}{text}{RESET}" if enabled and colour else text


def _age(value: str, now: float) -> float | None:
    try:
        return now - epoch_seconds(value)
    except ValueError:
        return None


def same_version(a: str, b: str) -> bool:
    return a.removeprefix("v") == b.removeprefix("v")


def render_status(
    reply: Mapping[str, Any],
    *,
    cli_version: str,
    env_handle: str = "",
    colour: bool = False,
    now: float | None = None,
) -> list[str]:
    """The ``ppz status`` lines for a Status reply (cli.md §2.4)."""
    now = time.time() if now is None else now
    pid = reply.get("daemon_pid", 0)
    version = str(reply.get("daemon_version") or "")
    if not version:
        suffix = ", version unknown"
    else:
        suffix = f", {version}"
        if not same_version(version, cli_version):
            suffix += paint(" (daemon out of sync with ppz cli, run 'ppz daemon restart')", RED, colour)
    if not reply.get("logged_in"):
        return [f"daemon: not logged in (pid={pid}){suffix}", "hint: run 'ppz login URL --apikey KEY'"]
    if reply.get("login_check") == "invalid":
        return [
            f"daemon: authentication error (pid={pid}){suffix}",
            f"server: {reply.get('url', '')}",
            "hint: run 'ppz login URL --apikey KEY' to refresh",
        ]
    lines = [f"daemon: logged in (pid={pid}){suffix}"]
    refreshed = reply.get("last_token_refresh_at")
    if refreshed:
        age = _age(refreshed, now)
        text = relative_time(refreshed, now)
        stale = age is not None and age >= STALE_TOKEN_REFRESH
        lines.append(f"last token refresh: {paint(text, RED if stale else '', colour)}")
    else:
        lines.append("last token refresh: -")
    lines.append(f"server: {reply.get('url', '')}")
    lines.append(f"account: {reply.get('account_name') or reply.get('account_id', '')}")
    lines.append("nats: " + _nats_line(reply, colour, now))
    lines.extend(_current_lines(reply, env_handle))
    namespace = reply.get("current_namespace")
    if namespace:
        lines.append(f"namespace: {namespace}")
    return lines


def _nats_line(reply: Mapping[str, Any], colour: bool, now: float) -> str:
    state = reply.get("nats_state") or "unknown"
    since = reply.get("nats_state_since")
    if state == "connected":
        col = GREEN
        if reply.get("nats_state_entry") == "reconnect" and since:
            age = _age(since, now)
            if age is not None and age < RECONNECT_AMBER_WINDOW:
                col = AMBER
    elif state == "connecting":
        col = DIM
    else:
        col = RED
    text = paint(state, col, colour)
    if since:
        text += f" ({relative_time(since, now)})"
    return text


def _current_lines(reply: Mapping[str, Any], env_handle: str) -> list[str]:
    daemon_handle = reply.get("current") or ""
    if not env_handle:
        return [f"current source: {daemon_handle or '-'}"]
    if not daemon_handle or daemon_handle == env_handle:
        return [f"current source: {env_handle} (env PPZ_CURRENT_HANDLE)"]
    return [
        f"current source: {env_handle} (env PPZ_CURRENT_HANDLE)",
        f"current source: {daemon_handle} "
        f"(pid={reply.get('daemon_pid', 0)}, {reply.get('current_path', '')})",
        "warning: current source is set twice, env takes precedence",
    ]


# --- tables and times (cli.md §1.6) -------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NO_VALUE = "-"
NO_CLOCK = "--:--:--"


def visible_len(text: str) -> int:
    """Length of ``text`` as displayed: ANSI escape sequences count for nothing."""
    return len(_ANSI_RE.sub("", text)) if "\x1b" in text else len(text)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns separated by two spaces, each padded to its widest cell (measured without ANSI
    codes); the last column is not padded and no line has trailing spaces."""
    if not rows:
        return []
    ncols = max(len(r) for r in rows)
    widths = [max((visible_len(r[i]) for r in rows if i < len(r)), default=0) for i in range(ncols)]
    lines = []
    for row in rows:
        cells = [
            cell if i == len(row) - 1 else cell + " " * (widths[i] - visible_len(cell))
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip(" "))
    return lines


def local_clock(value: Any) -> str:
    """``HH:MM:SS`` in local time of an RFC 3339 string or epoch seconds; ``--:--:--`` if unusable."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(epoch_seconds(value)))
    except (TypeError, ValueError, OverflowError, OSError):
        return NO_CLOCK


def utc_millis(value: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds truncated); unparseable text is kept."""
    try:
        t = parse_rfc3339(value)
    except ValueError:
        return str(value)
    return f"{t.strftime('%Y-%m-%dT%H:%M:%S')}.{t.microsecond // 1000:03d}Z"


def relative_or_dash(value: Any, now: float) -> str:
    if not value:
        return NO_VALUE
    try:
        return relative_time(value, now)
    except (TypeError, ValueError, OverflowError):
        return NO_VALUE


def cell(value: Any) -> str:
    """A table cell: missing or empty values print ``-``."""
    if value is None or value == "":
        return NO_VALUE
    return str(value)


def indented_json(value: Any) -> str:
    """``--json`` output: indented by 2 spaces, non-ASCII kept."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def qualified(manifold: Any, *parts: Any) -> str:
    """``[manifold.]part[.part…]``: a name as shown to the user, with its manifold when it has one."""
    names = [str(p) for p in parts if p]
    return ".".join([str(manifold), *names] if manifold else names)


# --- send, read and reread (cli.md §2.7–2.9) -----------------------------------------------------

TABULAR_PIPES = frozenset({"inbox", "broadcast"})
MODES = ("json", "raw", "bare")
SENDER_WIDTH = 12


def sent_line(reply: Mapping[str, Any], ack_requested: bool) -> str:
    """The ``send`` confirmation (stderr): ``sent id=<last 8> to=<subject minus its first token>
    bytes=N[ ack=requested]``."""
    subject = str(reply.get("subject", ""))
    line = (f"sent id={str(reply.get('id', ''))[-8:]} to={subject.partition('.')[2]} "
            f"bytes={reply.get('bytes', 0)}")
    return line + " ack=requested" if ack_requested else line


def is_tabular(channel: str, uncollared: bool) -> bool:
    """The default rendering is tabular for ``inbox``, ``broadcast`` and uncollared pipes."""
    return uncollared or channel in TABULAR_PIPES


def _badge(priority: Any) -> str:
    return {1: "P1 ", 3: "P3 "}.get(priority, "") if isinstance(priority, int) else ""


def tabular_message(msg: Mapping[str, Any], colour: bool = False) -> str:
    """One message in the tabular form, newline-terminated: ``HH:MM:SS  <sender:12>  <body>``.

    Further payload lines are indented to the body column; an ``ack:`` subject shows
    ``<subject> → <last 8 of in_reply_to>`` instead of the payload.
    """
    sender = str(msg.get("sender") or NO_VALUE)
    head = (paint(local_clock(msg.get("created_at")), DIM, colour) + "  "
            + paint(sender, BOLD_CYAN, colour) + " " * max(SENDER_WIDTH - len(sender), 0) + "  ")
    subject = str(msg.get("subject") or "")
    if subject.startswith("ack:"):
        return f"{head}{subject} → {str(msg.get('in_reply_to') or '')[-8:]}\n"
    body = _badge(msg.get("priority")) + (f"[{subject}] " if subject else "") + str(msg.get("payload", ""))
    indent = " " * (len(NO_CLOCK) + 2 + max(SENDER_WIDTH, len(sender)) + 2)
    first, *rest = body.split("\n")
    lines = [head + first] + [indent + line if line else "" for line in rest]
    return "\n".join(lines) + "\n"


def render_message(msg: Mapping[str, Any], mode: str, tabular: bool, colour: bool = False) -> str:
    """The text written for one ``msg`` event (``mode``: ``json``, ``raw``, ``bare`` or "")."""
    if mode == "json":
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n"
    payload = str(msg.get("payload", ""))
    if mode == "raw":
        return payload
    if mode == "bare" or not tabular:
        return payload + "\n"
    return tabular_message(msg, colour)


def more_unread_line(count: Any) -> str:
    return f"({count} more unread - run again to continue)"


# --- ls (cli.md §2.10) ---------------------------------------------------------------------------

LS_HEADER = ("NAMESPACE", "PIPE", "UNREAD", "BUFFERED", "LAST")
LS_LONG_HEADER = ("TTL", "MAX_MSGS", "MAX_BYTES")
LS_TAIL_HEADER = ("PAYLOAD", "CREATOR")
UNLIMITED = "unlimited"


def _limit(value: Any) -> str:
    if value is None:
        return NO_VALUE
    return UNLIMITED if value == -1 else str(value)


def _ttl(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return NO_VALUE
    return UNLIMITED if value in (0, -1) else format_duration(value)


def list_rows(reply: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """Every pipe row of a List reply as ``(manifold, pipe name, PipeInfo)``, sorted by
    (namespace, pipe) with the root namespace first. Collared names are ``<handle>.<pipe>``."""
    rows: list[tuple[str, str, Mapping[str, Any]]] = []
    for source in reply.get("sources") or ():
        for info in source.get("pipe_infos") or ():
            rows.append((source.get("manifold") or "", f"{source.get('handle', '')}.{info.get('pipe', '')}", info))
    for pipe in reply.get("uncollared_pipes") or ():
        rows.append((pipe.get("manifold") or "", str(pipe.get("name", "")), pipe.get("info") or {}))
    rows.sort(key=lambda r: (r[0] != "", r[0], r[1]))
    return rows


def render_ls(reply: Mapping[str, Any], long: bool = False, now: float | None = None) -> list[str]:
    """The ``ppz ls`` table; the header is always printed."""
    now = time.time() if now is None else now
    header = LS_HEADER + (LS_LONG_HEADER if long else ()) + LS_TAIL_HEADER
    rows: list[Sequence[str]] = [header]
    for manifold, name, info in list_rows(reply):
        row = [manifold or NO_VALUE, name, str(info.get("unread", 0)), str(info.get("total", 0)),
               relative_or_dash(info.get("last_at"), now)]
        if long:
            row += [_ttl(info.get("ttl_seconds")), _limit(info.get("max_msgs")), _limit(info.get("max_bytes"))]
        row += [cell(info.get("preview")), cell(info.get("created_by"))]
        rows.append(row)
    return table(rows)


def row_names(reply: Mapping[str, Any]) -> set[str]:
    """The names a pattern is matched against (ipc.md §7.14 step 8): ``<handle>.<pipe>`` for
    collared rows, ``<manifold>.<name>`` and ``<name>`` for uncollared ones."""
    names = set()
    for source in reply.get("sources") or ():
        for info in source.get("pipe_infos") or ():
            names.add(f"{source.get('handle', '')}.{info.get('pipe', '')}")
    for pipe in reply.get("uncollared_pipes") or ():
        names.add(str(pipe.get("name", "")))
        names.add(qualified(pipe.get("manifold"), pipe.get("name", "")))
    return names


def ls_warnings(patterns: Sequence[str], reply: Mapping[str, Any]) -> list[str]:
    """One stderr warning per literal pattern that matched no row."""
    names = row_names(reply)
    return [
        f'ppz ls: no pipe matches "{p}" — use a glob like "{p}%" to match speculatively'
        for p in patterns
        if is_literal(p) and p not in names
    ]


# --- pipes (cli.md §2.13) ------------------------------------------------------------------------


def pipe_path(reply: Mapping[str, Any]) -> str:
    """``[manifold.]H.NAME`` or ``[manifold.]NAME`` from a PipeCreate/PipeSet/PipeDestroy reply."""
    return qualified(reply.get("manifold"), reply.get("handle"), reply.get("name"))


def retention_text(reply: Mapping[str, Any]) -> str:
    """``retention=ttl=<duration>,msgs=<max_msgs>,bytes=<max_bytes>``."""
    ttl = reply.get("ttl_seconds")
    ttl_text = format_duration(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) else NO_VALUE
    return f"retention=ttl={ttl_text},msgs={reply.get('max_msgs', NO_VALUE)},bytes={reply.get('max_bytes', NO_VALUE)}"


# --- who (cli.md §2.6) ---------------------------------------------------------------------------

WHO_HEADER = ("HANDLE", "STATUS", "HARNESS", "MODEL", "HOST", "OS/ARCH", "CREATED", "OWNER")
LIVENESS_COLOURS = {presence.ONLINE: GREEN, presence.STALE: AMBER, presence.OFFLINE: RED}


def who_entries(reply: Mapping[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    """Every Who entry classified: ``{"handle", "status", "owner", "arrived_at", "heartbeat"}``
    (``heartbeat`` is the payload object, or None when the payload is not a JSON object)."""
    now = time.time() if now is None else now
    out = []
    for entry in reply.get("entries") or ():
        beat = presence.heartbeat_payload(entry.get("payload"))
        arrived = entry.get("arrived_at") or ""
        out.append({
            "handle": str(entry.get("handle", "")),
            "status": presence.classify(arrived, presence.beat_interval(beat), now),
            "owner": str(entry.get("owner") or ""),
            "arrived_at": arrived,
            "heartbeat": beat,
        })
    return out


def filter_who(entries: list[dict[str, Any]], statuses: Sequence[str] = (), harness: str | None = None,
               owner: str | None = None) -> list[dict[str, Any]]:
    """Status filters OR-combined (none = all); ``harness`` and ``owner`` exact, AND-combined."""
    def keep(e: dict[str, Any]) -> bool:
        beat = e["heartbeat"] or {}
        return ((not statuses or e["status"] in statuses)
                and (harness is None or str(beat.get("harness", "")) == harness)
                and (owner is None or e["owner"] == owner))

    return [e for e in entries if keep(e)]


def _os_arch(beat: Mapping[str, Any]) -> str:
    os_name, arch = str(beat.get("os") or ""), str(beat.get("arch") or "")
    if not os_name:
        return NO_VALUE
    return f"{os_name}/{arch}" if arch else os_name


def render_who(entries: list[dict[str, Any]], colour: bool = False, now: float | None = None) -> list[str]:
    """The ``ppz who`` table; the liveness word is coloured (green/amber/red)."""
    now = time.time() if now is None else now
    rows: list[Sequence[str]] = [WHO_HEADER]
    for e in entries:
        beat = e["heartbeat"] or {}
        liveness = e["status"]
        state = str(beat.get("agent_state") or "")
        status = paint(liveness, LIVENESS_COLOURS[liveness], colour)
        if state and liveness != presence.OFFLINE:
            status += f"|{state}"
        rows.append([e["handle"], status, cell(beat.get("harness")), cell(beat.get("model")),
                     cell(beat.get("hostname")), _os_arch(beat),
                     relative_or_dash(beat.get("started_at"), now), cell(e["owner"])])
    return table(rows)


# --- diagnostics (cli.md §2.5) -------------------------------------------------------------------

RECENT_EVENTS = 20
DASH = "—"
DIAG_FOOTER = (
    "→ Full history:  ppz diagnostics --since=1h",
    "→ Bug report:    ppz diagnostics --bundle  (writes ~/ppz-diag-<ts>.tgz)",
)


def _ago_seconds(value: Any, now: float) -> float | None:
    try:
        return now - epoch_seconds(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _whole(seconds: float) -> str:
    """A duration rounded to 1 s (negative counts as 0)."""
    return format_duration(float(max(round(seconds), 0)))


def _diag_nats_line(reply: Mapping[str, Any], now: float) -> str:
    summary = reply.get("summary") or {}
    state = reply.get("nats_state") or summary.get("state") or "unknown"
    since = summary.get("state_since")
    age = _ago_seconds(since, now) if since else None
    paren = DASH if age is None else f"since {local_clock(since)}, {_whole(age)} ago"
    return f"nats: {state}  ({paren})  drops_last_hour={reply.get('nats_drops_last_hour', 0)}"


def _diag_refresh_line(summary: Mapping[str, Any], now: float) -> str:
    last = summary.get("refresh_last_at")
    age = _ago_seconds(last, now) if last else None
    if age is None:
        return f"refresh: {DASH}"
    due = summary.get("refresh_next_due_at")
    until = _ago_seconds(due, now) if due else None
    next_due = DASH if until is None else _whole(-until)
    return f"refresh: last {local_clock(last)} ({_whole(age)} ago), next due in {next_due}"


def event_line(event: Mapping[str, Any]) -> str:
    """``<type:12> <at UTC ms> caller=<caller:28> nc=<id> reason=<JSON string>``."""
    kind = str(event.get("type", ""))
    caller = str(event.get("caller") or "?")
    nc_id = str(event.get("nc_id") or DASH)
    reason = json.dumps(str(event.get("reason") or ""), ensure_ascii=False)
    return f"{kind:<12} {utc_millis(str(event.get('at', '')))} caller={caller:<28} nc={nc_id} reason={reason}"


def render_diagnostics(reply: Mapping[str, Any], since: str = "", now: float | None = None) -> list[str]:
    """The default ``ppz diagnostics`` rendering. ``since`` is the ``--since`` value as typed
    ("" = the ring: only its newest 20 events are shown)."""
    now = time.time() if now is None else now
    summary = reply.get("summary") or {}
    lines = [_diag_nats_line(reply, now), _diag_refresh_line(summary, now), f"url: {summary.get('url') or DASH}"]
    for hit in reply.get("patterns") or ():
        lines += ["", f"⚠ {hit.get('name', '')}  {local_clock(hit.get('at'))}"]
        lines += ["    " + line for line in str(hit.get("detail", "")).split("\n")]
    events = list(reply.get("nats_events") or ())
    if not since:
        events = events[-RECENT_EVENTS:]
    lines.append("")
    if events:
        older = max(int(reply.get("on_disk_count") or 0) - len(events), 0)
        scope = f"--since={since}" if since else "ring"
        lines.append(f"Recent events ({len(events)} shown, scope={scope}, {older} older on disk):")
        lines += [event_line(e) for e in events]
    else:
        lines.append("Recent events: (none)")
    return [*lines, "", *DIAG_FOOTER]
