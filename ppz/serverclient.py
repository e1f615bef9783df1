"""The daemon's HTTP client to ppz-server (spec/ipc.md §6–7, daemon.md §3–4, server-api.md).

Two kinds of call:

- :meth:`ServerClient.exchange` trades an API key for a NATS user credential. It carries no
  bearer and no ``?org=``; its failures are :class:`ExchangeError`, which also tells the refresh
  loop whether the key was refused (*unauthorized*); every other failure is worth a retry.
- :meth:`ServerClient.call` is every other route, under the server-call rules of ipc.md §6. Each
  call tells the daemon what it learnt about the key through the ``on_login_check`` listener;
  the typed wrappers (``list_sources``, ``create_source``, …) are built on it.

Requests go straight to one shared :class:`requests.adapters.HTTPAdapter`: its urllib3 pool is
thread-safe, so any number of threads may call at once. A ``requests.Session`` is left out on
purpose: it would add ``~/.netrc`` credentials (which replace the bearer header), follow
redirects (turning a POST into a bodiless GET) and read proxy settings for loopback hosts.
No pykka and no NATS here.
"""

from __future__ import annotations

import http
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urlencode, urlsplit

import orjson
import requests
import requests.adapters
import requests.utils

from ppz.errors import (
    E_HTTP,
    E_INVALID_API_KEY,
    E_PROTOCOL,
    E_SERVER_UNREACHABLE,
    PpzError,
)
from ppz.names import KIND_MESSAGE
from ppz.timestamps import epoch_seconds

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
EXCHANGE_PATH = "/api/v1/auth/exchange"
SOURCES_PATH = "/api/v1/sources"
PIPES_PATH = "/api/v1/pipes"
USER_AGENT = "ppz-daemon"

LOGIN_OK = "ok"
LOGIN_INVALID = "invalid"

NO_ACCOUNT_ID = "auth/exchange reply has no account_id"


class ServerCredentials(Protocol):
    """What a server call needs from a credential (``ppz.home.Credentials`` fits)."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    @property
    def account_id(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginCheck:
    """What a server call learnt about an API key (ipc.md §6): ``ok`` after any 2xx reply,
    ``invalid`` after an ``E_INVALID_API_KEY`` error. ``url`` and ``api_key`` name the
    credential the call used, so a late reply for a replaced credential can be ignored."""

    value: str
    url: str
    api_key: str


LoginCheckListener = Callable[[LoginCheck], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeReply:
    """A successful ``POST /api/v1/auth/exchange`` (server-api.md §3). Times are unix seconds;
    ``received_at`` is when the reply arrived, from which the refresh lead is measured. The JWT
    and the seed are kept out of ``repr``."""

    nats_user_jwt: str = field(repr=False)
    nats_user_seed: str = field(repr=False)
    expires_at: float
    received_at: float
    nats_url: str
    account_id: str
    account_name: str

    @classmethod
    def from_json(cls, obj: object, *, received_at: float) -> ExchangeReply:
        """Decode the reply object; unknown fields are ignored. PpzError ``E_PROTOCOL`` when it
        is not an object, a field has the wrong type, ``account_id`` is empty or ``expires_at``
        is not an RFC 3339 time."""
        what = "auth/exchange reply"
        reply = _json_object(obj, what)
        account_id = _text(reply, "account_id", what)
        if not account_id:
            raise PpzError(E_PROTOCOL, NO_ACCOUNT_ID)
        expires_at = _text(reply, "expires_at", what)
        try:
            expires = epoch_seconds(expires_at)
        except ValueError:
            raise _malformed(what, f"invalid expires_at {expires_at!r}") from None
        return cls(
            nats_user_jwt=_text(reply, "nats_user_jwt", what),
            nats_user_seed=_text(reply, "nats_user_seed", what),
            expires_at=expires,
            received_at=received_at,
            nats_url=_text(reply, "nats_url", what),
            account_id=account_id,
            account_name=_text(reply, "account_name", what),
        )


class ExchangeError(PpzError):
    """A failed credential exchange.

    ``code``/``message`` follow the Login mapping (ipc.md §7.2). For the refresh loop
    (daemon.md §3): ``unauthorized`` is true for 401/403 and every other failure is
    ``transient``; ``reason`` is ``auth/exchange: HTTP <n>`` for a non-200 reply, the transport
    error text for a transport failure, and the message for a bad 200 reply. ``status`` is the
    HTTP status of a non-200 reply, else None.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        reason: str,
        unauthorized: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.reason = reason
        self.unauthorized = unauthorized
        self.status = status

    def for_cold_exchange(self) -> PpzError:
        """The error as ensure-NATS reports a cold exchange (daemon.md §4): a refused key stays
        ``E_INVALID_API_KEY``, every other non-200 reply becomes ``E_SERVER_UNREACHABLE``."""
        if self.status is not None and not self.unauthorized:
            return PpzError(E_SERVER_UNREACHABLE)
        return self

    def __repr__(self) -> str:
        return f"ExchangeError({self.code!r}, {self.message!r}, reason={self.reason!r})"


