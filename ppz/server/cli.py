"""``ppz-server``: ``serve``, ``add-key`` (spec/server-api.md §6) and ``nats-config``
(a cluster node's nats-server configuration; docs/operations.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from ppz import names
from ppz.errors import EXIT_ERROR, EXIT_USAGE
from ppz.render import table
from ppz.server.apikeys import create_key, normalise_prefix
from ppz.server.app import DB_NAME, TRUST_NAME, serve
from ppz.server.natsbin import nats_server_bin
from ppz.server.natsconf import DEFAULT_CLUSTER_NAME, ClusterNode, render_node_config, route_url
from ppz.server.settings import (
    Settings,
    SettingsError,
    data_dir,
    parse_addr,
    parse_flag,
    prepare_data_dir,
    rfc3339,
)
from ppz.server.store import Store
from ppz.server.trust import load_or_create_trust


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppz-server", description="ppz reference server")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="run the HTTP API (and the nats-server child unless PPZ_NATS_EXTERNAL=1) until SIGTERM/SIGINT"
    )
    add_key = commands.add_parser("add-key", help="create an API key and print it on stdout")
    add_key.add_argument("--account", required=True, help="account name (created if missing)")
    add_key.add_argument("--user", default="admin", help="principal name (default: admin)")
    keys = commands.add_parser("keys", help="list or revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_list = key_commands.add_parser("list", help="list API keys: prefix, account, user, created, revoked")
    key_list.add_argument("--account", default="", help="only this account's keys")
    revoke = key_commands.add_parser(
        "revoke", help="revoke the API key with this prefix (the 8 characters after ppz_, or the key's start)"
    )
    revoke.add_argument("prefix", help="key prefix, e.g. 0a1b2c3d or ppz_0a1b2c3d")
    revoke.add_argument("--account", default="", help="only in this account (when a prefix is ambiguous)")
    conf = commands.add_parser(
        "nats-config",
        help="print the nats-server configuration of one JetStream cluster node trusting this server",
        description="Print the nats-server configuration of one node of a JetStream cluster for "
        "`ppz-server serve` with PPZ_NATS_EXTERNAL=1. It trusts the operator of "
        "$PPZ_SERVER_DATA/trust.json (minted now if missing). Run it once per node.",
    )
    conf.add_argument("--name", required=True, help="unique server_name of the node, e.g. n1")
    conf.add_argument(
        "--routes",
        required=True,
        action="append",
        help="cluster routes host:port, comma-separated or repeated; may include the node itself",
    )
    conf.add_argument("--store-dir", required=True, help="the node's JetStream and resolver directory")
    conf.add_argument("--listen", default="0.0.0.0:4222", help="client listen address (default 0.0.0.0:4222)")
    conf.add_argument(
        "--cluster-listen", default="0.0.0.0:6222", help="route listen address (default 0.0.0.0:6222)"
    )
    conf.add_argument("--cluster-name", default=DEFAULT_CLUSTER_NAME, help="cluster name (default ppz)")
    conf.add_argument("--monitor", default="", help="monitoring HTTP listen address host:port (default: off)")
    conf.add_argument("--output", "-o", default="", help="write to this file instead of stdout")
    return parser


def add_key(account: str, user: str) -> int:
    for label, value in (("account", account), ("user", user)):
        if not names.valid_name(value):
            print(
                f"ppz-server: invalid {label} name {value!r}: must match [a-z0-9-] (max 32)", file=sys.stderr
            )
            return EXIT_USAGE
    directory = data_dir()
    prepare_data_dir(directory)
    store = Store(directory / DB_NAME)
    try:
        now = rfc3339(time.time())
        row = store.ensure_account(account, now)
        key = create_key(store, account_id=row.id, principal=user, now=now)
    finally:
        store.close()
    print(key)
    return 0


def keys(args: argparse.Namespace) -> int:
    """``keys list`` and ``keys revoke PREFIX`` on the store (the running server sees a
    revocation at the key's next use)."""
    directory = data_dir()
    prepare_data_dir(directory)
    store = Store(directory / DB_NAME)
    try:
        account_id = ""
        if args.account:
            account = store.account_by_name(args.account)
            if account is None:
                print(f"ppz-server: no account {args.account!r}", file=sys.stderr)
                return EXIT_ERROR
            account_id = account.id
        if args.keys_command == "list":
            rows = [("PREFIX", "ACCOUNT", "USER", "CREATED", "REVOKED")]
            rows += [(k.prefix, k.account, k.principal, k.created_at, k.revoked_at or "-")
                     for k in store.key_infos(account_id=account_id)]
            for line in table(rows):
                print(line)
            return 0
        prefix = normalise_prefix(args.prefix)
        if prefix is None:
            print(f"ppz-server: invalid key prefix {args.prefix!r}: 8 hex characters", file=sys.stderr)
            return EXIT_USAGE
        active = [k for k in store.key_infos(account_id=account_id, prefix=prefix) if not k.revoked_at]
        if not active:
            print(f"ppz-server: no active key with prefix {prefix}", file=sys.stderr)
            return EXIT_ERROR
        if len(active) > 1:
            print(
                f"ppz-server: {len(active)} active keys have prefix {prefix} "
                f"(accounts {', '.join(sorted({k.account for k in active}))}); name one with --account",
                file=sys.stderr,
            )
            return EXIT_ERROR
        key = active[0]
        store.revoke_key(key.id, rfc3339(time.time()))
        print(f"revoked key {prefix} (account {key.account}, user {key.principal})")
        return 0
    finally:
        store.close()


def nats_config(args: argparse.Namespace) -> int:
    try:
        node = ClusterNode(
            name=args.name,
            listen=parse_addr(args.listen, "--listen"),
            cluster_listen=parse_addr(args.cluster_listen, "--cluster-listen"),
            routes=tuple(route_url(r) for arg in args.routes for r in arg.split(",") if r.strip()),
            store_dir=Path(os.path.expanduser(args.store_dir)).absolute(),
            cluster_name=args.cluster_name,
            monitor=parse_addr(args.monitor, "--monitor") if args.monitor else None,
        )
        node.check()
    except SettingsError as exc:
        print(f"ppz-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    directory = data_dir()
    prepare_data_dir(directory)
    text = render_node_config(node, load_or_create_trust(directory / TRUST_NAME, int(time.time())))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "add-key":
        return add_key(args.account, args.user)
    if args.command == "keys":
        return keys(args)
    if args.command == "nats-config":
        return nats_config(args)
    level = logging.getLevelName(os.environ.get("PPZ_SERVER_LOG_LEVEL", "INFO").upper())
    logging.basicConfig(
        stream=sys.stderr,
        level=level if isinstance(level, int) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env(nats_server_bin="" if _external() else nats_server_bin())
        problem = settings.deployment_error()
        if problem:
            raise SettingsError(problem)
    except (SettingsError, FileNotFoundError) as exc:
        print(f"ppz-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return serve(settings)


def _external() -> bool:
    """``PPZ_NATS_EXTERNAL`` is on (then no nats-server binary is needed); an invalid value is
    reported by ``Settings.from_env``."""
    try:
        return parse_flag(os.environ.get("PPZ_NATS_EXTERNAL", ""), "PPZ_NATS_EXTERNAL")
    except SettingsError:
        return False


if __name__ == "__main__":
    sys.exit(main())
