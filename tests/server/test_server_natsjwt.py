"""NATS nkeys and JWT v2 encoding (spec/server-api.md §3.1) and the trust chain minting (§5)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ppz.server import natsjwt, trust


def _b64(part: str) -> dict[str, object]:
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


@pytest.mark.parametrize(
    "prefix,seed_start,key_start",
    [
        (natsjwt.PREFIX_OPERATOR, "SO", "O"),
        (natsjwt.PREFIX_ACCOUNT, "SA", "A"),
        (natsjwt.PREFIX_USER, "SU", "U"),
    ],
)
def test_seed_and_public_key_encodings(prefix: int, seed_start: str, key_start: str) -> None:
    seed = natsjwt.new_seed(prefix)
    assert seed.startswith(seed_start) and len(seed) == 58
    key = natsjwt.public_key(seed)
    assert key.startswith(key_start) and len(key) == 56
    role, raw = natsjwt.decode_public_key(key)
    assert role == prefix and len(raw) == 32
    assert natsjwt.new_seed(prefix) != seed


def test_corrupted_public_key_fails_its_checksum() -> None:
    key = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_ACCOUNT))
    broken = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    with pytest.raises(natsjwt.InvalidJwt):
        natsjwt.decode_public_key(broken)
    with pytest.raises(natsjwt.InvalidJwt):
        natsjwt.decode_public_key("not a key")


def test_encode_header_parts_signature_and_jti() -> None:
    seed = natsjwt.new_seed(natsjwt.PREFIX_ACCOUNT)
    issuer = natsjwt.public_key(seed)
    claims = {
        "iat": 1777636200,
        "iss": issuer,
        "sub": "UXYZ",
        "name": "n",
        "nats": {"type": "user", "version": 2},
    }
    token = natsjwt.encode(claims, seed)
    header, body, signature = token.split(".")
    assert "=" not in token
    assert header == "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ"
    assert _b64(header) == {"typ": "JWT", "alg": "ed25519-nkey"}
    decoded = _b64(body)
    assert {k: v for k, v in decoded.items() if k != "jti"} == claims
    # jti = base32 without padding of SHA-256 over the claims serialised with an empty jti.
    blank = json.dumps({"jti": "", **claims}, separators=(",", ":")).encode()
    expected = base64.b32encode(hashlib.sha256(blank).digest()).decode().rstrip("=")
    assert decoded["jti"] == expected
    assert natsjwt.claims_id(decoded) == expected
    assert len(expected) == 52
    assert natsjwt.verify_signature(issuer, f"{header}.{body}".encode(), natsjwt.b64url_decode(signature))
    assert natsjwt.verify(token, issuer) == decoded
    assert natsjwt.decode(token) == decoded


def test_jti_depends_on_the_claims() -> None:
    seed = natsjwt.new_seed(natsjwt.PREFIX_ACCOUNT)
    a = natsjwt.decode(natsjwt.encode({"iat": 1, "sub": "x"}, seed))
    b = natsjwt.decode(natsjwt.encode({"iat": 2, "sub": "x"}, seed))
    assert a["jti"] != b["jti"]
    # A jti passed in is replaced by the computed one.
    c = natsjwt.decode(natsjwt.encode({"jti": "bogus", "iat": 1, "sub": "x"}, seed))
    assert c["jti"] == a["jti"]


def test_verify_rejects_wrong_issuer_and_tampering() -> None:
    seed = natsjwt.new_seed(natsjwt.PREFIX_OPERATOR)
    other = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_OPERATOR))
    token = natsjwt.encode({"iat": 1, "iss": natsjwt.public_key(seed), "sub": "A"}, seed)
    with pytest.raises(natsjwt.InvalidJwt):
        natsjwt.verify(token, other)
    header, body, signature = token.split(".")
    forged = natsjwt.b64url(json.dumps({**_b64(body), "sub": "B"}).encode())
    with pytest.raises(natsjwt.InvalidJwt):
        natsjwt.verify(f"{header}.{forged}.{signature}", natsjwt.public_key(seed))
    # Signed by a key that merely claims to be the issuer.
    impostor = natsjwt.new_seed(natsjwt.PREFIX_OPERATOR)
    claimed = natsjwt.encode({"iat": 1, "iss": natsjwt.public_key(seed), "sub": "A"}, impostor)
    with pytest.raises(natsjwt.InvalidJwt):
        natsjwt.verify(claimed, natsjwt.public_key(seed))
    for junk in ("", "a.b", "a.b.c", token + ".x"):
        with pytest.raises(natsjwt.InvalidJwt):
            natsjwt.verify(junk, natsjwt.public_key(seed))


def test_account_claims_limits() -> None:
    claims = natsjwt.account_claims(
        operator="OP", account="AC", name="ppz-tenant-x", iat=5, signing_keys=["AS"]
    )
    assert claims == {
        "iat": 5,
        "iss": "OP",
        "sub": "AC",
        "name": "ppz-tenant-x",
        "nats": {
            "limits": {
                "subs": -1,
                "data": -1,
                "payload": -1,
                "imports": -1,
                "exports": -1,
                "wildcards": True,
                "conn": -1,
                "leaf": -1,
                "mem_storage": -1,
                "disk_storage": -1,
                "streams": -1,
                "consumer": -1,
            },
            "signing_keys": ["AS"],
            "type": "account",
            "version": 2,
        },
    }


def test_user_claims_always_carry_unlimited_subs_data_payload() -> None:
    claims = natsjwt.user_claims(issuer="AS", user="U", name="u", iat=10, nbf=0, exp=20, issuer_account="AC")
    assert claims["nats"] == {
        "pub": {"allow": [">"]},
        "sub": {"allow": [">"]},
        "subs": -1,
        "data": -1,
        "payload": -1,
        "issuer_account": "AC",
        "type": "user",
        "version": 2,
    }
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (10, 0, 20)


def test_mint_trust_chain() -> None:
    t = trust.mint_trust(1000)
    op = natsjwt.verify(t.operator_jwt, t.operator_key)
    assert op["sub"] == t.operator_key and op["name"] == "ppz-operator"
    assert op["nats"] == {"system_account": t.system_account_key, "type": "operator", "version": 2}
    sys_account = natsjwt.verify(t.system_account_jwt, t.operator_key)
    assert sys_account["name"] == "ppz-sys" and sys_account["sub"] == t.system_account_key
    assert "mem_storage" not in sys_account["nats"]["limits"]
    sys_user = natsjwt.verify(t.system_user_jwt, t.system_account_key)
    assert sys_user["sub"] == natsjwt.public_key(t.system_user_seed)
    assert "exp" not in sys_user


def test_tenant_and_user_minting() -> None:
    t = trust.mint_trust(1000)
    tenant = trust.mint_tenant(t, "acme", 1000)
    trust.check_tenant_jwt(t, tenant)
    account = natsjwt.verify(tenant.jwt, t.operator_key)
    signing_key = natsjwt.public_key(tenant.signing_seed)
    assert account["sub"] == tenant.public_key != signing_key
    assert account["name"] == "ppz-tenant-acme"
    assert account["nats"]["signing_keys"] == [signing_key]

    cred = trust.mint_user(tenant, name="ppz-user-x", now=2000, ttl=300)
    claims = natsjwt.verify(cred.jwt, signing_key)
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (2000, 1970, 2300)
    assert cred.expires == 2300
    assert claims["sub"] == natsjwt.public_key(cred.seed)
    assert claims["nats"]["issuer_account"] == tenant.public_key
    assert claims["name"] == "ppz-user-x"


def test_check_tenant_jwt_refuses_foreign_or_mismatched_jwts() -> None:
    ours, theirs = trust.mint_trust(1), trust.mint_trust(1)
    tenant = trust.mint_tenant(ours, "acme", 1)
    with pytest.raises(natsjwt.InvalidJwt):
        trust.check_tenant_jwt(theirs, tenant)
    other = trust.mint_tenant(ours, "other", 1)
    with pytest.raises(natsjwt.InvalidJwt):
        trust.check_tenant_jwt(
            ours,
            trust.TenantAccount(
                public_key=other.public_key, jwt=tenant.jwt, signing_seed=tenant.signing_seed
            ),
        )
    with pytest.raises(natsjwt.InvalidJwt):
        trust.check_tenant_jwt(
            ours,
            trust.TenantAccount(
                public_key=tenant.public_key, jwt=tenant.jwt, signing_seed=other.signing_seed
            ),
        )


def test_trust_file_is_created_once_and_reused(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "trust.json"
    first = trust.load_or_create_trust(path, 100)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = trust.load_or_create_trust(path, 200)
    assert again == first
