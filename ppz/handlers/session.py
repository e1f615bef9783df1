"""Status, Login and Logout (spec/ipc.md §7.1–7.3)."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from typing import Any

import pykka

from ppz import errors
from ppz.eventlog import state_since
from ppz.home import Credentials
from ppz.system import System, list_sources
from ppz.timestamps import format_rfc3339

logger = logging.getLogger(__name__)


# --- Status (ipc.md §7.1) -----------------------------------------------------------------------


def status(system: System, p: dict[str, Any]) -> dict[str, Any]:
    view = system.state_box.value
    creds = view.creds
    reply: dict[str, Any] = {
        "daemon_pid": system.pid,
        "daemon_version": system.version,
        "logged_in": creds is not None,
        "current_path": os.path.abspath(system.home.current_json),
    }
    if creds is not None:
        for key in ("url", "account_id", "account_name"):
            if getattr(creds, key):
                reply[key] = getattr(creds, key)
        reply["key_prefix"] = creds.key_prefix
        login_check = view.login_check
        if not login_check:
            login_check = login_probe_outcome(system, creds, LOGIN_PROBE_HOLD)
        if login_check:
            reply["login_check"] = login_check
        refreshed = system.refresh_box.value.last_refresh_at
        if refreshed:
            reply["last_token_refresh_at"] = format_rfc3339(refreshed)
    session = system.state.session(p["session"]).get()  # set or not, logged in or not
    if session.current:
        reply["current"] = session.current
    if session.namespace:
        reply["current_namespace"] = session.namespace
    nats_state = system.nats_box.value.state()
    if nats_state:
        reply["nats_state"] = nats_state
        since = state_since(system.nats.events().get(), nats_state)
        if since is not None:
            reply["nats_state_since"] = since.at
            reply["nats_state_entry"] = since.type
    return reply


def probe_login(system: System, creds: Credentials) -> str:
    """Status's login probe: ``ok``, ``invalid``, or "" when the server could not say."""
    try:
        list_sources(system, creds)
    except errors.PpzError as exc:
        return "invalid" if exc.code == errors.E_INVALID_API_KEY else ""
    return "ok"


LOGIN_PROBE_HOLD = 1.0


def login_probe_outcome(system: System, creds: Credentials, hold: float) -> str:
    """Status's login-check probe: its outcome if it comes within ``hold`` seconds, else ""
    (unverified).

    ``Status`` holds its reply for a probe at most ``LOGIN_PROBE_HOLD`` (the CLI's ensure-running
    probe gives ``Status`` 2 s: a slow server must not make it start a second daemon). One probe
    is in flight per daemon, owned by the state actor (``claim_login_probe``), each on a thread of
    its own; a slower probe finishes in the background, and the server client reports its
    outcome to the state actor, so the next ``Status`` sees it.
    """
    flight, runner = system.state.claim_login_probe().get()
    if runner:
        threading.Thread(target=_run_login_probe, args=(system, creds, flight), name="ppz-login-probe",
                         daemon=True).start()
    try:
        return flight.result(timeout=hold)
    except TimeoutError:
        return ""


def _run_login_probe(system: System, creds: Credentials, flight: Future[str]) -> None:
    try:
        outcome = probe_login(system, creds)
    except Exception:  # noqa: BLE001 - an unexpected failure leaves the check unverified
        logger.exception("login check probe failed")
        outcome = ""
    try:
        system.state.finish_login_probe(flight, outcome)
    except pykka.ActorDeadError:  # the daemon is stopping
        flight.set_result(outcome)


# --- Login / Logout (ipc.md §7.2, §7.3) ----------------------------------------------------------


def key_prefix(api_key: str) -> str:
    return Credentials(url="", api_key=api_key).key_prefix


def login(system: System, p: dict[str, Any]) -> dict[str, Any]:
    url, api_key = p["url"], p["api_key"]
    reply = system.server.exchange(url, api_key, p["account_id"])  # any failure: nothing touched
    creds = Credentials(
        url=url,
        api_key=api_key,
        account_id=reply.account_id,
        account_name=reply.account_name,
        nats_user_jwt=reply.nats_user_jwt,
        nats_user_seed=reply.nats_user_seed,
    )
    # Steps 2–5 and 7: the state actor installs the login and broadcasts IdentityChanged; the
    # refresh loop starts with the reply, the connection owner adopts its NATS URL, the
    # heartbeat cache keeps only the new account's rows and beats.
    system.state.install_login(creds, reply).get().wait()
    try:
        system.nats.rebuild("handleLogin").get()
    except errors.PpzError as exc:
        logger.warning("login: NATS dial failed (%s); connecting in the background", exc.message)
        system.nats.swap_to_nothing("handleLogin").get()
        system.kick_connect()
    return {"url": url, "key_prefix": creds.key_prefix, "account_id": reply.account_id}


def logout(system: System, p: dict[str, Any]) -> dict[str, Any]:
    # The state actor deletes the credential files and broadcasts IdentityChanged: the refresh
    # loop stops, the connection owner forgets its URL and swaps to nothing (follows close),
    # the heartbeat cache clears and the cursor owner deletes cursors/.
    problems = system.state.logout().get().wait()
    if problems:
        raise errors.PpzError(errors.E_INTERNAL, "; ".join(problems))
    return {}
