"""Reference-server configuration from the environment (spec/server-api.md §6)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ppz.durations import parse_duration

DEFAULT_HTTP_ADDR = "127.0.0.1:8080"
DEFAULT_NATS_ADDR = "127.0.0.1:4222"
DEFAULT_JWT_TTL = "5m"
DEFAULT_DATA_DIR = "~/.ppz-server"


class SettingsError(ValueError):
    """An environment variable has an unusable value."""


def parse_addr(text: str, variable: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → ``(host, port)``; an empty host means all
    interfaces. The returned host has no brackets."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise SettingsError(f"{variable}={text!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"{variable}={text!r}: invalid port") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{variable}={text!r}: port out of range")
    return host or "0.0.0.0", port


def connect_host(host: str) -> str:
    """The address to dial for a listener bound to ``host`` (wildcards → loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url_host(host: str) -> str:
    """``host`` as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    http_host: str
    http_port: int
    nats_host: str
    nats_port: int
    nats_public_url: str
    jwt_ttl: int
    data_dir: Path
    nats_server_bin: str
    stream_replicas: int

    @property
    def nats_connect_url(self) -> str:
        """Where the server itself dials its NATS child."""
        return f"nats://{url_host(connect_host(self.nats_host))}:{self.nats_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, nats_server_bin: str = "") -> Settings:
        env = os.environ if env is None else env
        http_host, http_port = parse_addr(env.get("PPZ_HTTP_ADDR") or DEFAULT_HTTP_ADDR, "PPZ_HTTP_ADDR")
        nats_host, nats_port = parse_addr(env.get("PPZ_NATS_ADDR") or DEFAULT_NATS_ADDR, "PPZ_NATS_ADDR")
        ttl_text = env.get("PPZ_NATS_JWT_TTL") or DEFAULT_JWT_TTL
        try:
            ttl = parse_duration(ttl_text)
        except ValueError:
            raise SettingsError(f"PPZ_NATS_JWT_TTL={ttl_text!r}: invalid duration") from None
        if not ttl > 0:
            raise SettingsError(f"PPZ_NATS_JWT_TTL={ttl_text!r}: must be positive")
        replicas_text = env.get("PPZ_STREAM_REPLICAS") or "1"
        try:
            replicas = int(replicas_text)
        except ValueError:
            raise SettingsError(f"PPZ_STREAM_REPLICAS={replicas_text!r}: not an integer") from None
        if replicas < 1:
            raise SettingsError(f"PPZ_STREAM_REPLICAS={replicas_text!r}: must be at least 1")
        return cls(
            http_host=http_host,
            http_port=http_port,
            nats_host=nats_host,
            nats_port=nats_port,
            nats_public_url=env.get("PPZ_NATS_PUBLIC_URL", ""),
            # JWT times are whole seconds; a sub-second TTL still lives one second.
            jwt_ttl=max(1, math.ceil(ttl)),
            data_dir=data_dir(env),
            nats_server_bin=nats_server_bin,
            stream_replicas=replicas,
        )


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``PPZ_SERVER_DATA`` or ``~/.ppz-server``."""
    env = os.environ if env is None else env
    return Path(os.path.expanduser(env.get("PPZ_SERVER_DATA") or DEFAULT_DATA_DIR)).absolute()


def prepare_data_dir(path: Path) -> None:
    """Create the data directory with mode 0700 (tightening an existing one)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def rfc3339(ts: float) -> str:
    """Whole-second RFC 3339 UTC with ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))
