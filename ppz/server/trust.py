"""The NATS trust chain: operator, system account, tenant accounts, user credentials
(spec/server-api.md §3.1, §5.1, §5.2)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ppz.home import atomic_write
from ppz.server import natsjwt

logger = logging.getLogger(__name__)

OPERATOR_NAME = "ppz-operator"
SYSTEM_ACCOUNT_NAME = "ppz-sys"
SYSTEM_USER_NAME = "ppz-sys-user"
SERVER_USER_TTL = 365 * 24 * 3600
NBF_BACKDATE = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class Trust:
    """Operator and system-account keys and JWTs, kept in ``trust.json``."""

    operator_seed: str
    operator_jwt: str
    system_account_seed: str
    system_account_jwt: str
    system_user_seed: str
    system_user_jwt: str

    @property
    def operator_key(self) -> str:
        return natsjwt.public_key(self.operator_seed)

    @property
    def system_account_key(self) -> str:
        return natsjwt.public_key(self.system_account_seed)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantAccount:
    """What the store keeps about a tenant's NATS account (§5.2 step 3)."""

    public_key: str
    jwt: str
    signing_seed: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserCredential:
    """A minted user credential; the seed is handed out and never kept."""

    jwt: str
    seed: str
    expires: int


def mint_trust(now: int) -> Trust:
    """A fresh operator, system account and system user."""
    operator_seed = natsjwt.new_seed(natsjwt.PREFIX_OPERATOR)
    operator = natsjwt.public_key(operator_seed)
    sys_seed = natsjwt.new_seed(natsjwt.PREFIX_ACCOUNT)
    sys_key = natsjwt.public_key(sys_seed)
    user_seed = natsjwt.new_seed(natsjwt.PREFIX_USER)
    operator_jwt = natsjwt.encode(
        natsjwt.operator_claims(operator=operator, system_account=sys_key, name=OPERATOR_NAME, iat=now),
        operator_seed,
    )
    sys_jwt = natsjwt.encode(
        natsjwt.account_claims(
            operator=operator, account=sys_key, name=SYSTEM_ACCOUNT_NAME, iat=now, jetstream=False
        ),
        operator_seed,
    )
    user_jwt = natsjwt.encode(
        natsjwt.user_claims(
            issuer=sys_key, user=natsjwt.public_key(user_seed), name=SYSTEM_USER_NAME, iat=now
        ),
        sys_seed,
    )
    return Trust(
        operator_seed=operator_seed,
        operator_jwt=operator_jwt,
        system_account_seed=sys_seed,
        system_account_jwt=sys_jwt,
        system_user_seed=user_seed,
        system_user_jwt=user_jwt,
    )


def load_or_create_trust(path: Path, now: int) -> Trust:
    """Reuse ``trust.json`` if it exists (re-minting would invalidate every credential),
    else mint and store it with mode 0600."""
    if path.exists():
        data = json.loads(path.read_text())
        trust = Trust(**{k: data[k] for k in Trust.__dataclass_fields__})
        natsjwt.verify(trust.system_account_jwt, trust.operator_key)
        return trust
    trust = mint_trust(now)
    atomic_write(path, json.dumps(asdict(trust), indent=2).encode(), unique=True)
    logger.info("minted a new NATS operator %s", trust.operator_key)
    return trust


def tenant_account_name(account_name: str) -> str:
    return f"ppz-tenant-{account_name}"


def account_jwt(trust: Trust, *, account_key: str, account_name: str, signing_key: str, now: int) -> str:
    """The tenant account JWT, issued by the operator (§5.2 step 2)."""
    claims = natsjwt.account_claims(
        operator=trust.operator_key,
        account=account_key,
        name=tenant_account_name(account_name),
        iat=now,
        signing_keys=[signing_key],
    )
    return natsjwt.encode(claims, trust.operator_seed)


def mint_tenant(trust: Trust, account_name: str, now: int) -> TenantAccount:
    """A new NATS account with a separate signing key (§5.2 steps 1–2)."""
    account_key = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_ACCOUNT))
    signing_seed = natsjwt.new_seed(natsjwt.PREFIX_ACCOUNT)
    token = account_jwt(
        trust,
        account_key=account_key,
        account_name=account_name,
        signing_key=natsjwt.public_key(signing_seed),
        now=now,
    )
    return TenantAccount(public_key=account_key, jwt=token, signing_seed=signing_seed)


def check_tenant_jwt(trust: Trust, tenant: TenantAccount) -> None:
    """Raise InvalidJwt unless the account JWT is signed by our operator, names the stored
    account key and trusts the stored signing key. The NATS server stores a JWT signed by any
    operator and only refuses it at its next start, so this is checked before every push."""
    claims = natsjwt.verify(tenant.jwt, trust.operator_key)
    if claims.get("sub") != tenant.public_key:
        raise natsjwt.InvalidJwt(f"account JWT names {claims.get('sub')!r}, not {tenant.public_key!r}")
    nats = claims.get("nats")
    signing = natsjwt.public_key(tenant.signing_seed)
    if not isinstance(nats, dict) or signing not in (nats.get("signing_keys") or []):
        raise natsjwt.InvalidJwt("account JWT does not list the stored signing key")


def mint_user(
    tenant: TenantAccount,
    *,
    name: str,
    now: int,
    ttl: int,
    backdate: int = NBF_BACKDATE,
    pub_allow: tuple[str, ...] = (">",),
    sub_allow: tuple[str, ...] = (">",),
) -> UserCredential:
    """A user credential signed by the account's signing key (§3.1); narrower permissions
    when ``pub_allow``/``sub_allow`` are given (the console's read-only user)."""
    seed = natsjwt.new_seed(natsjwt.PREFIX_USER)
    exp = now + ttl
    claims = natsjwt.user_claims(
        issuer=natsjwt.public_key(tenant.signing_seed),
        user=natsjwt.public_key(seed),
        name=name,
        iat=now,
        nbf=now - backdate,
        exp=exp,
        issuer_account=tenant.public_key,
        pub_allow=pub_allow,
        sub_allow=sub_allow,
    )
    return UserCredential(jwt=natsjwt.encode(claims, tenant.signing_seed), seed=seed, expires=exp)
