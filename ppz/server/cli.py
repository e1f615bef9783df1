"""``ppz-server``: ``serve`` and ``add-key`` (spec/server-api.md §6)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from ppz import names
from ppz.errors import EXIT_USAGE
from ppz.server.apikeys import create_key
from ppz.server.app import DB_NAME, serve
from ppz.server.natsbin import nats_server_bin
from ppz.server.settings import Settings, SettingsError, data_dir, prepare_data_dir, rfc3339
from ppz.server.store import Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppz-server", description="ppz reference server")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API and the NATS server until SIGTERM/SIGINT")
    add_key = commands.add_parser("add-key", help="create an API key and print it on stdout")
    add_key.add_argument("--account", required=True, help="account name (created if missing)")
    add_key.add_argument("--user", default="admin", help="principal name (default: admin)")
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "add-key":
        return add_key(args.account, args.user)
    level = logging.getLevelName(os.environ.get("PPZ_SERVER_LOG_LEVEL", "INFO").upper())
    logging.basicConfig(
        stream=sys.stderr,
        level=level if isinstance(level, int) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env(nats_server_bin=nats_server_bin())
    except (SettingsError, FileNotFoundError) as exc:
        print(f"ppz-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
