"""The semantics of every HTTP route: decoding, checks in the spec's order, store and stream
effects, reply shapes (spec/server-api.md §1–4). Transport-free: ``httpapi`` feeds it bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ppz import errors, names
from ppz.errors import PpzError
from ppz.server import wire
from ppz.server.apikeys import KEY_PREFIX, KeyVerifier, Principal
from ppz.server.settings import rfc3339
from ppz.server.store import Account, Pipe, Source, Store
from ppz.server.streams import RETENTION_FIELDS, PipeRef, Retention, invalid_retention_field
from ppz.server.tenants import Tenants, source_streams, uncollared_ref

logger = logging.getLogger(__name__)

EXCHANGE_FIELDS = frozenset({"api_key", "account_id"})
SOURCE_FIELDS = frozenset({"handle", "kind", "manifold"})
PIPE_FIELDS = frozenset({"handle", "source_handle", "manifold", "name", *RETENTION_FIELDS})
JWT_PLACEHOLDER = "stub-jwt-not-yet-issued"
PIPE_SET_EMPTY = "pipe set: name at least one of --ttl, --max-msgs, --max-bytes"

Json = dict[str, Any]


def invalid_api_key(message: str = "invalid api key") -> PpzError:
    return PpzError(errors.E_INVALID_API_KEY, message)


def host_without_port(host: str) -> str:
    """The Host header without its port; IPv6 literals keep their brackets."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    if ":" in host:
        return f"[{host}]"
    return host


def _omit_empty(obj: Json, *keys: str) -> Json:
    """Drop ``keys`` whose value is empty (the ``name?`` convention)."""
    return {k: v for k, v in obj.items() if k not in keys or v}


def _check_manifold(manifold: str) -> None:
    segment = names.invalid_manifold_segment(manifold)
    if segment is not None:
        raise errors.manifold_segment_invalid(segment)


def _check_pipe_name(name: str, *, creating: bool) -> None:
    if not names.valid_name(name):
        raise errors.pipe_name_invalid(name)
    if creating and name in names.RESERVED_PIPES_FOR_CREATE:
        raise errors.pipe_name_reserved(name)


def _retention(obj: Json) -> Retention:
    """The retention fields of a pipe body, type- and range-checked."""
    values = {
        f: wire.optional_int(obj, f, PpzError(errors.E_INVALID_PIPE, f"invalid retention: {f}"))
        for f in RETENTION_FIELDS
    }
    retention = Retention(**values)
    bad = invalid_retention_field(retention)
    if bad is not None:
        raise PpzError(errors.E_INVALID_PIPE, f"invalid retention: {bad}")
    return retention


def _pipe_body(body: bytes) -> tuple[Json, str, str]:
    """A decoded pipe-write body with its ``name`` and ``manifold``; every string field is
    type-checked even where the route ignores it."""
    obj = wire.decode_object(body, allowed=PIPE_FIELDS, code=errors.E_INVALID_PIPE)
    for key in ("handle", "source_handle"):
        wire.optional_str(obj, key, errors.E_INVALID_PIPE)
    name = wire.optional_str(obj, "name", errors.E_INVALID_PIPE)
    manifold = wire.optional_str(obj, "manifold", errors.E_INVALID_PIPE)
    return obj, name, manifold


def _reject_collared_fields(obj: Json, name: str) -> None:
    if obj.get("handle") or obj.get("source_handle"):
        raise PpzError(
            errors.E_INVALID_PIPE,
            f"'{name}' is the uncollared (sourceless) endpoint; use /api/v1/sources/{{handle}}/pipes",
        )


def _uncollared_body(body: bytes, *, creating: bool) -> tuple[str, str, Retention]:
    """Name, manifold and retention of an uncollared pipe write, checked in the spec's order;
    a set (``creating`` false) needs at least one retention field."""
    obj, name, manifold = _pipe_body(body)
    _reject_collared_fields(obj, name)
    _check_pipe_name(name, creating=creating)
    _check_manifold(manifold)
    retention = _retention(obj)
    if not creating:
        _require_retention(retention)
    return name, manifold, retention