class PipeCreator(NamedTuple):
    """One ``pipe_infos`` row of a source: a stored pipe and who created it."""

    pipe: str
    created_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """A source object of ``GET /api/v1/sources`` (server-api.md §4). ``pipes`` lists only the
    stored pipes; auto-pipes follow from ``kind``."""

    handle: str
    manifold: str = ""
    kind: str = KIND_MESSAGE
    created_by: str = ""
    pipes: tuple[str, ...] = ()
    pipe_infos: tuple[PipeCreator, ...] = ()

    @classmethod
    def from_json(cls, obj: object) -> SourceInfo:
        """Decode a source object; omitted fields read as empty (``kind`` as ``message``).
        PpzError ``E_PROTOCOL`` on a missing handle or a field of the wrong type."""
        what = "source"
        source = _json_object(obj, what)
        infos = []
        for item in _items(source, "pipe_infos", what):
            info = _json_object(item, "pipe_infos row")
            infos.append(PipeCreator(_required_text(info, "pipe", what), _text(info, "created_by", what)))
        pipes = []
        for pipe in _items(source, "pipes", what):
            if not isinstance(pipe, str):
                raise _malformed(what, "pipes holds a non-string")
            pipes.append(pipe)
        return cls(
            handle=_required_text(source, "handle", what),
            manifold=_text(source, "manifold", what),
            kind=_text(source, "kind", what) or KIND_MESSAGE,
            created_by=_text(source, "created_by", what),
            pipes=tuple(pipes),
            pipe_infos=tuple(infos),
        )

    def to_json(self) -> dict[str, object]:
        """The server's source object; empty optional fields are omitted."""
        obj = _nonempty(
            handle=self.handle, manifold=self.manifold, kind=self.kind, created_by=self.created_by
        )
        if self.pipes:
            obj["pipes"] = list(self.pipes)
        if self.pipe_infos:
            obj["pipe_infos"] = [_nonempty(pipe=i.pipe, created_by=i.created_by) for i in self.pipe_infos]
        return obj


@dataclass(frozen=True, slots=True, kw_only=True)
class UncollaredPipe:
    """A row of ``GET /api/v1/pipes``: an uncollared pipe at a manifold (root = ``""``)."""

    name: str
    manifold: str = ""
    created_by: str = ""

    @classmethod
    def from_json(cls, obj: object) -> UncollaredPipe:
        """Decode a row; PpzError ``E_PROTOCOL`` on a missing name or a wrong type."""
        what = "uncollared pipe"
        row = _json_object(obj, what)
        return cls(
            name=_required_text(row, "name", what),
            manifold=_text(row, "manifold", what),
            created_by=_text(row, "created_by", what),
        )

    def to_json(self) -> dict[str, object]:
        """The server's row; empty optional fields are omitted."""
        return _nonempty(manifold=self.manifold, name=self.name, created_by=self.created_by)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipeSpec:
    """A pipe write (ipc.md §7.16): the name, the manifold and the retention fields that are
    set. ``None`` = not set (omitted from the body); every other value, 0 included, is sent."""

    name: str
    manifold: str = ""
    ttl_seconds: int | None = None
    max_msgs: int | None = None
    max_bytes: int | None = None

    def to_json(self, handle: str) -> dict[str, object]:
        """The request body for ``handle`` (``""`` = uncollared): exactly the documented fields."""
        body: dict[str, object] = {"handle": handle, "manifold": self.manifold, "name": self.name}
        for name, value in (
            ("ttl_seconds", self.ttl_seconds),
            ("max_msgs", self.max_msgs),
            ("max_bytes", self.max_bytes),
        ):
            if value is not None:
                body[name] = value
        return body


