"""API keys: format, argon2id hashing, verification with a short in-memory cache
(spec/server-api.md §2)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import argon2

from ppz.server.store import Store

KEY_PREFIX = "ppz_"
KEY_RE = re.compile(r"^ppz_[0-9a-f]{26}$")
CACHE_SECONDS = 60.0

HASHER = argon2.PasswordHasher(
    time_cost=1, memory_cost=65536, parallelism=4, hash_len=32, salt_len=16, type=argon2.Type.ID
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a verified key acts as: its account and user name."""

    account_id: str
    name: str
    key_id: int = field(default=0, compare=False)


def new_key() -> str:
    """``ppz_`` followed by 26 random lowercase hex characters."""
    return KEY_PREFIX + secrets.token_hex(13)


def key_prefix(key: str) -> str:
    """The 8 characters after ``ppz_`` (the lookup prefix)."""
    return key[len(KEY_PREFIX) : len(KEY_PREFIX) + 8]


def normalise_prefix(text: str) -> str | None:
    """A key prefix as an operator may type it (``0a1b2c3d``, ``ppz_0a1b2c3d``, or a longer start
    of the key) → the 8-character prefix; None when it is not one."""
    text = text.strip().lower()
    if text.startswith(KEY_PREFIX):
        text = text[len(KEY_PREFIX):]
    text = text[:8]
    return text if re.fullmatch(r"[0-9a-f]{8}", text) else None


def hash_key(key: str) -> str:
    """The argon2id PHC string of the whole key."""
    return HASHER.hash(key)


def create_key(store: Store, *, account_id: str, principal: str, now: str) -> str:
    """Create and store a key; returns the plaintext, which is never stored."""
    key = new_key()
    store.add_api_key(
        account_id=account_id, principal=principal, prefix=key_prefix(key), hash=hash_key(key), now=now
    )
    return key


class KeyVerifier:
    """Checks presented keys against the store. Successful checks are cached in memory for at
    most ``ttl`` seconds, keyed by the SHA-256 of the presented key, never by the key itself.
    A cache hit still asks the store whether the key was revoked meanwhile (an indexed lookup,
    not a hash), so a revoked key fails its very next use."""

    def __init__(
        self, store: Store, *, ttl: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    def verify(self, key: object) -> Principal | None:
        """The key's principal, or None for a malformed, unknown or revoked key."""
        if not isinstance(key, str) or not KEY_RE.fullmatch(key):
            return None
        digest = hashlib.sha256(key.encode()).digest()
        now = self._clock()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            if self._store.key_active(hit[0].key_id):
                return hit[0]
            with self._lock:
                self._cache.pop(digest, None)
            return None
        for row in self._store.keys_with_prefix(key_prefix(key)):
            try:
                HASHER.verify(row.hash, key)
            except argon2.exceptions.VerificationError:
                continue
            except argon2.exceptions.InvalidHashError:
                continue
            principal = Principal(account_id=row.account_id, name=row.principal, key_id=row.id)
            with self._lock:
                self._cache = {d: v for d, v in self._cache.items() if v[1] > now}
                self._cache[digest] = (principal, now + self._ttl)
            return principal
        return None
