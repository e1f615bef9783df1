"""Every message the daemon's actors exchange: frozen, slotted dataclasses.

pykka does not copy messages, so everything sent between actors is immutable. Requests
(asks) are proxy method calls; the classes here are the events (tells) and the immutable
snapshots actors hand each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ppz.home import Credentials
    from ppz.serverclient import ExchangeReply


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialSnapshot:
    """The refresh loop's current NATS credential, handed to the connection owner (the JWT and
    the seed are kept out of ``repr``)."""

    jwt: str = field(repr=False)
    seed: str = field(repr=False)
    exp: int
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshView:
    """What the refresh loop publishes for fast, lock-free reads by request handlers."""

    exchanged: bool = False
    exp: int = 0
    lead: float = 0.0
    generation: int = 0
    last_refresh_at: float = 0.0
    timer_armed: bool = False

    def due(self, now: float) -> bool:
        """True when ``now`` is at or past ``exp − lead`` (refresh-now-if-due would refresh)."""
        return now >= self.exp - self.lead


# --- NatsActor inbox -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotate:
    """A new credential from the refresh loop: rotate the live connection in place."""

    snapshot: CredentialSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialChanged:
    """A new credential that needs no rotation (loop start, cold exchange)."""

    snapshot: CredentialSnapshot | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordEvent:
    """Record one event in the NATS event log."""

    type: str
    caller: str = ""
    nc_id: str = ""
    jwt_exp: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientEvent:
    """A nats-py callback fired for connection ``nc_id`` (disconnected/reconnected/closed)."""

    kind: str
    nc_id: str
    caller: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationDue:
    """The 2 s spacing between in-place rotations has passed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeFinished:
    """The failure report's probe finished; ``error`` is empty when it passed."""

    nc_id: str
    cause: str
    error: str


NatsInbox = Rotate | CredentialChanged | RecordEvent | ClientEvent | RotationDue | ProbeFinished


# --- broadcasts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionSwapped:
    """The installed NATS connection was replaced: every follow closes its socket and stops."""

    old_nc_id: str
    new_nc_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityChanged:
    """StateActor's one broadcast: the credential or account changed or disappeared (a login, a
    logout, a reload that finds another identity or none). Refresh, Nats, Heartbeats and
    Cursors each react and answer with the problems they met (``Logout`` reports them).

    ``caller`` names the transition in the event log (``handleLogin``, ``handleLogout``,
    ``watchState-creds-gone``, ``watchState-creds-changed``); ``creds`` is the new identity,
    None when logged out; ``exchange`` is the login's exchange reply (the refresh loop starts
    with it, the NATS URL comes from it); ``remove_cursors`` is set by the ``Logout`` verb,
    which deletes ``cursors/`` with the credential (home.md §6).
    """

    caller: str
    creds: Credentials | None
    exchange: ExchangeReply | None = field(default=None, repr=False)  # it holds the NATS seed
    remove_cursors: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    """The daemon is stopping: close client connections now."""


# --- StateActor inbox --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """Poller tick: compare file signatures and reload on change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reload:
    """SIGHUP: reload the state files unconditionally."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginChecked:
    """A server call's outcome for the login check: ``ok`` or ``invalid``."""

    value: str


StateInbox = Poll | Reload | LoginChecked


# --- HeartbeatsActor inbox ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Beat:
    """One heartbeat: from the presence subscription or a local Send on ``heartbeat``."""

    handle: str
    account_id: str
    payload: str
    arrived_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatRow:
    """One row of the heartbeat cache."""

    handle: str
    account_id: str
    payload: str
    arrived_at: float


# --- RefreshActor inbox ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshTick:
    """The refresh timer of loop ``loop_id`` fired."""

    loop_id: int


# --- FollowActor inbox -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowDelivery:
    """One live message for a follow: its stream sequence and body."""

    seq: int
    data: bytes


# --- CursorsActor inbox ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Advance:
    """Move the cursor ``key`` of ``session`` to ``seq`` (stream created at ``created``)."""

    session: str
    key: str
    seq: int
    created: int


# --- StateActor inbox: the streams a lookup found ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSeen:
    """A lookup on connection ``nc_id`` found ``stream``: the warm Send path may skip it."""

    nc_id: str
    stream: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamGone:
    """A publish on connection ``nc_id`` found no ``stream`` (destroyed elsewhere)."""

    nc_id: str
    stream: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsForgotten:
    """This daemon destroyed a source or pipe: forget every stream seen."""


StreamNews = StreamSeen | StreamGone | StreamsForgotten
