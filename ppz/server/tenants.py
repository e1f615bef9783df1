"""One NATS account per ppz account: lazy provisioning, claims pushes, the tenant's server-user
connection, and the streams behind its sources and pipes (spec/server-api.md §5.2–5.4)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ppz import errors, names
from ppz.errors import PpzError
from ppz.server import natsjwt, trust
from ppz.server.natsctl import NatsControl, NatsControlError
from ppz.server.store import Account, Pipe, Source, Store
from ppz.server.streams import PipeRef, Retention, stream_config
from ppz.server.trust import TenantAccount, Trust, UserCredential

logger = logging.getLogger(__name__)


def source_streams(
    source: Source, rows: Iterable[Pipe], kind: str | None = None
) -> list[tuple[PipeRef, Retention]]:
    """Every pipe of a source with its stored retention: the auto-pipes of ``kind`` (default:
    the source's) and the stored rows, sorted by name."""
    stored = {p.name: p.retention for p in rows}
    pipe_names = set(names.auto_pipes(kind or source.kind)) | set(stored)
    return [
        (PipeRef(manifold=source.manifold, handle=source.handle, name=n), stored.get(n, Retention()))
        for n in sorted(pipe_names)
    ]


def uncollared_ref(pipe: Pipe) -> PipeRef:
    return PipeRef(manifold=pipe.manifold, handle="", name=pipe.name)


class Tenants:
    """Provisions tenant accounts on first use and manages their streams."""

    def __init__(
        self,
        *,
        store: Store,
        trust: Trust,
        nats: NatsControl,
        replicas: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._trust = trust
        self._nats = nats
        self._replicas = replicas
        self._clock = clock
        self._lock = threading.Lock()
        self._account_locks: dict[str, threading.Lock] = {}
        self._ready: dict[str, Account] = {}

    def _now(self) -> int:
        return int(self._clock())

    # --- claims ----------------------------------------------------------------------------

    def _checked_tenant(self, account: Account) -> Account:
        """The account with a JWT signed by our operator. A stored JWT that fails the check
        (e.g. minted by an earlier operator) is re-issued for the same account and signing key,
        so credentials already handed out stay valid."""
        tenant = account.tenant
        assert tenant is not None
        try:
            trust.check_tenant_jwt(self._trust, tenant)
            return account
        except natsjwt.InvalidJwt as exc:
            logger.warning("account %s: stored NATS account JWT rejected (%s); re-issuing", account.name, exc)
        token = trust.account_jwt(
            self._trust,
            account_key=tenant.public_key,
            account_name=account.name,
            signing_key=natsjwt.public_key(tenant.signing_seed),
            now=self._now(),
        )
        fixed = TenantAccount(public_key=tenant.public_key, jwt=token, signing_seed=tenant.signing_seed)
        trust.check_tenant_jwt(self._trust, fixed)
        return self._store.set_account_nats(account.id, fixed, replace=True)

    def push_all(self) -> int:
        """Publish every stored tenant JWT (start-up). Returns how many were accepted."""
        pushed = 0
        for account in self._store.accounts():
            if account.tenant is None:
                continue
            try:
                account = self._checked_tenant(account)
                tenant = account.tenant
                assert tenant is not None
                self._nats.run(self._nats.push_account(tenant.public_key, tenant.jwt))
                pushed += 1
            except (NatsControlError, natsjwt.InvalidJwt, OSError) as exc:
                logger.error("cannot publish NATS account of %s: %s", account.name, exc)
        return pushed

    async def repush_all(self) -> None:
        """Re-publish every known tenant JWT (after the system connection reconnected, e.g. when
        the nats-server child was restarted)."""
        for account in await asyncio.to_thread(self._store.accounts):
            tenant = account.tenant
            if tenant is None:
                continue
            try:
                trust.check_tenant_jwt(self._trust, tenant)
                await self._nats.push_account(tenant.public_key, tenant.jwt)
            except Exception as exc:  # noqa: BLE001 - best effort; the resolver keeps them anyway
                logger.warning("re-publishing NATS account of %s failed: %s", account.name, exc)

    # --- provisioning ----------------------------------------------------------------------

    def ensure(self, account_id: str) -> Account:
        """The account, provisioned, published, connected and healed (§5.2), once per start."""
        ready = self._ready.get(account_id)
        if ready is not None:
            return ready
        with self._lock:
            lock = self._account_locks.setdefault(account_id, threading.Lock())
        with lock:
            ready = self._ready.get(account_id)
            if ready is not None:
                return ready
            try:
                account = self._provision(account_id)
            except (NatsControlError, natsjwt.InvalidJwt, OSError) as exc:
                logger.error("provisioning account %s failed: %s", account_id, exc)
                raise PpzError(errors.E_INTERNAL, f"account provisioning failed: {exc}") from exc
            self._ready[account_id] = account
            return account

    def _provision(self, account_id: str) -> Account:
        account = self._store.account(account_id)
        if account is None:
            raise PpzError(errors.E_INVALID_API_KEY, "invalid api key")
        if account.tenant is None:
            minted = trust.mint_tenant(self._trust, account.name, self._now())
            account = self._store.set_account_nats(account.id, minted)
            if account.nats_public_key == minted.public_key:
                logger.info("account %s: minted NATS account %s", account.name, minted.public_key)
        account = self._checked_tenant(account)
        tenant = account.tenant
        assert tenant is not None
        self._nats.run(self._nats.push_account(tenant.public_key, tenant.jwt))
        server_user = trust.mint_user(
            tenant, name=f"ppz-server-{account.name}", now=self._now(), ttl=trust.SERVER_USER_TTL
        )
        self._nats.run(
            self._nats.connect_tenant(
                account.id, f"ppz-server-{account.name}", server_user.jwt, server_user.seed
            )
        )
        self._nats.run(self._nats.probe(account.id))
        self._heal(account)
        return account

    def _heal(self, account: Account) -> None:
        """Create-or-update the stream of every stored source and pipe, so a lost JetStream
        store heals itself (§5.2 step 6). Failures are logged, not raised."""
        rows = self._store.collared_pipes(account.id)
        targets: list[tuple[PipeRef, Retention]] = []
        for source in self._store.sources(account.id):
            targets += source_streams(source, rows.get(source.id, []))
        targets += [(uncollared_ref(p), p.retention) for p in self._store.uncollared_pipes(account.id)]
        for ref, exc in self._upsert_each(account, targets, timeout=30.0):
            logger.warning(
                "account %s: healing stream %s failed: %s", account.name, ref.stream_name(account.id), exc
            )

    def mint_user(self, account: Account, ttl: int) -> UserCredential:
        """A user credential for the account (§3.1)."""
        tenant = account.tenant
        assert tenant is not None
        return trust.mint_user(tenant, name=f"ppz-user-{account.id}", now=self._now(), ttl=ttl)

    # --- streams ---------------------------------------------------------------------------

    def _config(self, account: Account, ref: PipeRef, retention: Retention) -> dict[str, object]:
        return stream_config(account.id, ref, retention, replicas=self._replicas)

    def _failures(
        self, refs: list[PipeRef], coros: list[Coroutine[Any, Any, Any]], timeout: float
    ) -> list[tuple[PipeRef, BaseException]]:
        """Run one NATS operation per pipe concurrently; the pipes whose operation failed."""
        try:
            results = self._nats.run(self._nats.gather(coros), timeout=timeout)
        except NatsControlError as exc:
            results = [exc] * len(refs)
        return [(ref, r) for ref, r in zip(refs, results, strict=True) if isinstance(r, BaseException)]

    def _upsert_each(
        self, account: Account, targets: list[tuple[PipeRef, Retention]], timeout: float = 10.0
    ) -> list[tuple[PipeRef, BaseException]]:
        coros = [self._nats.upsert_stream(account.id, self._config(account, r, t)) for r, t in targets]
        return self._failures([ref for ref, _ in targets], coros, timeout)

    def upsert_streams(self, account: Account, targets: list[tuple[PipeRef, Retention]]) -> None:
        """Create-or-update streams; raises E_INTERNAL naming the first failure."""
        for ref, exc in self._upsert_each(account, targets):
            name = ref.stream_name(account.id)
            logger.error("account %s: stream %s: %s", account.name, name, exc)
            raise PpzError(errors.E_INTERNAL, f"stream {name}: {exc}")

    def delete_streams(self, account: Account, refs: Iterable[PipeRef]) -> None:
        """Delete streams, best-effort: a missing stream is fine, failures are logged."""
        refs = list(refs)
        coros = [self._nats.delete_stream(account.id, r.stream_name(account.id)) for r in refs]
        for ref, exc in self._failures(refs, coros, timeout=10.0):
            logger.warning(
                "account %s: deleting stream %s failed: %s", account.name, ref.stream_name(account.id), exc
            )
