"""Server-side console sessions: a random id in an HttpOnly, SameSite=Strict cookie maps to the
account and key that signed in, and to the session's CSRF token. Sessions live in this process
only (a restart signs everyone out) and end on sign-out, after an idle hour or a day, and as
soon as the key that opened them is revoked. The API key itself is never kept."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

COOKIE = "ppz_console"
IDLE_SECONDS = 3600.0
MAX_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    id: str
    account_id: str
    account_name: str
    principal: str
    key_id: int
    csrf: str
    created: float
    seen: float

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())


class Sessions:
    """The table of live sessions. Used from the event loop only (no lock needed)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def open(self, *, account_id: str, account_name: str, principal: str, key_id: int) -> Session:
        now = self._clock()
        self._expire(now)
        session = Session(
            id=secrets.token_urlsafe(32),
            account_id=account_id,
            account_name=account_name,
            principal=principal,
            key_id=key_id,
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value (its idle timer restarts), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        now = self._clock()
        if session is None:
            return None
        if now - session.seen > IDLE_SECONDS or now - session.created > MAX_SECONDS:
            self._sessions.pop(session_id, None)
            return None
        session = replace(session, seen=now)
        self._sessions[session_id] = session
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def close_key(self, key_id: int) -> None:
        """End every session opened with this key (it was revoked)."""
        for sid in [s.id for s in self._sessions.values() if s.key_id == key_id]:
            self._sessions.pop(sid, None)

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values()
                    if now - s.seen > IDLE_SECONDS or now - s.created > MAX_SECONDS]:
            self._sessions.pop(sid, None)
