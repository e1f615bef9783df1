"""``ppz-server serve``: start-up, serving and shutdown of the reference server
(spec/server-api.md §5.3, §6).

Two ways to run NATS: a ``nats-server`` child on ``PPZ_NATS_ADDR`` (the default), or, with
``PPZ_NATS_EXTERNAL=1``, an external server or JetStream cluster at ``PPZ_NATS_URLS`` whose nodes
trust our operator (``ppz-server nats-config``; docs/operations.md). Either way the server pushes
account JWTs through the system account and manages streams as each tenant's server user.
"""

from __future__ import annotations

import importlib.metadata
import logging
import signal
import time
from types import FrameType

from starlette.middleware import Middleware

import ppz
from ppz.server import httpapi
from ppz.server.apikeys import KeyVerifier
from ppz.server.console.feed import ConsoleFeed
from ppz.server.console.views import Console, SecurityHeaders
from ppz.server.natsctl import NatsControl, NatsControlError
from ppz.server.natsproc import NatsServerProcess
from ppz.server.service import ControlPlane
from ppz.server.settings import Settings, connect_host, prepare_data_dir
from ppz.server.store import Store
from ppz.server.tenants import Tenants
from ppz.server.trust import load_or_create_trust
from ppz.server.web import WebServer, bind, build_app

logger = logging.getLogger(__name__)

DB_NAME = "ppz-server.db"
TRUST_NAME = "trust.json"
# With an external NATS: how long start-up waits for a server to accept the system user, and
# then for JetStream (in a cluster: a meta leader) before serving HTTP anyway.
EXTERNAL_CONNECT_SECONDS = 30.0
EXTERNAL_JETSTREAM_SECONDS = 30.0


def server_version() -> str:
    version = getattr(ppz, "__version__", None)
    if isinstance(version, str) and version:
        return version
    try:
        return importlib.metadata.version("ppz")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class Shutdown(Exception):
    """Raised in the main thread by SIGTERM/SIGINT, so start-up or serving unwinds through
    the ``finally`` that stops the NATS child."""


def _install_signal_handlers() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        # Only the first signal unwinds; a second one must not interrupt the cleanup.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    store: Store | None = None
    child: NatsServerProcess | None = None
    control: NatsControl | None = None
    http: WebServer | None = None
    feed: ConsoleFeed | None = None
    try:
        _install_signal_handlers()
        prepare_data_dir(settings.data_dir)
        store = Store(settings.data_dir / DB_NAME)
        trust = load_or_create_trust(settings.data_dir / TRUST_NAME, int(time.time()))
        if not settings.nats_external:
            child = NatsServerProcess(
                binary=settings.nats_server_bin,
                data_dir=settings.data_dir,
                host=settings.nats_host,
                port=settings.nats_port,
                trust=trust,
            )
            child.start()
        control = NatsControl(settings.nats_dial_urls)
        control.start()
        if settings.nats_external:
            _connect_external(control, settings, trust.system_user_jwt, trust.system_user_seed)
        else:
            control.run(control.connect_system(trust.system_user_jwt, trust.system_user_seed))
        tenants = Tenants(store=store, trust=trust, nats=control, replicas=settings.stream_replicas)
        control.on_system_reconnected = tenants.repush_all
        pushed = tenants.push_all()
        logger.info("published %d tenant account(s)", pushed)
        verifier = KeyVerifier(store)
        plane = ControlPlane(
            store=store,
            tenants=tenants,
            verifier=verifier,
            jwt_ttl=settings.jwt_ttl,
            nats_public_url=settings.advertised_nats_url,
            nats_port=settings.nats_port,
            default_nats_host=connect_host(settings.nats_host),
        )
        feed = ConsoleFeed(nats=control, tenants=tenants, store=store)
        console = Console(store=store, verifier=verifier, feed=feed, version=server_version())
        sock = bind(settings.http_host, settings.http_port)
        http = WebServer(
            build_app(httpapi.routes(plane, server_version()) + console.routes(), [Middleware(SecurityHeaders)]),
            sock,
        )
        http.start(control.submit)
        logger.info(
            "ppz-server %s serving HTTP on %s:%d, NATS %s (data %s)",
            server_version(),
            settings.http_host,
            http.port,
            ("external at " + ",".join(settings.nats_urls))
            if settings.nats_external
            else f"on {settings.nats_host}:{settings.nats_port}",
            settings.data_dir,
        )
        while True:
            time.sleep(3600)
    except Shutdown as exc:
        logger.info("%s received; shutting down", exc)
        return 0
    except Exception as exc:  # noqa: BLE001 - start-up failure: report, clean up, exit 1
        logger.error("ppz-server failed: %s", exc, exc_info=logger.isEnabledFor(logging.DEBUG))
        return 1
    finally:
        if feed is not None:
            feed.closing = True  # live streams end, so the HTTP server stops without waiting for them
        _shutdown(http, control, child, store)


def _connect_external(control: NatsControl, settings: Settings, user_jwt: str, seed: str) -> None:
    """Connect the system user to the external NATS and wait for JetStream. An authorization
    failure almost always means the servers were configured for another operator."""
    logger.info("connecting to the external NATS at %s", ",".join(settings.nats_urls))
    try:
        control.run(
            control.connect_system(user_jwt, seed, timeout=EXTERNAL_CONNECT_SECONDS),
            timeout=EXTERNAL_CONNECT_SECONDS + 5.0,
        )
    except NatsControlError as exc:
        if "authorization" in str(exc).lower():
            raise NatsControlError(
                f"{exc} (do the NATS servers trust this server's operator? Generate their "
                f"configuration with `ppz-server nats-config` from {settings.data_dir / TRUST_NAME})"
            ) from exc
        raise
    ready, why, size = control.run(
        control.wait_jetstream(EXTERNAL_JETSTREAM_SECONDS), timeout=EXTERNAL_JETSTREAM_SECONDS + 10.0
    )
    if not ready:
        logger.warning("serving before JetStream is ready: %s", why)
    elif size < settings.stream_replicas:
        logger.warning(
            "PPZ_STREAM_REPLICAS=%d, but the JetStream cluster has %d server(s): creating streams will fail",
            settings.stream_replicas,
            size,
        )
    else:
        logger.info("JetStream ready (%d server(s) in the meta group)", size)


def _shutdown(
    http: WebServer | None, control: NatsControl | None, child: NatsServerProcess | None, store: Store | None
) -> None:
    for step in (
        http.stop if http else None,
        control.close if control else None,
        child.stop if child else None,
        store.close if store else None,
    ):
        if step is None:
            continue
        try:
            step()
        except Exception:  # noqa: BLE001 - keep stopping the rest, above all the child
            logger.exception("shutdown step failed")
