"""Reference-server configuration from the environment (spec/server-api.md §6).

| Variable | Default | Meaning |
|---|---|---|
| ``PPZ_HTTP_ADDR`` | ``127.0.0.1:8080`` | HTTP listen address |
| ``PPZ_NATS_ADDR`` | ``127.0.0.1:4222`` | the NATS child's listen address |
| ``PPZ_NATS_PUBLIC_URL`` | unset | exchange reply's ``nats_url``, verbatim (a cluster: comma-separated URLs) |
| ``PPZ_NATS_JWT_TTL`` | ``5m`` | user JWT lifetime |
| ``PPZ_SERVER_DATA`` | ``~/.ppz-server`` | data directory |
| ``PPZ_NATS_SERVER_BIN`` | found | the NATS child's binary |
| ``PPZ_NATS_EXTERNAL`` | ``0`` | ``1``: start no child; use the NATS server or cluster at ``PPZ_NATS_URLS`` |
| ``PPZ_NATS_URLS`` | see below | with ``PPZ_NATS_EXTERNAL=1``: the comma-separated URLs ``ppz-server`` dials |
| ``PPZ_STREAM_REPLICAS`` | ``1`` | JetStream replicas of every stream (more than 1 needs a cluster) |

``PPZ_NATS_URLS`` defaults to ``PPZ_NATS_PUBLIC_URL``, else to ``nats://`` + ``PPZ_NATS_ADDR``.
With an external NATS and no ``PPZ_NATS_PUBLIC_URL``, clients get ``PPZ_NATS_URLS``.
See docs/operations.md.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ppz.durations import parse_duration

DEFAULT_HTTP_ADDR = "127.0.0.1:8080"
DEFAULT_NATS_ADDR = "127.0.0.1:4222"
DEFAULT_JWT_TTL = "5m"
DEFAULT_DATA_DIR = "~/.ppz-server"
DEFAULT_NATS_PORT = 4222
NATS_URL_SCHEMES = ("nats", "tls")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


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


def parse_url(text: str, variable: str, *, schemes: tuple[str, ...], default_port: int) -> str:
    """One server URL, normalised to ``scheme://host:port``: a missing scheme is the first of
    ``schemes``, a missing port ``default_port``. A host is required; user info is refused
    (operator mode authenticates with JWTs)."""
    text = text.strip()
    if "://" not in text:
        text = f"{schemes[0]}://{text}"
    try:
        parts = urlsplit(text)
        port = default_port if parts.port is None else parts.port
    except ValueError:
        raise SettingsError(f"{variable}: invalid URL {text!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{variable}: {text!r}: port out of range")
    if parts.scheme not in schemes:
        raise SettingsError(f"{variable}: {text!r}: the scheme must be one of {', '.join(schemes)}")
    if not parts.hostname or parts.username or parts.password or parts.path.strip("/"):
        raise SettingsError(f"{variable}: {text!r}: expected {schemes[0]}://host:port")
    return f"{parts.scheme}://{url_host(parts.hostname)}:{port}"


def parse_url_list(text: str, variable: str, *, schemes: tuple[str, ...], default_port: int) -> tuple[str, ...]:
    """Comma-separated URLs (see :func:`parse_url`), duplicates dropped, order kept."""
    urls = [parse_url(u, variable, schemes=schemes, default_port=default_port) for u in text.split(",") if u.strip()]
    if not urls:
        raise SettingsError(f"{variable}: no URL given")
    return tuple(dict.fromkeys(urls))


def parse_flag(text: str, variable: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{variable}={text!r}: expected 1 or 0")


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
    nats_external: bool = False
    nats_urls: tuple[str, ...] = ()

    @property
    def nats_connect_url(self) -> str:
        """Where the server itself dials its NATS child."""
        return f"nats://{url_host(connect_host(self.nats_host))}:{self.nats_port}"

    @property
    def nats_dial_urls(self) -> list[str]:
        """Every URL the server's own NATS connections may use: the external servers, else the
        child."""
        return list(self.nats_urls) if self.nats_external else [self.nats_connect_url]

    @property
    def advertised_nats_url(self) -> str:
        """``PPZ_NATS_PUBLIC_URL``; with an external NATS and none set, ``PPZ_NATS_URLS``
        (comma-separated); else empty (the exchange derives it from the ``Host`` header)."""
        if self.nats_public_url or not self.nats_external:
            return self.nats_public_url
        return ",".join(self.nats_urls)

    def deployment_error(self) -> str:
        """Why this configuration cannot run, or ``""``. ``ppz-server serve`` checks it before
        it starts anything (exit 2); :meth:`from_env` only parses."""
        if self.stream_replicas > 1 and not self.nats_external:
            return (
                f"PPZ_STREAM_REPLICAS={self.stream_replicas} needs a JetStream cluster: "
                "set PPZ_NATS_EXTERNAL=1 and PPZ_NATS_URLS (see docs/operations.md)"
            )
        return ""

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
        external = parse_flag(env.get("PPZ_NATS_EXTERNAL", ""), "PPZ_NATS_EXTERNAL")
        public_url = env.get("PPZ_NATS_PUBLIC_URL", "")
        urls: tuple[str, ...] = ()
        if env.get("PPZ_NATS_URLS") and not external:
            raise SettingsError("PPZ_NATS_URLS is used only with PPZ_NATS_EXTERNAL=1")
        if external:
            urls_text = (
                env.get("PPZ_NATS_URLS")
                or public_url
                or f"nats://{url_host(connect_host(nats_host))}:{nats_port}"
            )
            urls = parse_url_list(urls_text, "PPZ_NATS_URLS", schemes=NATS_URL_SCHEMES, default_port=DEFAULT_NATS_PORT)
        return cls(
            http_host=http_host,
            http_port=http_port,
            nats_host=nats_host,
            nats_port=nats_port,
            nats_public_url=public_url,
            # JWT times are whole seconds; a sub-second TTL still lives one second.
            jwt_ttl=max(1, math.ceil(ttl)),
            data_dir=data_dir(env),
            nats_server_bin=nats_server_bin,
            stream_replicas=replicas,
            nats_external=external,
            nats_urls=urls,
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
