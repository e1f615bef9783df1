"""NATS nkeys and JWT v2 encoding (spec/server-api.md §3.1, §5). Pure functions, no I/O.

The PyPI ``nats-jwt`` package writes wrong JetStream limit keys, so the claims are built and
encoded here by hand. Seeds are ``S…`` strings; public keys are ``O…``/``A…``/``U…`` strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

PREFIX_OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
PREFIX_ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
PREFIX_USER = nkeys.PREFIX_BYTE_USER

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
NO_LIMIT = -1

Claims = dict[str, Any]


class InvalidJwt(ValueError):
    """A token that does not decode, or whose signature or issuer does not check out."""


# --- nkeys ---------------------------------------------------------------------------------


def new_seed(prefix: int) -> str:
    """A fresh random nkey seed for the role ``prefix`` (one of the ``PREFIX_*`` constants)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), prefix)
    return seed.decode()


def public_key(seed: str) -> str:
    """The encoded public key of a seed."""
    key: bytes = nkeys.from_seed(bytearray(seed.encode())).public_key
    return key.decode()


def sign(seed: str, data: bytes) -> bytes:
    """The raw ed25519 signature of ``data`` with ``seed``."""
    signature: bytes = nkeys.from_seed(bytearray(seed.encode())).sign(data)
    return signature


def decode_public_key(key: str) -> tuple[int, bytes]:
    """``(prefix byte, raw 32-byte ed25519 key)`` of an encoded public key; checks the CRC."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InvalidJwt(f"invalid public key {key!r}") from exc
    if len(raw) != 35:
        raise InvalidJwt(f"invalid public key {key!r}")
    body, crc = raw[:-2], raw[-2:]
    if nkeys.crc16_checksum(body) != crc:
        raise InvalidJwt(f"invalid public key checksum {key!r}")
    return body[0], body[1:]


def verify_signature(public: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``data`` was made by the key ``public``."""
    _, raw = decode_public_key(public)
    try:
        nacl.signing.VerifyKey(raw).verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


# --- JWT encoding --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidJwt("invalid base64url") from exc


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def claims_id(claims: Claims) -> str:
    """The ``jti``: base32 without padding of the SHA-256 of the claims with an empty ``jti``."""
    blank = {"jti": ""} | {k: v for k, v in claims.items() if k != "jti"}
    return base64.b32encode(hashlib.sha256(_compact(blank)).digest()).rstrip(b"=").decode()


def encode(claims: Claims, issuer_seed: str) -> str:
    """Sign ``claims`` (``jti`` is computed here) with the issuer's seed into a NATS JWT."""
    body = {"jti": ""} | {k: v for k, v in claims.items() if k != "jti"}
    body["jti"] = claims_id(body)
    signing_input = b64url(_compact(HEADER)) + "." + b64url(_compact(body))
    return signing_input + "." + b64url(sign(issuer_seed, signing_input.encode()))


def decode(token: str) -> Claims:
    """The claims of a token, without checking the signature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidJwt("a JWT has three parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:
        raise InvalidJwt("undecodable JWT") from exc
    if header != HEADER:
        raise InvalidJwt(f"unexpected JWT header {header!r}")
    if not isinstance(claims, dict):
        raise InvalidJwt("JWT claims are not an object")
    return claims


def verify(token: str, issuer: str) -> Claims:
    """The claims of ``token`` if it is issued and correctly signed by ``issuer``."""
    claims = decode(token)
    if claims.get("iss") != issuer:
        raise InvalidJwt(f"JWT issued by {claims.get('iss')!r}, not {issuer!r}")
    signing_input, _, signature = token.rpartition(".")
    if not verify_signature(issuer, signing_input.encode(), b64url_decode(signature)):
        raise InvalidJwt("JWT signature does not verify")
    return claims


# --- claims --------------------------------------------------------------------------------

ACCOUNT_LIMITS: dict[str, Any] = {
    "subs": NO_LIMIT,
    "data": NO_LIMIT,
    "payload": NO_LIMIT,
    "imports": NO_LIMIT,
    "exports": NO_LIMIT,
    "wildcards": True,
    "conn": NO_LIMIT,
    "leaf": NO_LIMIT,
}
JETSTREAM_LIMITS: dict[str, Any] = {
    "mem_storage": NO_LIMIT,
    "disk_storage": NO_LIMIT,
    "streams": NO_LIMIT,
    "consumer": NO_LIMIT,
}


def operator_claims(*, operator: str, system_account: str, name: str, iat: int) -> Claims:
    """Self-signed operator claims naming the system account."""
    return {
        "iat": iat,
        "iss": operator,
        "sub": operator,
        "name": name,
        "nats": {"system_account": system_account, "type": "operator", "version": 2},
    }


def account_claims(
    *,
    operator: str,
    account: str,
    name: str,
    iat: int,
    signing_keys: list[str] | None = None,
    jetstream: bool = True,
) -> Claims:
    """Account claims issued by the operator: no limits, JetStream unlimited when enabled."""
    limits = dict(ACCOUNT_LIMITS) | (JETSTREAM_LIMITS if jetstream else {})
    nats: dict[str, Any] = {"limits": limits}
    if signing_keys:
        nats["signing_keys"] = list(signing_keys)
    nats |= {"type": "account", "version": 2}
    return {"iat": iat, "iss": operator, "sub": account, "name": name, "nats": nats}


def user_claims(
    *,
    issuer: str,
    user: str,
    name: str,
    iat: int,
    nbf: int | None = None,
    exp: int | None = None,
    issuer_account: str | None = None,
    pub_allow: tuple[str, ...] = (">",),
    sub_allow: tuple[str, ...] = (">",),
) -> Claims:
    """User claims with ``pub >``/``sub >`` (or the subjects given) and no subs/data/payload
    limits.

    A missing limit means 0 to the NATS server, which closes the client on its first
    subscribe, so ``subs``, ``data`` and ``payload`` are always -1.
    """
    claims: Claims = {"iat": iat}
    if nbf is not None:
        claims["nbf"] = nbf
    if exp is not None:
        claims["exp"] = exp
    claims |= {"iss": issuer, "sub": user, "name": name}
    nats: dict[str, Any] = {
        "pub": {"allow": list(pub_allow)},
        "sub": {"allow": list(sub_allow)},
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
    }
    if issuer_account:
        nats["issuer_account"] = issuer_account
    nats |= {"type": "user", "version": 2}
    claims["nats"] = nats
    return claims


def creds_file(user_jwt: str, user_seed: str) -> str:
    """The text of a NATS ``.creds`` file (what ``nats.connect(user_credentials=…)`` reads)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n"
    )
