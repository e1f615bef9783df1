"""IdentityChanged broadcasts as StateActor sends them, for the listeners' reaction tests."""

from __future__ import annotations

import pytest

from ppz.home import Credentials
from ppz.messages import IdentityChanged
from ppz.serverclient import ExchangeReply

ACCT_A = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
ACCT_B = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


def creds_of(account_id: str) -> Credentials:
    return Credentials(url="http://127.0.0.1:8080", api_key="ppz_0123456789abcdef0123456789",
                       account_id=account_id)


def exchange_for(creds: Credentials, nats_url: str = "", expires_at: float = 0.0,
                 received_at: float = 0.0) -> ExchangeReply:
    return ExchangeReply(nats_user_jwt=creds.nats_user_jwt or "eyJ.login", nats_user_seed=creds.nats_user_seed or "SUA",
                         expires_at=expires_at, received_at=received_at, nats_url=nats_url,
                         account_id=creds.account_id, account_name=creds.account_name)


def login(creds: Credentials, nats_url: str = "") -> IdentityChanged:
    """The Login handler's broadcast (ipc.md §7.2)."""
    return IdentityChanged(caller="handleLogin", creds=creds, exchange=exchange_for(creds, nats_url))


LOGOUT = IdentityChanged(caller="handleLogout", creds=None, remove_cursors=True)
CREDS_GONE = IdentityChanged(caller="watchState-creds-gone", creds=None)


def creds_changed(creds: Credentials) -> IdentityChanged:
    return IdentityChanged(caller="watchState-creds-changed", creds=creds)


# Every broadcast that is not a login: the listener tears the old identity down.
NOT_A_LOGIN = pytest.mark.parametrize(
    "change", [LOGOUT, CREDS_GONE, creds_changed(creds_of(ACCT_B))], ids=["logout", "creds-gone", "creds-changed"],
)