class ServerClient:
    """HTTP calls to ppz-server, safe to use from several threads at once.

    ``timeout`` bounds connecting and each wait for reply bytes (5 s by the spec).
    ``on_login_check`` receives a :class:`LoginCheck` after every :meth:`call` that settles the
    login check; the exchange never reports one (Login sets ``ok`` itself and a failed Login
    must leave the daemon untouched). A listener that raises is logged and ignored.
    """

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, *, on_login_check: LoginCheckListener | None = None
    ) -> None:
        self.timeout = timeout
        self._on_login_check = on_login_check
        self._adapter = requests.adapters.HTTPAdapter(pool_maxsize=32, max_retries=0)

    def close(self) -> None:
        """Close pooled connections. The client stays usable and reconnects when called."""
        self._adapter.close()

    # -- credential exchange (ipc.md §7.2, daemon.md §3–4) --------------------------------------

    def exchange(self, url: str, api_key: str, account_id: str = "") -> ExchangeReply:
        """``POST <url>/api/v1/auth/exchange`` with ``{"api_key"}`` plus ``"account_id"`` when
        non-empty; no bearer, no ``?org=``. Raises :class:`ExchangeError`."""
        body = {"api_key": api_key}
        if account_id:
            body["account_id"] = account_id
        try:
            reply = self._send("POST", _join(url, EXCHANGE_PATH), {}, body)
        except _TransportFailure as exc:
            raise ExchangeError(E_SERVER_UNREACHABLE, reason=exc.text) from exc
        if reply.status != 200:
            raise _exchange_status_error(reply)
        try:
            return ExchangeReply.from_json(_decode(reply.content), received_at=reply.received_at)
        except PpzError as exc:
            raise ExchangeError(exc.code, exc.message, reason=exc.message) from exc
        except orjson.JSONDecodeError as exc:
            message = f"auth/exchange reply: {exc}"
            raise ExchangeError(E_PROTOCOL, message, reason=message) from exc

    # -- authenticated calls (ipc.md §6) ---------------------------------------------------------

    def call(
        self,
        base_url: str,
        api_key: str,
        account_id: str,
        method: str,
        path: str,
        body: Mapping[str, object] | None = None,
    ) -> Any:
        """One server call under ipc.md §6; returns the decoded JSON reply, or None for an empty
        2xx body (204).

        ``path`` starts with ``/`` and is already percent-encoded; ``?org=<account_id>`` (or
        ``&org=``) is appended when ``account_id`` is non-empty. Raises PpzError:
        ``E_SERVER_UNREACHABLE`` on a transport failure or timeout; the server's error envelope
        verbatim; ``E_HTTP`` ``HTTP <status> <reason>`` for any other non-2xx reply (redirects
        are not followed); ``E_PROTOCOL`` for an undecodable 2xx body. The login check goes to
        ``ok`` on any 2xx and to ``invalid`` on an ``E_INVALID_API_KEY`` envelope.
        """
        url = _join(base_url, path)
        if account_id:
            url += ("&" if "?" in path else "?") + urlencode({"org": account_id})
        try:
            reply = self._send(method, url, {"Authorization": f"Bearer {api_key}"}, body)
        except _TransportFailure as exc:
            logger.debug("server call failed: %s", exc.text)
            raise PpzError(E_SERVER_UNREACHABLE) from exc
        if 200 <= reply.status < 300:
            self._report(LOGIN_OK, base_url, api_key)
            if not reply.content.strip():
                return None
            try:
                return _decode(reply.content)
            except orjson.JSONDecodeError as exc:
                raise PpzError(E_PROTOCOL, f"{method} {path}: undecodable reply: {exc}") from None
        error = _envelope(reply.content) if reply.status >= 400 else None
        if error is None:
            raise PpzError(E_HTTP, reply.status_text)
        if error.code == E_INVALID_API_KEY:
            self._report(LOGIN_INVALID, base_url, api_key)
        raise error

    # -- typed routes (server-api.md §4) ---------------------------------------------------------

    def list_sources(self, creds: ServerCredentials) -> list[SourceInfo]:
        """``GET /api/v1/sources``: every source of the account, ordered by (manifold, handle)."""
        reply = _json_object(self._call(creds, "GET", SOURCES_PATH), "GET /api/v1/sources reply")
        return [SourceInfo.from_json(item) for item in _items(reply, "sources", "GET /api/v1/sources")]

    def get_source(self, creds: ServerCredentials, handle: str) -> SourceInfo:
        """``GET /api/v1/sources/{handle}``."""
        return SourceInfo.from_json(self._call(creds, "GET", _source_path(handle)))

    def create_source(
        self, creds: ServerCredentials, handle: str, kind: str, manifold: str
    ) -> dict[str, Any]:
        """``POST /api/v1/sources`` ``{"handle","kind","manifold"}``; the server's 201 reply
        (``id``, ``handle``, ``manifold``?, ``kind``, ``subject``, ``created_at``)."""
        body = {"handle": handle, "kind": kind, "manifold": manifold}
        return self._call_for_object(creds, "POST", SOURCES_PATH, body)

    def ensure_pty(self, creds: ServerCredentials, handle: str) -> dict[str, Any]:
        """``POST /api/v1/sources/{handle}/ensure-pty`` with ``{}``; reply as :meth:`create_source`."""
        return self._call_for_object(creds, "POST", _source_path(handle, "ensure-pty"), {})

    def delete_source(self, creds: ServerCredentials, handle: str) -> None:
        """``DELETE /api/v1/sources/{handle}``."""
        self._call(creds, "DELETE", _source_path(handle))

    def create_pipe(self, creds: ServerCredentials, handle: str, spec: PipeSpec) -> dict[str, Any]:
        """``POST /api/v1/sources/{handle}/pipes``; the server's pipe reply (ipc.md §7.16)."""
        return self._call_for_object(creds, "POST", _source_path(handle, "pipes"), spec.to_json(handle))

    def set_pipe(self, creds: ServerCredentials, handle: str, spec: PipeSpec) -> dict[str, Any]:
        """``PATCH /api/v1/sources/{handle}/pipes/{name}``; the server's pipe reply."""
        path = _source_path(handle, "pipes", spec.name)
        return self._call_for_object(creds, "PATCH", path, spec.to_json(handle))

    def delete_pipe(self, creds: ServerCredentials, handle: str, name: str) -> None:
        """``DELETE /api/v1/sources/{handle}/pipes/{name}``."""
        self._call(creds, "DELETE", _source_path(handle, "pipes", name))

    def create_uncollared(self, creds: ServerCredentials, spec: PipeSpec) -> dict[str, Any]:
        """``POST /api/v1/pipes`` with ``"handle": ""``; the server's pipe reply."""
        return self._call_for_object(creds, "POST", PIPES_PATH, spec.to_json(""))

    def set_uncollared(self, creds: ServerCredentials, spec: PipeSpec) -> dict[str, Any]:
        """``PATCH /api/v1/pipes``, addressed by the body's ``manifold`` and ``name``."""
        return self._call_for_object(creds, "PATCH", PIPES_PATH, spec.to_json(""))

    def delete_uncollared(self, creds: ServerCredentials, name: str, manifold: str = "") -> None:
        """``DELETE /api/v1/pipes?name=<n>[&manifold=<m>]``."""
        query = {"name": name, "manifold": manifold} if manifold else {"name": name}
        self._call(creds, "DELETE", f"{PIPES_PATH}?{urlencode(query)}")

    def list_pipes(self, creds: ServerCredentials) -> list[UncollaredPipe]:
        """``GET /api/v1/pipes``: the account's uncollared pipes, ordered by (manifold, name)."""
        reply = _json_object(self._call(creds, "GET", PIPES_PATH), "GET /api/v1/pipes reply")
        return [UncollaredPipe.from_json(item) for item in _items(reply, "pipes", "GET /api/v1/pipes")]

    # -- internals -------------------------------------------------------------------------------

    def _call(
        self, creds: ServerCredentials, method: str, path: str, body: Mapping[str, object] | None = None
    ) -> Any:
        return self.call(creds.url, creds.api_key, creds.account_id, method, path, body)

    def _call_for_object(
        self, creds: ServerCredentials, method: str, path: str, body: Mapping[str, object]
    ) -> dict[str, Any]:
        return _json_object(self._call(creds, method, path, body), f"{method} {path} reply")

    def _report(self, value: str, url: str, api_key: str) -> None:
        if self._on_login_check is None:
            return
        try:
            self._on_login_check(LoginCheck(value=value, url=url, api_key=api_key))
        except Exception:
            logger.exception("login check listener failed")

    def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: Mapping[str, object] | None
    ) -> _Reply:
        """One request/reply; raises _TransportFailure when no complete reply arrives."""
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            all_headers["Content-Type"] = "application/json"
        try:
            prepared = requests.Request(method, url, headers=all_headers, data=data).prepare()
            response = self._adapter.send(prepared, timeout=self.timeout, proxies=_proxies_for(url))
            content = response.content
        except (requests.RequestException, ValueError) as exc:
            raise _TransportFailure(_transport_text(method, url, exc, self.timeout)) from exc
        return _Reply(
            status=response.status_code,
            reason=response.reason or "",
            content=content or b"",
            received_at=time.time(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reply:
    status: int
    reason: str
    content: bytes
    received_at: float

    @property
    def status_text(self) -> str:
        """``HTTP <status> <reason>``, the reason phrase as the server sent it (else the standard
        phrase)."""
        reason = self.reason
        if not reason:
            try:
                reason = http.HTTPStatus(self.status).phrase
            except ValueError:
                return f"HTTP {self.status}"
        return f"HTTP {self.status} {reason}"


class _TransportFailure(Exception):
    """No complete HTTP reply: connect error, timeout, reset, bad URL."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _exchange_status_error(reply: _Reply) -> ExchangeError:
    """Classify a non-200 exchange reply (ipc.md §7.2, daemon.md §3)."""
    status = reply.status
    reason = f"auth/exchange: HTTP {status}"
    envelope = _envelope(reply.content)
    if status in (401, 403):
        message = envelope.message if envelope is not None else None
        return ExchangeError(E_INVALID_API_KEY, message, reason=reason, unauthorized=True, status=status)
    if status == 429 or 500 <= status <= 599:
        return ExchangeError(E_SERVER_UNREACHABLE, reason=reason, status=status)
    if envelope is not None:
        return ExchangeError(envelope.code, envelope.message, reason=reason, status=status)
    return ExchangeError(E_HTTP, reply.status_text, reason=reason, status=status)


def _decode(content: bytes) -> Any:
    return orjson.loads(content)


def _envelope(content: bytes) -> PpzError | None:
    """The server's ``{"error":{"code","message"}}`` with a non-empty code, else None."""
    try:
        return PpzError.from_json(_decode(content))
    except orjson.JSONDecodeError:
        return None


def _join(base_url: str, path: str) -> str:
    """``<url><path>``; a trailing ``/`` on the stored URL does not double the slash."""
    return base_url.rstrip("/") + path


def _source_path(handle: str, *rest: str) -> str:
    """``/api/v1/sources/{handle}[/…]`` with every segment percent-encoded."""
    return "/".join([SOURCES_PATH, *(quote(segment, safe="") for segment in (handle, *rest))])


def _proxies_for(url: str) -> dict[str, str]:
    """Proxies from the environment (``HTTP_PROXY``, ``NO_PROXY``…), never for a loopback host,
    as Go's ``ProxyFromEnvironment`` does."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return {}
    try:
        if ipaddress.ip_address(host).is_loopback:
            return {}
    except ValueError:
        pass
    return requests.utils.get_environ_proxies(url)


def _transport_text(method: str, url: str, exc: BaseException, timeout: float) -> str:
    """``<METHOD> <url>: <cause>``, with the innermost cause (``Connection refused``) rather
    than the layers of urllib3 wrapping around it."""
    if isinstance(exc, requests.Timeout):
        return f"{method} {url}: timeout after {timeout:g}s"
    cause: BaseException = exc
    for _ in range(16):
        inner = cause.__cause__ or cause.__context__ or getattr(cause, "reason", None)
        if not isinstance(inner, BaseException):
            break
        cause = inner
    if isinstance(cause, OSError) and cause.strerror:
        return f"{method} {url}: {cause.strerror}"
    return f"{method} {url}: {cause}"


def _malformed(what: str, detail: str) -> PpzError:
    return PpzError(E_PROTOCOL, f"malformed {what}: {detail}")


def _json_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(what, "not a JSON object")
    return value


def _text(obj: Mapping[str, object], key: str, what: str) -> str:
    """A string field; absent or ``null`` reads as ``""``."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(what, f"{key} is not a string")
    return value


def _required_text(obj: Mapping[str, object], key: str, what: str) -> str:
    value = _text(obj, key, what)
    if not value:
        raise _malformed(what, f"no {key}")
    return value


def _items(obj: Mapping[str, object], key: str, what: str) -> list[object]:
    """A list field; absent or ``null`` reads as empty."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(what, f"{key} is not a list")
    return value


def _nonempty(**fields: str) -> dict[str, object]:
    return {key: value for key, value in fields.items() if value}