def _require_retention(retention: Retention) -> None:
    if retention.is_empty():
        raise PpzError(errors.E_INVALID_PIPE, PIPE_SET_EMPTY)


def pipe_reply(account: Account, ref: PipeRef, retention: Retention) -> Json:
    r = retention.resolved()
    reply: Json = {"handle": ref.handle}
    if ref.manifold:
        reply["manifold"] = ref.manifold
    return reply | {
        "name": ref.name,
        "stream_name": ref.stream_name(account.id),
        "ttl_seconds": r.ttl_seconds,
        "max_msgs": r.max_msgs,
        "max_bytes": r.max_bytes,
    }


def source_created_reply(account: Account, source: Source) -> Json:
    """The shape of ``POST /api/v1/sources`` (and ensure-pty)."""
    return _omit_empty(
        {
            "id": source.id,
            "handle": source.handle,
            "manifold": source.manifold,
            "kind": source.kind,
            "subject": names.subject(account.id, source.manifold, source.handle, "inbox"),
            "created_at": source.created_at,
        },
        "manifold",
    )


def source_object(source: Source, rows: Sequence[Pipe]) -> Json:
    """A source as the list and get routes show it."""
    return _omit_empty(
        {
            "handle": source.handle,
            "manifold": source.manifold,
            "kind": source.kind,
            "created_by": source.created_by,
            "pipes": [p.name for p in rows],
            "pipe_infos": [
                _omit_empty({"pipe": p.name, "created_by": p.created_by}, "created_by") for p in rows
            ],
        },
        "manifold",
        "created_by",
        "pipes",
        "pipe_infos",
    )


