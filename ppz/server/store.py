"""The server's SQLite store: accounts, principals, API keys, sources and pipes.

Every method runs in its own transaction on a pooled connection, so HTTP threads and a
concurrent ``ppz-server add-key`` process can share the file (WAL, busy timeout). Writes that
check-then-insert (the collision rules of spec/server-api.md §4.3) run under ``BEGIN IMMEDIATE``
and the UNIQUE constraints back them up, so two concurrent creates never both succeed.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ppz import errors, names
from ppz.server.streams import Retention
from ppz.server.trust import TenantAccount

BUSY_TIMEOUT_MS = 10_000
POOL_SIZE = 16

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    nats_public_key TEXT,
    nats_jwt TEXT,
    nats_signing_seed TEXT
);
CREATE TABLE IF NOT EXISTS principals (
    id INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    principal_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix);
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    handle TEXT NOT NULL,
    manifold TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    UNIQUE (account_id, handle)
);
CREATE TABLE IF NOT EXISTS pipes (
    id INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    source_id TEXT REFERENCES sources(id) ON DELETE CASCADE,
    manifold TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    ttl_seconds INTEGER,
    max_msgs INTEGER,
    max_bytes INTEGER,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS pipes_collared ON pipes (source_id, name) WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS pipes_uncollared ON pipes (account_id, manifold, name)
    WHERE source_id IS NULL;
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: str
    name: str
    created_at: str
    nats_public_key: str | None = None
    nats_jwt: str | None = None
    nats_signing_seed: str | None = None

    @property
    def tenant(self) -> TenantAccount | None:
        """The stored NATS account, or None before provisioning."""
        if not (self.nats_public_key and self.nats_jwt and self.nats_signing_seed):
            return None
        return TenantAccount(
            public_key=self.nats_public_key, jwt=self.nats_jwt, signing_seed=self.nats_signing_seed
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRow:
    id: int
    account_id: str
    principal: str
    hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """An API key as operators see it (``ppz-server keys list``): never the key or its hash."""

    id: int
    account_id: str
    account: str
    principal: str
    prefix: str
    created_at: str
    revoked_at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    id: str
    account_id: str
    handle: str
    manifold: str
    kind: str
    created_by: str
    created_at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipe:
    """A stored pipe row: collared (``source_id`` set) or uncollared."""

    id: int
    account_id: str
    source_id: str | None
    manifold: str
    name: str
    created_by: str
    retention: Retention
    created_at: str


_PIPE_COLUMNS = (
    "id, account_id, source_id, manifold, name, created_by, ttl_seconds, max_msgs, max_bytes, created_at"
)
_SOURCE_COLUMNS = "id, account_id, handle, manifold, kind, created_by, created_at"


def _pipe(row: sqlite3.Row) -> Pipe:
    return Pipe(
        id=row["id"],
        account_id=row["account_id"],
        source_id=row["source_id"],
        manifold=row["manifold"],
        name=row["name"],
        created_by=row["created_by"],
        retention=Retention(
            ttl_seconds=row["ttl_seconds"], max_msgs=row["max_msgs"], max_bytes=row["max_bytes"]
        ),
        created_at=row["created_at"],
    )


def _source(row: sqlite3.Row) -> Source:
    return Source(**{k: row[k] for k in row.keys()})


def _account(row: sqlite3.Row) -> Account:
    return Account(**{k: row[k] for k in row.keys()})


class Store:
    """Thread-safe access to ``<data>/ppz-server.db``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        db = self._connect()
        db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        self._pool.put(db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def tx(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction on a pooled connection; ``write`` takes the write lock up front."""
        try:
            db = self._pool.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            if db.in_transaction:
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if self._pool.qsize() < POOL_SIZE:
                self._pool.put(db)
            else:
                db.close()

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    # --- accounts, principals, keys --------------------------------------------------------

    def ensure_account(self, name: str, now: str) -> Account:
        """The account called ``name``, created with a new UUID if it does not exist."""
        with self.tx(write=True) as db:
            db.execute(
                "INSERT OR IGNORE INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
                (str(uuid.uuid4()), name, now),
            )
            return _account(db.execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone())

    def account(self, account_id: str) -> Account | None:
        with self.tx() as db:
            row = db.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
        return _account(row) if row else None

    def account_by_name(self, name: str) -> Account | None:
        with self.tx() as db:
            row = db.execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone()
        return _account(row) if row else None

    def accounts(self) -> list[Account]:
        with self.tx() as db:
            return [_account(r) for r in db.execute("SELECT * FROM accounts ORDER BY name")]

    def set_account_nats(self, account_id: str, tenant: TenantAccount, *, replace: bool = False) -> Account:
        """Store the account's NATS account. Without ``replace`` an already stored one is kept
        (first writer wins); the stored account is returned either way."""
        guard = "" if replace else " AND nats_public_key IS NULL"
        with self.tx(write=True) as db:
            db.execute(
                "UPDATE accounts SET nats_public_key = ?, nats_jwt = ?, nats_signing_seed = ? "
                "WHERE id = ?" + guard,
                (tenant.public_key, tenant.jwt, tenant.signing_seed, account_id),
            )
            return _account(db.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone())

    def add_api_key(self, *, account_id: str, principal: str, prefix: str, hash: str, now: str) -> None:
        """Store a key (prefix and hash only), creating the principal if needed."""
        with self.tx(write=True) as db:
            db.execute(
                "INSERT OR IGNORE INTO principals (account_id, name, created_at) VALUES (?, ?, ?)",
                (account_id, principal, now),
            )
            (principal_id,) = db.execute(
                "SELECT id FROM principals WHERE account_id = ? AND name = ?", (account_id, principal)
            ).fetchone()
            db.execute(
                "INSERT INTO api_keys (account_id, principal_id, prefix, hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (account_id, principal_id, prefix, hash, now),
            )

    def keys_with_prefix(self, prefix: str) -> list[KeyRow]:
        """The non-revoked keys with this prefix."""
        with self.tx() as db:
            rows = db.execute(
                "SELECT k.id, k.account_id, p.name AS principal, k.hash FROM api_keys k "
                "JOIN principals p ON p.id = k.principal_id "
                "WHERE k.prefix = ? AND k.revoked_at IS NULL ORDER BY k.id",
                (prefix,),
            ).fetchall()
        return [
            KeyRow(id=r["id"], account_id=r["account_id"], principal=r["principal"], hash=r["hash"])
            for r in rows
        ]

    def key_active(self, key_id: int) -> bool:
        """True while the key exists and is not revoked."""
        with self.tx() as db:
            row = db.execute("SELECT revoked_at FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return row is not None and row["revoked_at"] is None

    _KEY_INFO = (
        "SELECT k.id, k.account_id, a.name AS account, p.name AS principal, k.prefix, k.created_at, "
        "COALESCE(k.revoked_at, '') AS revoked_at FROM api_keys k "
        "JOIN principals p ON p.id = k.principal_id JOIN accounts a ON a.id = k.account_id"
    )

    def key_infos(self, *, account_id: str = "", prefix: str = "") -> list[KeyInfo]:
        """The keys (of one account, with one prefix, when given), oldest first."""
        where, args = [], []
        for column, value in (("k.account_id", account_id), ("k.prefix", prefix)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = self._KEY_INFO + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.name, k.id"
        with self.tx() as db:
            return [KeyInfo(**dict(r)) for r in db.execute(sql, args).fetchall()]

    def revoke_key(self, key_id: int, now: str) -> bool:
        """Mark a key revoked; False when it was already revoked or does not exist."""
        with self.tx(write=True) as db:
            cur = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
            )
            return cur.rowcount > 0

    # --- sources ---------------------------------------------------------------------------

    def sources(self, account_id: str) -> list[Source]:
        with self.tx() as db:
            rows = db.execute(
                f"SELECT {_SOURCE_COLUMNS} FROM sources WHERE account_id = ? ORDER BY manifold, handle",
                (account_id,),
            ).fetchall()
        return [_source(r) for r in rows]

    def source(self, account_id: str, handle: str) -> Source | None:
        with self.tx() as db:
            row = db.execute(
                f"SELECT {_SOURCE_COLUMNS} FROM sources WHERE account_id = ? AND handle = ?",
                (account_id, handle),
            ).fetchone()
        return _source(row) if row else None

    def create_source(
        self, *, account_id: str, handle: str, manifold: str, kind: str, created_by: str, now: str
    ) -> Source:
        """Insert a source after the collision rules (§4.3 rule 1) and the handle check."""
        path = names.join_path(manifold, handle)
        source = Source(
            id=str(uuid.uuid4()),
            account_id=account_id,
            handle=handle,
            manifold=manifold,
            kind=kind,
            created_by=created_by,
            created_at=now,
        )
        with self.tx(write=True) as db:
            if db.execute(
                "SELECT 1 FROM pipes WHERE account_id = ? AND source_id IS NULL "
                "AND manifold = ? AND name = ?",
                (account_id, manifold, handle),
            ).fetchone():
                raise errors.name_taken_by_uncollared(handle, manifold)
            if db.execute(
                "SELECT 1 FROM pipes WHERE account_id = ? AND source_id IS NULL "
                "AND (manifold = ? OR substr(manifold, 1, ?) = ?)",
                (account_id, path, len(path) + 1, path + "."),
            ).fetchone():
                raise errors.manifold_used_by_uncollared(path)
            try:
                db.execute(
                    f"INSERT INTO sources ({_SOURCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (source.id, account_id, handle, manifold, kind, created_by, now),
                )
            except sqlite3.IntegrityError:
                raise errors.source_taken(handle) from None
        return source

    def delete_source(self, source_id: str) -> None:
        """Delete a source and (by cascade) its pipe rows."""
        with self.tx(write=True) as db:
            db.execute("DELETE FROM sources WHERE id = ?", (source_id,))

    def set_kind(self, source_id: str, kind: str) -> None:
        with self.tx(write=True) as db:
            db.execute("UPDATE sources SET kind = ? WHERE id = ?", (kind, source_id))

    # --- pipes -----------------------------------------------------------------------------

    def collared_pipes(self, account_id: str) -> dict[str, list[Pipe]]:
        """Every collared pipe row of the account by source id, each list sorted by name."""
        out: dict[str, list[Pipe]] = {}
        with self.tx() as db:
            rows = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE account_id = ? AND source_id IS NOT NULL "
                "ORDER BY name",
                (account_id,),
            ).fetchall()
        for row in rows:
            out.setdefault(row["source_id"], []).append(_pipe(row))
        return out

    def pipes_of(self, source_id: str) -> list[Pipe]:
        with self.tx() as db:
            rows = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE source_id = ? ORDER BY name", (source_id,)
            ).fetchall()
        return [_pipe(r) for r in rows]

    def collared_pipe(self, source_id: str, name: str) -> Pipe | None:
        with self.tx() as db:
            row = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE source_id = ? AND name = ?", (source_id, name)
            ).fetchone()
        return _pipe(row) if row else None

    def uncollared_pipes(self, account_id: str) -> list[Pipe]:
        with self.tx() as db:
            rows = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE account_id = ? AND source_id IS NULL "
                "ORDER BY manifold, name",
                (account_id,),
            ).fetchall()
        return [_pipe(r) for r in rows]

    def uncollared_pipe(self, account_id: str, manifold: str, name: str) -> Pipe | None:
        with self.tx() as db:
            row = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE account_id = ? AND source_id IS NULL "
                "AND manifold = ? AND name = ?",
                (account_id, manifold, name),
            ).fetchone()
        return _pipe(row) if row else None

    @staticmethod
    def _insert_pipe(
        db: sqlite3.Connection,
        *,
        account_id: str,
        source_id: str | None,
        manifold: str,
        name: str,
        created_by: str,
        retention: Retention,
        now: str,
    ) -> Pipe:
        cur = db.execute(
            "INSERT INTO pipes (account_id, source_id, manifold, name, created_by, ttl_seconds, max_msgs, "
            "max_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                account_id,
                source_id,
                manifold,
                name,
                created_by,
                retention.ttl_seconds,
                retention.max_msgs,
                retention.max_bytes,
                now,
            ),
        )
        assert cur.lastrowid is not None
        return Pipe(
            id=cur.lastrowid,
            account_id=account_id,
            source_id=source_id,
            manifold=manifold,
            name=name,
            created_by=created_by,
            retention=retention,
            created_at=now,
        )

    @classmethod
    def _insert_collared(
        cls,
        db: sqlite3.Connection,
        source: Source,
        *,
        name: str,
        created_by: str,
        retention: Retention,
        now: str,
    ) -> Pipe:
        return cls._insert_pipe(
            db,
            account_id=source.account_id,
            source_id=source.id,
            manifold=source.manifold,
            name=name,
            created_by=created_by,
            retention=retention,
            now=now,
        )

    @staticmethod
    def _require_source(db: sqlite3.Connection, source: Source) -> None:
        """E_SOURCE_NOT_FOUND when the source was deleted meanwhile."""
        if not db.execute("SELECT 1 FROM sources WHERE id = ?", (source.id,)).fetchone():
            raise errors.source_not_found(source.handle)

    def create_collared_pipe(
        self, source: Source, *, name: str, created_by: str, retention: Retention, now: str
    ) -> Pipe:
        """Insert a custom pipe row; a duplicate name → E_PIPE_TAKEN, a vanished source →
        E_SOURCE_NOT_FOUND."""
        with self.tx(write=True) as db:
            self._require_source(db, source)
            try:
                return self._insert_collared(
                    db, source, name=name, created_by=created_by, retention=retention, now=now
                )
            except sqlite3.IntegrityError:
                raise errors.pipe_taken(name, source.handle) from None

    def set_collared_retention(
        self, source: Source, *, name: str, retention: Retention, create: bool, created_by: str, now: str
    ) -> Pipe | None:
        """Merge ``retention`` into the pipe row. With no row: create one when ``create`` (an
        auto-pipe's first change), else return None."""
        with self.tx(write=True) as db:
            self._require_source(db, source)
            row = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE source_id = ? AND name = ?", (source.id, name)
            ).fetchone()
            if row is not None:
                return self._update_retention(db, _pipe(row), retention)
            if not create:
                return None
            return self._insert_collared(
                db, source, name=name, created_by=created_by, retention=retention, now=now
            )

    @staticmethod
    def _update_retention(db: sqlite3.Connection, pipe: Pipe, retention: Retention) -> Pipe:
        merged = retention.over(pipe.retention)
        db.execute(
            "UPDATE pipes SET ttl_seconds = ?, max_msgs = ?, max_bytes = ? WHERE id = ?",
            (merged.ttl_seconds, merged.max_msgs, merged.max_bytes, pipe.id),
        )
        return Pipe(**{**{f: getattr(pipe, f) for f in Pipe.__dataclass_fields__}, "retention": merged})

    def delete_collared_pipe(self, source_id: str, name: str) -> bool:
        with self.tx(write=True) as db:
            cur = db.execute("DELETE FROM pipes WHERE source_id = ? AND name = ?", (source_id, name))
            return cur.rowcount > 0

    def create_uncollared_pipe(
        self, *, account_id: str, manifold: str, name: str, created_by: str, retention: Retention, now: str
    ) -> Pipe:
        """Insert an uncollared pipe after the collision rules (§4.3 rule 2) and the duplicate
        check."""
        with self.tx(write=True) as db:
            if db.execute(
                "SELECT 1 FROM sources WHERE account_id = ? AND manifold = ? AND handle = ?",
                (account_id, manifold, name),
            ).fetchone():
                raise errors.name_taken_by_source(name, manifold)
            segments = manifold.split(".") if manifold else []
            for k in range(1, len(segments) + 1):
                parent = ".".join(segments[: k - 1])
                if db.execute(
                    "SELECT 1 FROM sources WHERE account_id = ? AND manifold = ? AND handle = ?",
                    (account_id, parent, segments[k - 1]),
                ).fetchone():
                    raise errors.manifold_reserved_by_source(".".join(segments[:k]), segments[k - 1], parent)
            try:
                return self._insert_pipe(
                    db,
                    account_id=account_id,
                    source_id=None,
                    manifold=manifold,
                    name=name,
                    created_by=created_by,
                    retention=retention,
                    now=now,
                )
            except sqlite3.IntegrityError:
                raise errors.uncollared_taken(name, manifold) from None

    def set_uncollared_retention(
        self, *, account_id: str, manifold: str, name: str, retention: Retention
    ) -> Pipe | None:
        with self.tx(write=True) as db:
            row = db.execute(
                f"SELECT {_PIPE_COLUMNS} FROM pipes WHERE account_id = ? AND source_id IS NULL "
                "AND manifold = ? AND name = ?",
                (account_id, manifold, name),
            ).fetchone()
            return self._update_retention(db, _pipe(row), retention) if row else None

    def delete_uncollared_pipe(self, *, account_id: str, manifold: str, name: str) -> bool:
        with self.tx(write=True) as db:
            cur = db.execute(
                "DELETE FROM pipes WHERE account_id = ? AND source_id IS NULL AND manifold = ? AND name = ?",
                (account_id, manifold, name),
            )
            return cur.rowcount > 0