class ControlPlane:
    """One method per route. Methods raise :class:`PpzError` for every spec'd failure."""

    def __init__(
        self,
        *,
        store: Store,
        tenants: Tenants,
        verifier: KeyVerifier,
        jwt_ttl: int,
        nats_public_url: str,
        nats_port: int,
        default_nats_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._tenants = tenants
        self._verifier = verifier
        self._jwt_ttl = jwt_ttl
        self._nats_public_url = nats_public_url
        self._nats_port = nats_port
        self._default_nats_host = default_nats_host
        self._clock = clock

    def _now(self) -> str:
        return rfc3339(self._clock())

    # --- auth ------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <key>`` header, else 401."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
            raise invalid_api_key()
        principal = self._verifier.verify(token)
        if principal is None:
            raise invalid_api_key()
        return principal

    def nats_url(self, host: str | None) -> str:
        if self._nats_public_url:
            return self._nats_public_url
        return f"nats://{host_without_port(host or '') or self._default_nats_host}:{self._nats_port}"

    def exchange(self, body: bytes, host: str | None) -> Json:
        """``POST /api/v1/auth/exchange``."""
        try:
            obj = wire.decode_object(body, allowed=EXCHANGE_FIELDS, code=errors.E_INVALID_API_KEY)
            account_id = wire.optional_str(obj, "account_id", errors.E_INVALID_API_KEY)
        except PpzError:
            raise invalid_api_key() from None
        principal = self._verifier.verify(obj.get("api_key"))
        if principal is None:
            raise invalid_api_key()
        if account_id and account_id != principal.account_id:
            raise invalid_api_key("api key is not for this account")
        account = self._tenants.ensure(principal.account_id)
        credential = self._tenants.mint_user(account, self._jwt_ttl)
        return {
            "jwt": JWT_PLACEHOLDER,
            "nats_url": self.nats_url(host),
            "account_id": account.id,
            "account_name": account.name,
            "expires_at": rfc3339(credential.expires),
            "nats_user_jwt": credential.jwt,
            "nats_user_seed": credential.seed,
        }

    # --- sources ---------------------------------------------------------------------------

    def _source(self, account: Account, handle: str) -> Source:
        source = self._store.source(account.id, handle)
        if source is None:
            raise errors.source_not_found(handle)
        return source

    def create_source(self, principal: Principal, body: bytes) -> Json:
        """``POST /api/v1/sources``."""
        obj = wire.decode_object(body, allowed=SOURCE_FIELDS, code=errors.E_INVALID_HANDLE)
        handle = wire.optional_str(obj, "handle", errors.E_INVALID_HANDLE)
        kind = wire.optional_str(obj, "kind", errors.E_INVALID_HANDLE) or names.KIND_MESSAGE
        manifold = wire.optional_str(obj, "manifold", errors.E_INVALID_HANDLE)
        if not names.valid_handle(handle):
            raise errors.invalid_handle(handle)
        _check_manifold(manifold)
        if kind not in names.KINDS:
            raise errors.invalid_kind(kind)
        account = self._tenants.ensure(principal.account_id)
        source = self._store.create_source(
            account_id=account.id,
            handle=handle,
            manifold=manifold,
            kind=kind,
            created_by=principal.name,
            now=self._now(),
        )
        targets = source_streams(source, [])
        try:
            self._tenants.upsert_streams(account, targets)
        except PpzError:
            self._store.delete_source(source.id)
            self._tenants.delete_streams(account, [ref for ref, _ in targets])
            raise
        return source_created_reply(account, source)

    def list_sources(self, principal: Principal) -> Json:
        """``GET /api/v1/sources``."""
        account = self._tenants.ensure(principal.account_id)
        rows = self._store.collared_pipes(account.id)
        return {"sources": [source_object(s, rows.get(s.id, [])) for s in self._store.sources(account.id)]}

    def get_source(self, principal: Principal, handle: str) -> Json:
        """``GET /api/v1/sources/{handle}``."""
        account = self._tenants.ensure(principal.account_id)
        source = self._source(account, handle)
        return source_object(source, self._store.pipes_of(source.id))

    def delete_source(self, principal: Principal, handle: str) -> None:
        """``DELETE /api/v1/sources/{handle}``: the rows, then (best-effort) every stream."""
        if not names.valid_name(handle):
            raise errors.invalid_handle(handle)
        account = self._tenants.ensure(principal.account_id)
        source = self._source(account, handle)
        rows = self._store.pipes_of(source.id)
        self._store.delete_source(source.id)
        self._tenants.delete_streams(account, [ref for ref, _ in source_streams(source, rows)])

    def ensure_pty(self, principal: Principal, handle: str) -> Json:
        """``POST /api/v1/sources/{handle}/ensure-pty``: kind ``pty`` and all its auto-pipe
        streams, each with its resolved retention."""
        account = self._tenants.ensure(principal.account_id)
        source = self._source(account, handle)
        if source.kind != names.KIND_PTY:
            self._store.set_kind(source.id, names.KIND_PTY)
            source = self._source(account, handle)
        auto = set(names.auto_pipes(names.KIND_PTY))
        targets = [t for t in source_streams(source, self._store.pipes_of(source.id)) if t[0].name in auto]
        self._tenants.upsert_streams(account, targets)
        return source_created_reply(account, source)

    # --- collared pipes --------------------------------------------------------------------

    def create_pipe(self, principal: Principal, handle: str, body: bytes) -> Json:
        """``POST /api/v1/sources/{handle}/pipes``."""
        obj, name, _ = _pipe_body(body)
        _check_pipe_name(name, creating=True)
        retention = _retention(obj)
        account = self._tenants.ensure(principal.account_id)
        source = self._source(account, handle)
        if name in names.auto_pipes(source.kind):
            raise errors.pipe_taken(name, source.handle)
        pipe = self._store.create_collared_pipe(
            source, name=name, created_by=principal.name, retention=retention, now=self._now()
        )
        ref = PipeRef(manifold=source.manifold, handle=source.handle, name=name)
        try:
            self._tenants.upsert_streams(account, [(ref, pipe.retention)])
        except PpzError:
            self._store.delete_collared_pipe(source.id, name)
            raise
        return pipe_reply(account, ref, pipe.retention)

    def set_pipe(self, principal: Principal, handle: str, name: str, body: bytes) -> Json:
        """``PATCH /api/v1/sources/{handle}/pipes/{name}``: retention of a custom or auto-pipe."""
        obj, _, _ = _pipe_body(body)
        _check_pipe_name(name, creating=False)
        retention = _retention(obj)
        _require_retention(retention)
        account = self._tenants.ensure(principal.account_id)
        source = self._source(account, handle)
        pipe = self._store.set_collared_retention(
            source,
            name=name,
            retention=retention,
            create=name in names.auto_pipes(source.kind),
            created_by=source.created_by,
            now=self._now(),
        )
        if pipe is None:
            raise errors.pipe_not_found(name, source.handle)
        ref = PipeRef(manifold=source.manifold, handle=source.handle, name=name)
        self._tenants.upsert_streams(account, [(ref, pipe.retention)])
        return pipe_reply(account, ref, pipe.retention)

    def delete_pipe(self, principal: Principal, handle: str, name: str) -> None:
        """``DELETE /api/v1/sources/{handle}/pipes/{name}``."""
        account = self._tenants.ensure(principal.account_id)
        source = self._source(account, handle)
        deleted = self._store.delete_collared_pipe(source.id, name)
        if not deleted and name not in names.auto_pipes(source.kind):
            raise errors.pipe_not_found(name, source.handle)
        self._tenants.delete_streams(
            account, [PipeRef(manifold=source.manifold, handle=source.handle, name=name)]
        )

    # --- uncollared pipes ------------------------------------------------------------------

    def create_uncollared(self, principal: Principal, body: bytes) -> Json:
        """``POST /api/v1/pipes``."""
        name, manifold, retention = _uncollared_body(body, creating=True)
        account = self._tenants.ensure(principal.account_id)
        pipe = self._store.create_uncollared_pipe(
            account_id=account.id,
            manifold=manifold,
            name=name,
            created_by=principal.name,
            retention=retention,
            now=self._now(),
        )
        ref = uncollared_ref(pipe)
        try:
            self._tenants.upsert_streams(account, [(ref, pipe.retention)])
        except PpzError:
            self._store.delete_uncollared_pipe(account_id=account.id, manifold=manifold, name=name)
            raise
        return pipe_reply(account, ref, pipe.retention)

    def list_uncollared(self, principal: Principal) -> Json:
        """``GET /api/v1/pipes``."""
        account = self._tenants.ensure(principal.account_id)
        return {
            "pipes": [
                _omit_empty(
                    {"manifold": p.manifold, "name": p.name, "created_by": p.created_by},
                    "manifold",
                    "created_by",
                )
                for p in self._store.uncollared_pipes(account.id)
            ]
        }

    def set_uncollared(self, principal: Principal, body: bytes) -> Json:
        """``PATCH /api/v1/pipes``, addressed by the body's manifold and name."""
        name, manifold, retention = _uncollared_body(body, creating=False)
        account = self._tenants.ensure(principal.account_id)
        pipe = self._store.set_uncollared_retention(
            account_id=account.id, manifold=manifold, name=name, retention=retention
        )
        if pipe is None:
            raise errors.uncollared_not_found(name, manifold)
        self._tenants.upsert_streams(account, [(uncollared_ref(pipe), pipe.retention)])
        return pipe_reply(account, uncollared_ref(pipe), pipe.retention)

    def delete_uncollared(self, principal: Principal, query: Mapping[str, Sequence[str]]) -> None:
        """``DELETE /api/v1/pipes?name=<n>[&manifold=<m>]``."""
        name = (query.get("name") or [""])[0]
        manifold = (query.get("manifold") or [""])[0]
        _check_pipe_name(name, creating=False)
        _check_manifold(manifold)
        account = self._tenants.ensure(principal.account_id)
        if not self._store.delete_uncollared_pipe(account_id=account.id, manifold=manifold, name=name):
            raise errors.uncollared_not_found(name, manifold)
        self._tenants.delete_streams(account, [PipeRef(manifold=manifold, handle="", name=name)])
